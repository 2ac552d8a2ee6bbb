"""Wide chapter tables are shown as blocks of columns that fit the page (issue 20)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from kpe_lib.book.context import TABLE_WIDTH_PX, _width_px, table_html


def test_wide_table_is_split_into_blocks_that_fit_and_keep_every_column_in_order():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(4, 23)), columns=[f"fmem_ci_lo_pct_{i}" for i in range(23)],
                      index=[f"balanced | constant budget {i}" for i in range(4)])
    html = table_html(df)
    tables = re.findall(r"<table.*?</table>", html, re.S)
    assert len(tables) > 1
    seen = [c for t in tables for c in re.findall(r"<th>(fmem_ci_lo_pct_\d+)</th>", t)]
    assert seen == list(df.columns)  # all columns, once each, in order
    index_w = _width_px([str(i) for i in df.index])
    for t in tables:
        cols = re.findall(r"<th>(fmem_ci_lo_pct_\d+)</th>", t)
        widths = [_width_px([*c.split(), *df[[c]].to_string(index=False, header=False).splitlines()]) for c in cols]
        assert len(cols) == 1 or index_w + sum(widths) <= TABLE_WIDTH_PX
        assert "balanced | constant budget 3" in t  # the index is repeated in every block


def test_narrow_table_is_pandas_own_html():
    df = pd.DataFrame({"F_mem": [0.49, 0.36], "FID": [115.2, 156.6]}, index=["FM", "balanced"])
    assert table_html(df) == df._repr_html_()
