"""The tests behind the chapter's scoreboard rows (Mathematics §5.7).

**Groups.** The low- and high-KPE groups are two disjoint sets of samples, so each comparison is an
unpaired two-sample test. The *within-class* rows (primary) use the groups cut inside each class (the same
number of samples of every class in both groups) and a **stratified permutation test**: the high-minus-low
difference averaged over classes, its null distribution from re-assigning group membership only inside each
class, its interval from a stratified bootstrap (``kpe_lib.metrics.groups.stratified_permutation_test``), so
that neither the class mix nor the spread between classes enters; Welch's p of the same cut is kept beside.
The *pooled* rows use the global cut and Welch's t test (two-sided) with Welch's 95% interval of
``mean(high) - mean(low)``, the Mann-Whitney p beside it.

**KTS.** FM, the launch and the landing integrate the *same* noise vectors with the same classes (the
first ``n`` of the main run), so every change is paired row by row: the paired bootstrap of FID
(``FrechetReference.paired_change``), of KID (``paired_kid_change``) and of recall
(``paired_set_change``), each resampling the noise vectors with the reference held fixed; the semantic
score by a paired t test on the per-sample differences with the paired percentile bootstrap interval of
their mean (Wilcoxon's signed-rank p beside it). Every bootstrap draws from its own numpy generator
(``seed``) and touches no global random state.

Each record has the fields ``test``, ``p``, ``ci95``, ``n`` (and extras) that
``kpe_lib.book.verdicts.evidence`` takes (that tier is above this package, so the chapter wraps them).

Example:
    >>> d = paired_mean_change([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.5, 4.0], n_boot=100, seed=0)
    >>> (d["test"], d["n"], d["change"])
    ('paired t (bootstrap CI of the mean difference)', 4, 1.125)
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import scipy.stats
import torch

from kpe_lib.metrics import bootstrap_ci, paired_kid_change, paired_set_change, precision_recall
from kpe_lib.metrics.groups import GroupComparison, StratifiedTest

__all__ = ["welch_interval", "group_test", "stratified_record", "semantics_tests", "paired_mean_change",
           "paired_change_record", "setting_key", "kts_tests"]

WELCH_WITHIN = "Welch t, within-class cut"
STRATIFIED_WITHIN = "stratified permutation, within class"
WELCH_POOLED = "Welch t, pooled cut"


def welch_interval(c: GroupComparison, level: float = 0.95) -> list[float]:
    """Welch's interval of ``mean_high - mean_low`` from a comparison's means, stds (ddof 1), sizes and dof."""
    se = math.sqrt(c.std_low ** 2 / c.n_low + c.std_high ** 2 / c.n_high)
    half = float(scipy.stats.t.ppf(0.5 + level / 2, c.welch_dof)) * se if se > 0 else 0.0
    return [c.diff - half, c.diff + half]


def group_test(c: GroupComparison, test: str, cut: str) -> dict[str, Any]:
    """The record of one group comparison: Welch p and interval, Mann-Whitney p, the group sizes."""
    ci = welch_interval(c)
    return {"test": test, "p": _finite(c.welch_p), "ci95": ci if all(map(math.isfinite, ci)) else None,
            "n": c.n_low + c.n_high,
            "mann_whitney_p": _finite(c.mw_p), "n_low": c.n_low, "n_high": c.n_high, "cut": cut}


def stratified_record(t: StratifiedTest, welch: GroupComparison) -> dict[str, Any]:
    """The record of a within-class row: the stratified permutation p and bootstrap interval, Welch's p beside."""
    return {"test": STRATIFIED_WITHIN, "p": _finite(t.p), "ci95": [t.ci95[0], t.ci95[1]], "n": t.n,
            "welch_p": _finite(welch.welch_p), "n_perm": t.n_perm, "n_strata": t.n_strata, "cut": "within class"}


def semantics_tests(comparisons: Mapping[tuple[str, str], GroupComparison], score_name: str,
                    margin_name: str, stratified: Mapping[str, StratifiedTest] | None = None
                    ) -> dict[str, dict[str, Any]]:
    """Records of the four group rows: ``score_within``, ``margin_within`` (within-class cut) and
    ``score_pooled``, ``margin_pooled`` (global cut), from the group study's ``comparisons`` and, for the
    within-class rows, its ``stratified`` tests (without them: Welch's t on the within-class cut)."""
    out = {}
    for quantity, name in (("score", score_name), ("margin", margin_name)):
        within = comparisons[("within class", name)]
        out[f"{quantity}_within"] = (stratified_record(stratified[name], within) if stratified
                                     else group_test(within, WELCH_WITHIN, "within class"))
    for quantity, name in (("score", score_name), ("margin", margin_name)):
        out[f"{quantity}_pooled"] = group_test(comparisons[("global", name)], WELCH_POOLED, "global")
    return out


