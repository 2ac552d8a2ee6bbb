"""The tests behind the chapter's scoreboard rows (Mathematics §5.7), and what the chapter reads from those rows.

Every sampler configuration of the chapter integrates the *same* noise, so F_mem of two configurations is a
paired comparison: each noise draw is a copy or not under both. :func:`fmem_changes` gives, per row, the
exact McNemar test on the per-sample memorised flags (plain EFM against the configuration) and the paired
bootstrap interval of the change of F_mem (resampling the noise draws, ``mean(flags_b - flags_a)``). It draws
from its own numpy generator (``bootstrap_ci``'s ``seed``) and touches no global random state.

The scoreboard rows themselves live in :mod:`kpe_lib.book.scoreboard` (a higher tier this package may not
import); the chapter passes their labels and paper strings in, and :func:`paper_landing_points` and
:func:`verdict_glue` read them.

Example:
    >>> import torch
    >>> a = torch.tensor([True, True, True, True])
    >>> c = fmem_change(a, torch.tensor([True, False, True, False]), n_boot=50, seed=0)
    >>> (c["n"], c["n01"], c["n10"], c["p"])
    (4, 0, 2, 0.5)
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib.metrics import bootstrap_ci, mcnemar_exact

__all__ = ["fmem_change", "fmem_changes", "paper_landing_points", "verdict_glue"]

PLAIN = "EFM (eta = 1)"


def _flags(x: torch.Tensor | np.ndarray | Sequence[bool]) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr.astype(bool)


def fmem_change(flags_a, flags_b, *, n_boot: int, seed: int) -> dict[str, Any]:
    """Paired change of F_mem from configuration A to B on the same noise draws.

    Args:
        flags_a, flags_b: (B,) memorised flags (``MemorizationResult.memorized``) of the two configurations,
            paired draw by draw.
        n_boot: bootstrap resamples of the draws; seed: seed of the bootstrap's own generator.

    Returns:
        ``{"p", "ci95", "n", "n01", "n10", "change"}``: exact McNemar p-value, the paired percentile bootstrap
        95% interval of ``F_mem(B) - F_mem(A)`` (fractions), the number of draws, the discordant counts
        (``n01``: copy under B only, ``n10``: copy under A only) and the change itself. The keys
        ``p``, ``ci95``, ``n`` (and the rest as extras) are what ``kpe_lib.book.verdicts.evidence`` takes.
    """
    a, b = _flags(flags_a), _flags(flags_b)
    test = mcnemar_exact(a, b)
    boot = bootstrap_ci(np.mean, b.astype(np.float64) - a.astype(np.float64), n_boot=n_boot, seed=seed)
    return {"p": test.pvalue, "ci95": [boot.ci[0], boot.ci[1]], "n": test.n, "n01": test.n01, "n10": test.n10,
            "change": test.change}


def fmem_changes(per_sample: Mapping[str, Mapping[str, torch.Tensor]], configs: Mapping[str, str | None], *,
                 n_boot: int, seed: int, base: str = PLAIN) -> dict[str, dict[str, Any]]:
    """:func:`fmem_change` of plain EFM (``base``) against each configuration, per row test name.

    Args:
        per_sample: the sweep's per-sample records (``SweepResult.per_sample``), with ``"memorized"``.
        configs: row test name -> sweep configuration (e.g. ``{"balanced": "balanced alpha0=beta0=0.01"}``);
            a configuration that is None or was not run is left out (its row then says *not run*).
        n_boot, seed: the bootstrap of every change (the same resamples for every row).
    """
    base_flags = per_sample[base]["memorized"]
    return {name: fmem_change(base_flags, per_sample[config]["memorized"], n_boot=n_boot, seed=seed)
            for name, config in configs.items() if config is not None and config in per_sample}


def paper_landing_points(rows: Sequence[tuple[str, str]]) -> list[tuple[float, float]]:
    """The paper's F_mem points ``[(0, F_mem(FM)), (beta0, F_mem(landing))]`` (fractions) for the sweep
    figure, read from the scoreboard rows ``(metric, paper)`` of the chapter: the row whose metric names
    ``landing only b0 = <beta0>`` and whose paper string is ``"<FM %> -> <landing %>"``; [] if none."""
    for metric, paper in rows:
        found = re.search(r"landing only b0 = ([0-9.]+)", metric)
        values = re.findall(r"[0-9]+(?:\.[0-9]+)?", paper)
        if found and len(values) == 2:
            return [(0.0, float(values[0]) / 100), (float(found.group(1)), float(values[1]) / 100)]
    return []


def verdict_glue(table: pd.DataFrame, rows: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Glue names of the verdicts of the chapter's table: ``efm_verdict_<key>`` -> the table's verdict.

    Args:
        table: ``chapter_table(...)`` (index: the rows' metric labels, column ``verdict``).
        rows: ``(metric, key)`` per row, ``key`` the row's test (``"fmem_efm.balanced"``) or its first
            ``ours`` key; the glue key is its last dotted part with spaces as underscores
            (``efm_verdict_balanced``, ``efm_verdict_landing_only``, ``efm_verdict_theory_r2_min``).
    """
    out = {}
    for metric, key in rows:
        if metric in table.index:
            out["efm_verdict_" + key.split(".")[-1].replace(" ", "_")] = str(table.loc[metric, "verdict"])
    return out
