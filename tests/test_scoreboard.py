"""The scoreboard reads results files, judges each paper row, and renders every row at every scale."""
import json

import pytest

from kpe_lib.bookpages import api_markdown, parameters_markdown, scoreboard_markdown, write_generated_pages
from kpe_lib.scoreboard import ROWS, Row, lookup, scoreboard


def write(tmp_path, scale, chapter, metrics):
    folder = tmp_path / "results" / scale
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{chapter}.json").write_text(json.dumps(
        {"chapter": chapter, "scale": scale, "metrics": metrics, "protocol": {}}))


def test_lookup_handles_dotted_keys():
    m = {"a": 1, "tau_sweep": {"0.6": {"fid": 14.0}}, "x.y": 2}
    assert lookup(m, "a") == 1 and lookup(m, "x.y") == 2 and lookup(m, "tau_sweep.0.6.fid") == 14.0
    assert lookup(m, "tau_sweep.0.2.fid") is None and lookup(m, "missing") is None


@pytest.mark.parametrize("vals,expected", [
    ([0.37, 0.31], "reproduced in magnitude"),   # change -6 points vs the paper's -6.12 (tolerance 3)
    ([0.37, 0.20], "reproduced in direction"),
    ([0.30, 0.35], "not reproduced"),
    (None, "not run"),
])
def test_two_value_verdicts(vals, expected):
    row = Row("e", "F_mem", "37.34 -> 31.22", "04", ("a", "b"), "decrease", -6.12, 3.0, 100.0)
    metrics = {} if vals is None else {"a": vals[0], "b": vals[1]}
    assert row.verdict(row.values(metrics)) == expected


def test_single_value_verdicts():
    row = Row("e", "rho", "-0.65", "03", ("rho",), "below", -0.65, 0.1)
    assert row.verdict([-0.6]) == "reproduced in magnitude"
    assert row.verdict([-0.2]) == "reproduced in direction"
    assert row.verdict([0.1]) == "not reproduced"


def test_every_paper_row_is_present_at_every_scale(tmp_path):
    write(tmp_path, "cpu", "04_celeba_kts", {"fmem_fm": 0.37, "fmem_kts": 0.25, "fid_fm": 40.0, "fid_kts": 41.0,
                                             "tau_sweep": {"0.6": {"fid": 15.0}}})
    write(tmp_path, "cpu", "03_cifar_support", {"spearman_knn": {"pixels": -0.2, "vae": -0.6}})
    entries = scoreboard(tmp_path / "results", ("cpu", "paper"))
    assert len(entries) == 2 * len(ROWS)
    by = {(e.scale, e.row.metric): e for e in entries}
    assert by[("cpu", "F_mem (%), FM -> KTS a0 = b0 = 0.01")].verdict == "reproduced in direction"
    assert by[("cpu", "F_mem (%), FM -> KTS a0 = b0 = 0.01")].value == "37 -> 25"
    assert by[("cpu", "FID, FM -> KTS a0 = b0 = 0.01")].verdict == "not reproduced"
    assert by[("cpu", "FID at tau_split = 0.6")].verdict == "reproduced in magnitude"
    assert by[("cpu", "Spearman(KPE, kNN support), strongest space")].value == "-0.6"
    assert all(e.verdict == "not run" for e in entries if e.scale == "paper")
    page = scoreboard_markdown(tmp_path / "results")
    assert all(row.paper.replace("|", "\\|") in page for row in ROWS)
    assert "## Scale `cpu`" in page and "## Scale `paper`" in page


def test_generated_pages_are_written(tmp_path):
    (tmp_path / "notebooks" / "params").mkdir(parents=True)
    for scale, steps in (("smoke", 10), ("cpu", 100), ("paper", 1000)):
        (tmp_path / "notebooks" / "params" / f"{scale}.yml").write_text(f"scale: {scale}\ntoy_steps: {steps}\n")
    assert "| `toy_steps` | `10` | `100` | `1000` |" in parameters_markdown(tmp_path)
    paths = write_generated_pages(tmp_path, tmp_path / "book")
    assert [p.name for p in paths] == ["scoreboard.md", "parameters.md", "api.md"]
    assert not list((tmp_path / "book" / "generated").glob(".*.tmp"))


def test_api_page_documents_the_public_names():
    page = api_markdown(("kpe_lib",))
    for name in ("time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity"):
        assert f"### `{name}`" in page
    assert "SPEC 2" in page