def _vector(x: torch.Tensor | np.ndarray | list) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def paired_mean_change(a, b, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired change of a per-sample quantity from A to B on the same noise (``b[i] - a[i]``).

    Returns ``{"test", "p", "ci95", "n", "change", "wilcoxon_p"}``: the two-sided paired t p-value of the mean
    difference (1 when every difference is 0; 0 when they are all equal and nonzero), the percentile
    bootstrap 95% interval of the mean difference (``bootstrap_ci``, its own generator ``seed``), the number
    of pairs, the mean difference and Wilcoxon's signed-rank p (zero differences dropped; 1 if all are 0).
    """
    x, y = _vector(a), _vector(b)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"a and b must be paired 1-D arrays of at least 2 values, got {x.shape} and {y.shape}")
    d = y - x
    if np.all(d == d[0]):
        p = 1.0 if d[0] == 0 else 0.0
    else:
        p = float(scipy.stats.ttest_1samp(d, 0.0).pvalue)
    wilcoxon = 1.0 if np.all(d == 0) else float(scipy.stats.wilcoxon(d, zero_method="wilcox").pvalue)
    boot = bootstrap_ci(np.mean, d, n_boot=n_boot, seed=seed)
    ci = [boot.ci[0], boot.ci[1]] if all(map(math.isfinite, boot.ci)) else None
    return {"test": "paired t (bootstrap CI of the mean difference)", "p": p, "ci95": ci,
            "n": int(d.size), "change": float(d.mean()), "wilcoxon_p": _finite(wilcoxon)}


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def paired_change_record(test: str, change: Any) -> dict[str, Any]:
    """The record of a ``PairedChange`` (paired bootstrap p and percentile interval of the change); a p-value
    or an interval that the bootstrap could not give (NaN, fewer than 2 finite replicates) is None."""
    ci = [change.ci[0], change.ci[1]] if all(math.isfinite(c) for c in change.ci) else None
    return {"test": test, "p": _finite(change.pvalue), "ci95": ci, "n": change.n, "change": change.change,
            "n_boot": change.n_boot, "bias": _finite(change.bias)}


def setting_key(name: str) -> str:
    """The results-key form of a KTS setting's name: ``"landing (linear)"`` -> ``"landing_linear"``."""
    return "_".join(name.lower().replace("(", " ").replace(")", " ").split())


def kts_tests(runs: Mapping[str, Mapping[str, torch.Tensor]], quality: Mapping[str, Any], reference: Any, *,
              seed: int, n_boot_fid: int = 200, n_boot_kid: int = 1000, n_boot_recall: int = 200,
              n_boot_mean: int = 1000) -> dict[str, dict[str, Any]]:
    """Records of every KTS setting against FM on the shared noise: ``fid_<key>``, ``kid_<key>``, ``score_<key>``
    and ``recall_<key>`` for each setting but FM (``key`` = :func:`setting_key` of its name). The scoreboard
    reads ``fid_launch``, ``kid_launch``, ``score_launch`` and ``recall_landing``; the others are for the prose
    and the KTS table.

    Args:
        runs: setting -> per-sample ``"score"`` (``KTSStudy.runs``), with "FM" among them.
        quality: setting -> ``QualityResult`` with ``.features`` (``KTSStudy.quality``).
        reference: the ``ReferenceSet`` (its ``.features`` and ``.frechet_reference()``).
        seed: seed of every bootstrap (each its own generator).
        n_boot_fid, n_boot_kid, n_boot_recall, n_boot_mean: resamples of each test.
    """
    fm = quality["FM"].features
    frechet = reference.frechet_reference()

    def recall(real, fake) -> float:
        return precision_recall(real, fake, k=3).recall

    out = {}
    for name in (n for n in runs if n != "FM"):
        key, feats = setting_key(name), quality[name].features
        out[f"fid_{key}"] = paired_change_record(
            "paired bootstrap (FID)", frechet.paired_change(fm, feats, n_boot=n_boot_fid, seed=seed))
        out[f"kid_{key}"] = paired_change_record(
            "paired bootstrap (KID)", paired_kid_change(reference.features, fm, feats, n_boot=n_boot_kid, seed=seed))
        out[f"score_{key}"] = paired_mean_change(runs["FM"]["score"], runs[name]["score"], n_boot=n_boot_mean,
                                                 seed=seed)
        out[f"recall_{key}"] = paired_change_record(
            "paired bootstrap (recall)", paired_set_change(recall, reference.features, fm, feats,
                                                           n_boot=n_boot_recall, seed=seed))
    return out
