"""The chapter's tests and what they say: the paired tests behind the scoreboard rows
(:func:`chapter_tests`), and what the budget controls say about a KTS effect (Mathematics §3.5): shaping, or
stopping short (:func:`budget_reading`).

A landing with ``eta < 1`` late spends a time budget ``T < 1``. Each KTS configuration is sampled beside the
constant gain of the same budget and the KTS schedule renormalised to budget 1
(:func:`~kpe_lib.experiments.celeba_kts.runs.control_specs`); :func:`budget_reading` reads the exact McNemar
tests of the three (:func:`chapter_tests`) as one of four readings.

Example:
    >>> tests = {"fmem": {"b": {"p": 0.001}, "b | constant budget": {"p": 0.002}, "b | renormalised": {"p": 0.6}},
    ...          "fmem_vs_control": {"b | constant budget": {"p": 0.7}}}
    >>> budget_reading(tests, {"b": -0.2, "b | constant budget": -0.18, "b | renormalised": -0.01}, "b").reading
    'time budget'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from kpe_lib.experiments.celeba_kts.configs import ConfigEval, PairedFidChanges
from kpe_lib.experiments.celeba_kts.tables import CONTROL_KEYS, _changes
from kpe_lib.metrics import FrechetReference

__all__ = ["chapter_tests", "BudgetReading", "budget_reading"]


def chapter_tests(evals: Mapping[str, ConfigEval], abl: Mapping[str, ConfigEval], reference: FrechetReference,
                  ref_features: torch.Tensor | np.ndarray, *, main_names: Sequence[str], taus: Sequence[float],
                  tau_names: Sequence[str], evidence: Any, n_boot: int = 1000, seed: int = 0,
                  stats_device: str | None = None, changes: PairedFidChanges | None = None
                  ) -> dict[str, dict[str, Any]]:
    """The tests behind the chapter's scoreboard rows (``metrics["tests"]``), all paired on the shared noise.

    - ``fmem.<name>``: exact McNemar of FM's vs the configuration's memorised flags; ci95 the paired bootstrap
      interval of the change (:func:`~kpe_lib.experiments.celeba_kts.configs.paired_fmem_change`, same seed),
      for every KTS configuration and for each of its budget controls present in ``evals``;
    - ``fmem_vs_control.<control>`` / ``fid_vs_control.<control>``: the same tests from a budget control
      (``"<name> | constant budget"``, ``"<name> | renormalised"``) to its KTS configuration: what the phase
      structure does beyond the time budget;
    - ``fid.<name>``: :meth:`FrechetReference.paired_change` of FM -> the configuration (same resamples and
      interval as the table's ``dfid``);
    - ``kid.<name>``: :func:`kpe_lib.metrics.paired_kid_change` of FM -> the configuration;
    - ``fid.tau_<tau>``: paired FID change from the tau configuration to tau_split = 0.6 on the ablation
      subset (only where both have features).

    ``evidence`` writes each record (the book's :func:`kpe_lib.book.verdicts.evidence`, passed in by the chapter
    because the study layer does not import the book machinery). ``changes``: the FID bootstraps the tables
    computed already (:func:`summary_table`), reused for the same pairs instead of being run again.
    """
    from kpe_lib.experiments.celeba_kts.configs import paired_fmem_change
    from kpe_lib.metrics import mcnemar_exact, paired_kid_change

    fid_change = _changes(changes, reference, n_boot, seed, stats_device).change

    def compare(base: ConfigEval, ev: ConfigEval, fmem: dict, fid: dict | None, kid: dict | None, name: str) -> None:
        mc = mcnemar_exact(base.memorization.memorized, ev.memorization.memorized)
        d = paired_fmem_change(base.memorization, ev.memorization, n_boot=n_boot, seed=seed)
        fmem[name] = evidence("exact McNemar", p=mc.pvalue, ci95=[float(d.ci[0]), float(d.ci[1])], n=mc.n,
                              ci="paired bootstrap", n01=int(mc.n01), n10=int(mc.n10))
        if base.features is not None and ev.features is not None:
            f = fid_change(base.features, ev.features)
            fid[name] = evidence("paired bootstrap", p=f.pvalue, ci95=list(f.ci), n=f.n, n_boot=f.n_boot)
            if kid is not None:
                k = paired_kid_change(ref_features, base.features, ev.features, n_boot=n_boot, seed=seed,
                                      device=stats_device)
                kid[name] = evidence("paired bootstrap", p=k.pvalue, ci95=list(k.ci), n=k.n, n_boot=k.n_boot)

    fm = evals["FM"]
    tests: dict[str, dict[str, Any]] = {"fmem": {}, "fid": {}, "kid": {}, "fmem_vs_control": {},
                                        "fid_vs_control": {}}
    for n in main_names:
        compare(fm, evals[n], tests["fmem"], tests["fid"], tests["kid"], n)
        for suffix in CONTROL_KEYS:  # FM -> control, and control -> KTS (the effect beyond the budget)
            control = f"{n} | {suffix}"
            if control in evals:
                compare(fm, evals[control], tests["fmem"], tests["fid"], tests["kid"], control)
                compare(evals[control], evals[n], tests["fmem_vs_control"], tests["fid_vs_control"], None, control)
    by_tau = {f"{t:g}": n for t, n in zip(taus, tau_names)}
    if "0.6" in by_tau and abl[by_tau["0.6"]].features is not None:
        other = abl[by_tau["0.6"]].features
        for t, n in by_tau.items():
            if t != "0.6" and abl[n].features is not None:
                f = fid_change(abl[n].features, other)
                tests["fid"][f"tau_{t}"] = evidence("paired bootstrap", p=f.pvalue, ci95=list(f.ci), n=f.n,
                                                     n_boot=f.n_boot)
    return tests


@dataclass(frozen=True)
class BudgetReading:
    """What the budget controls say about one KTS configuration's F_mem effect (Mathematics §3.5).

    Attributes:
        reading: ``"no effect"`` (KTS does not change F_mem at ``alpha``), ``"phase structure"`` (KTS differs
            from the constant gain of the same budget, or the renormalised schedule keeps the effect),
            ``"time budget"`` (the constant gain does the same and the renormalised schedule loses it), or
            ``"undecided"``.
        why: one sentence with the tests behind it.
    """

    reading: str
    why: str


def budget_reading(tests: Mapping[str, Any], changes: Mapping[str, float], name: str, alpha: float = 0.05
                   ) -> BudgetReading:
    """Read the F_mem tests of ``name`` and its two controls (:func:`chapter_tests`); ``changes``: name -> paired
    F_mem change against FM (fraction), for ``name`` and its controls."""
    const, renorm = f"{name} | constant budget", f"{name} | renormalised"
    p_kts, p_const, p_renorm = (tests["fmem"][n]["p"] for n in (name, const, renorm))
    p_beyond = tests["fmem_vs_control"][const]["p"]

    def same_way(n: str) -> bool:
        return (changes[n] > 0) == (changes[name] > 0) and changes[n] != 0

    def pct(n: str) -> str:
        return f"{100 * changes[n]:+.1f} points (p = {tests['fmem'][n]['p']:.2g})"

    tail = (f"KTS {pct(name)}, constant gain of the same budget {pct(const)}, renormalised to budget 1 "
            f"{pct(renorm)}; KTS against the constant gain p = {p_beyond:.2g} (exact McNemar, paired).")
    if p_kts >= alpha:
        return BudgetReading("no effect", "KTS does not change F_mem at this resolution: " + tail)
    if p_beyond < alpha:
        return BudgetReading("phase structure", "KTS differs from the constant gain of its budget: " + tail)
    if p_renorm < alpha and same_way(renorm):
        return BudgetReading("phase structure", "the schedule keeps its effect at budget 1: " + tail)
    if p_const < alpha and same_way(const) and p_renorm >= alpha:
        return BudgetReading("time budget", "the constant gain of the same budget does the same and the schedule "
                                            "at budget 1 does not: " + tail)
    return BudgetReading("undecided", "the controls do not separate the readings: " + tail)
