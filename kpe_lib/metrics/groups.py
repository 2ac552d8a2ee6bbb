"""Low- versus high-KPE groups of samples and the test of their difference (Mathematics §5, §6).

The paper compares the semantic strength (CLIP score and margin) of "low-KPE" and "high-KPE" samples of
one class-conditional model, but does not say how the groups are cut (Mathematics §6, "What is not public").
**[choice]** this module cuts by quantiles of the per-sample KPE: the default ``"thirds"`` puts the bottom
third in the low group and the top third in the high group and leaves the middle third out. Optional
strata (e.g. the class label) cut within each stratum, so that a class whose samples all have a high KPE
cannot by itself make the groups differ.

The difference of a per-sample quantity between the groups is reported as mean +- std per group with
Welch's unequal-variance t test and the Mann-Whitney U test (two-sided p-values from scipy), plus the
rank-biserial effect size ``2 U / (n_low n_high) - 1`` (the probability that a high-group value beats a
low-group one, minus the reverse). With strata, :func:`stratified_permutation_test` compares the groups only
inside each stratum (the high-minus-low difference averaged over strata, its null distribution from
re-assigning group membership within each stratum), so that differences *between* strata cannot make it
significant.

Example:
    >>> groups = kpe_groups(res.kpe, cut="thirds")                      # doctest: +SKIP
    >>> cmp = compare_groups(score, groups)                             # doctest: +SKIP
    >>> print(f"{cmp.mean_low:.2f} -> {cmp.mean_high:.2f}, Welch p = {cmp.welch_p:.1e}")  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.stats
import torch

from kpe_lib.metrics._checks import as_vector

__all__ = ["KPEGroups", "GroupComparison", "StratifiedTest", "kpe_groups", "compare_groups",
           "stratified_permutation_test", "welch_t", "mann_whitney_u"]

CUTS = {"thirds": 1.0 / 3.0, "quartiles": 0.25, "halves": 0.5, "deciles": 0.1}


def _vector(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """``as_vector`` (1-D, float64, finite) with at least 2 entries, the least two groups can be cut from."""
    a = as_vector(x, name)
    if a.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array with at least 2 entries, got shape {a.shape}")
    return a


@dataclass
class KPEGroups:
    """Which samples are in the low- and the high-KPE group.

    Attributes:
        low: (B,) bool, samples whose KPE is at or below the lower cut of their stratum.
        high: (B,) bool, samples whose KPE is at or above the upper cut of their stratum.
        fraction: share of each stratum put in each group (1/3 for "thirds").
        cut: a sentence stating the rule, for tables and prose.
        thresholds: (lower, upper) KPE cut values; one pair per stratum when stratified, keyed by stratum.
    """

    low: np.ndarray
    high: np.ndarray
    fraction: float
    cut: str
    thresholds: dict

    @property
    def n_low(self) -> int:
        return int(self.low.sum())

    @property
    def n_high(self) -> int:
        return int(self.high.sum())

    def masks(self) -> dict[str, np.ndarray]:
        """``{"low KPE": low, "high KPE": high}``, the group labels the book's plots colour."""
        return {"low KPE": self.low, "high KPE": self.high}

    @property
    def low_max(self) -> float:
        """Largest KPE in the low group (the lower cut; unstratified groups only)."""
        return self._cuts()[0]

    @property
    def high_min(self) -> float:
        """Smallest KPE in the high group (the upper cut; unstratified groups only)."""
        return self._cuts()[1]

    def _cuts(self) -> tuple[float, float]:
        if "all" not in self.thresholds:
            raise ValueError("stratified groups have one cut per stratum: read thresholds[stratum]")
        return self.thresholds["all"]

    def ranked(self, kpe: torch.Tensor | np.ndarray, group: str) -> np.ndarray:
        """Indices of a group's samples, most extreme first: ``"low"`` by KPE ascending, ``"high"``
        descending (ties by sample index), e.g. to show the lowest- and highest-KPE samples."""
        if group not in ("low", "high"):
            raise ValueError(f"group must be 'low' or 'high', got {group!r}")
        e = _vector(kpe, "kpe")
        if e.shape != self.low.shape:
            raise ValueError(f"kpe must be the ({self.low.shape[0]},) vector the groups were cut from, got {e.shape}")
        idx = np.flatnonzero(self.low if group == "low" else self.high)
        order = np.lexsort((idx, e[idx] if group == "low" else -e[idx]))
        return idx[order]


def kpe_groups(kpe: torch.Tensor | np.ndarray, cut: str | float = "thirds",
               strata: torch.Tensor | np.ndarray | None = None) -> KPEGroups:
    """Split samples into low- and high-KPE groups by rank (**[choice]**, see the module docstring).

    Within each stratum of m samples, the ``floor(q m)`` samples of lowest KPE form the low group and the
    ``floor(q m)`` of highest KPE the high group (ties broken by sample index, so the groups never overlap
    and always have the same size), where ``q`` is the fraction.

    Args:
        kpe: (B,) per-sample kinetic path energy.
        cut: "thirds" (q = 1/3), "quartiles" (1/4), "halves" (1/2), "deciles" (1/10), or a float q in (0, 0.5].
        strata: optional (B,) integer labels (e.g. classes); the cut is then made within each stratum.

    Returns:
        KPEGroups.

    Raises:
        ValueError: on a bad cut, shapes that do not match, or a stratum too small for one sample per group.

    Example:
        >>> g = kpe_groups(torch.arange(9.0))
        >>> g.low.nonzero()[0].tolist(), g.high.nonzero()[0].tolist()
        ([0, 1, 2], [6, 7, 8])
    """
    e = _vector(kpe, "kpe")
    if isinstance(cut, str):
        if cut not in CUTS:
            raise ValueError(f"cut must be one of {sorted(CUTS)} or a fraction in (0, 0.5]; got {cut!r}")
        q, name = CUTS[cut], cut
    else:
        q = float(cut)
        if not 0.0 < q <= 0.5:
            raise ValueError(f"cut as a fraction must lie in (0, 0.5]; got {cut!r}")
        name = f"fraction {q:g}"
    if strata is None:
        s = np.zeros(e.shape[0], dtype=np.int64)
    else:
        s = strata.detach().cpu().numpy() if isinstance(strata, torch.Tensor) else np.asarray(strata)
        if s.shape != e.shape or not np.issubdtype(s.dtype, np.integer):
            raise ValueError(f"strata must be an integer array of shape {e.shape}; got {s.dtype} {s.shape}")
    low, high = np.zeros(e.shape[0], bool), np.zeros(e.shape[0], bool)
    thresholds = {}
    for value in np.unique(s):
        idx = np.flatnonzero(s == value)
        k = int(np.floor(q * idx.size + 1e-9))
        if k < 1:
            raise ValueError(f"stratum {value} has {idx.size} samples: too few for a {name} cut (need >= "
                             f"{int(np.ceil(1 / q))})")
        order = idx[np.argsort(e[idx], kind="stable")]
        low[order[:k]], high[order[-k:]] = True, True
        thresholds[int(value)] = (float(e[order[k - 1]]), float(e[order[-k]]))
    where = "" if strata is None else f" within each of {len(thresholds)} strata"
    rule = (f"bottom and top {name} of per-sample KPE{where} ({int(low.sum())} samples each)" if name in CUTS
            else f"bottom and top {q:.0%} of per-sample KPE{where} ({int(low.sum())} samples each)")
    return KPEGroups(low=low, high=high, fraction=q, cut=rule,
                     thresholds=thresholds if strata is not None else {"all": thresholds[0]})


def welch_t(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Welch's t statistic of ``mean(b) - mean(a)`` and its Welch-Satterthwaite degrees of freedom."""
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se2 = va + vb
    if se2 == 0:
        return (0.0 if b.mean() == a.mean() else float(np.sign(b.mean() - a.mean()) * np.inf)), float(a.size + b.size - 2)
    t = (b.mean() - a.mean()) / np.sqrt(se2)
    dof = se2 ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    return float(t), float(dof)


def mann_whitney_u(a: np.ndarray, b: np.ndarray) -> float:
    """U statistic of ``b`` against ``a``: the number of pairs with b_j > a_i, ties counting one half."""
    ranks = scipy.stats.rankdata(np.concatenate([a, b]))
    return float(ranks[a.size:].sum() - b.size * (b.size + 1) / 2.0)


@dataclass
class GroupComparison:
    """A per-sample quantity compared between the low- and the high-KPE group.

    Attributes:
        mean_low, std_low, n_low: mean, standard deviation (ddof = 1) and size of the low group.
        mean_high, std_high, n_high: the same for the high group.
        diff: ``mean_high - mean_low``.
        welch_t, welch_dof, welch_p: Welch's t, its degrees of freedom and two-sided p-value.
        mw_u, mw_p: Mann-Whitney U (high against low) and its two-sided p-value.
        rank_biserial: ``2 U / (n_low n_high) - 1`` in [-1, 1]; positive when the high group is larger.
    """

    mean_low: float
    std_low: float
    n_low: int
    mean_high: float
    std_high: float
    n_high: int
    diff: float
    welch_t: float
    welch_dof: float
    welch_p: float
    mw_u: float
    mw_p: float
    rank_biserial: float

    def summary(self, digits: int = 2) -> str:
        """``"low m +- s -> high m +- s (Welch p = ..., Mann-Whitney p = ...)"``."""
        f = f"{{:.{digits}f}}"
        return (f"low {f.format(self.mean_low)} +- {f.format(self.std_low)} -> high {f.format(self.mean_high)} +- "
                f"{f.format(self.std_high)} (Welch p = {self.welch_p:.2g}, Mann-Whitney p = {self.mw_p:.2g})")


def compare_groups(values: torch.Tensor | np.ndarray, groups: KPEGroups) -> GroupComparison:
    """Compare a per-sample quantity (semantic score, margin, ...) between the two KPE groups.

    Args:
        values: (B,) one value per sample, aligned with the KPE the groups were cut from.
        groups: the output of :func:`kpe_groups`.

    Returns:
        GroupComparison with means, stds, Welch's t test and the Mann-Whitney U test.

    Raises:
        ValueError: shapes that do not match, or a group with fewer than 2 samples.
    """
    v = _vector(values, "values")
    if v.shape != groups.low.shape:
        raise ValueError(f"values must have shape {groups.low.shape} (one per sample); got {v.shape}")
    a, b = v[groups.low], v[groups.high]
    if a.size < 2 or b.size < 2:
        raise ValueError(f"each group needs at least 2 samples for a test; got {a.size} and {b.size}")
    t, dof = welch_t(a, b)
    welch = scipy.stats.ttest_ind(b, a, equal_var=False)
    u = mann_whitney_u(a, b)
    mw = scipy.stats.mannwhitneyu(b, a, alternative="two-sided")
    return GroupComparison(
        mean_low=float(a.mean()), std_low=float(a.std(ddof=1)), n_low=int(a.size),
        mean_high=float(b.mean()), std_high=float(b.std(ddof=1)), n_high=int(b.size),
        diff=float(b.mean() - a.mean()), welch_t=t, welch_dof=dof, welch_p=float(welch.pvalue),
        mw_u=u, mw_p=float(mw.pvalue), rank_biserial=2.0 * u / (a.size * b.size) - 1.0)


@dataclass
class StratifiedTest:
    """High- minus low-KPE difference of a quantity compared inside strata (e.g. classes), with its test.

    Attributes:
        diff: ``sum_c w_c (mean_high_c - mean_low_c)``, weights ``w_c`` proportional to the stratum's grouped
            samples (strata missing either group are left out).
        p: two-sided permutation p-value ``(1 + #{|diff*| >= |diff|}) / (1 + n_perm)``, group membership
            re-assigned at random within each stratum (group sizes kept).
        ci95: percentile 95% interval of ``diff`` from a stratified bootstrap (each stratum's low and high
            samples resampled separately, ``n_boot`` times).
        per_stratum: stratum -> its own ``mean_high_c - mean_low_c``.
        n_perm: permutations drawn; n_strata: strata used; n: grouped samples used.
    """

    diff: float
    p: float
    ci95: tuple[float, float]
    per_stratum: dict
    n_perm: int
    n_strata: int
    n: int

    def summary(self, digits: int = 3) -> str:
        """``"within-stratum difference +x.xxx (stratified permutation p = ..., K strata)"``."""
        return (f"within-stratum difference {self.diff:+.{digits}f} (stratified permutation p = {self.p:.2g}, "
                f"{self.n_strata} strata, {self.n_perm} permutations)")


def stratified_permutation_test(values: torch.Tensor | np.ndarray, groups: KPEGroups,
                                strata: torch.Tensor | np.ndarray, *, n_perm: int = 10000, n_boot: int = 1000,
                                seed: int = 0) -> StratifiedTest:
    """Test the high- minus low-KPE difference of ``values`` inside each stratum (a stratified permutation test).

    Args:
        values: (B,) one value per sample.
        groups: low / high membership (usually cut within strata: ``kpe_groups(kpe, strata=labels)``).
        strata: (B,) the stratum of every sample (e.g. the class asked for).
        n_perm: random within-stratum re-assignments behind the p-value (>= 100).
        n_boot: stratified bootstrap resamples behind the interval (>= 100).
        seed: the permutation and bootstrap seed.

    Raises:
        ValueError: shapes that do not match, ``n_perm`` or ``n_boot`` below 100, or no stratum with both
            groups.
    """
    v = _vector(values, "values")
    s = np.asarray(strata.cpu() if isinstance(strata, torch.Tensor) else strata).reshape(-1)
    if v.shape != groups.low.shape or s.shape != v.shape:
        raise ValueError(f"values and strata must both have shape {groups.low.shape} (one per sample); got "
                         f"{v.shape} and {s.shape}")
    for name, count in (("n_perm", n_perm), ("n_boot", n_boot)):
        if not isinstance(count, int) or count < 100:
            raise ValueError(f"{name} must be an integer >= 100; got {count!r}")
    rng = np.random.default_rng(seed)
    parts = [(c.item(), v[(s == c) & groups.low], v[(s == c) & groups.high]) for c in np.unique(s)]
    parts = [(c, lo, hi) for c, lo, hi in parts if lo.size and hi.size]
    if not parts:
        raise ValueError("no stratum holds samples of both groups: nothing to compare within strata")
    n_used = sum(lo.size + hi.size for _, lo, hi in parts)
    observed, null, boot = 0.0, np.zeros(n_perm), np.zeros(n_boot)
    resampled_mean = lambda a: a[rng.integers(0, a.size, (n_boot, a.size))].mean(1)  # noqa: E731
    for _, lo, hi in parts:
        weight = (lo.size + hi.size) / n_used
        observed += weight * (hi.mean() - lo.mean())
        shuffled = np.concatenate([lo, hi])[np.argsort(rng.random((n_perm, lo.size + hi.size)), axis=1)]
        null += weight * (shuffled[:, :hi.size].mean(1) - shuffled[:, hi.size:].mean(1))
        boot += weight * (resampled_mean(hi) - resampled_mean(lo))
    exceed = np.abs(null) >= abs(observed) - 1e-12 * max(1.0, abs(observed))
    lo95, hi95 = np.quantile(boot, [0.025, 0.975])
    return StratifiedTest(diff=float(observed), p=float((1 + exceed.sum()) / (1 + n_perm)),
                          ci95=(float(lo95), float(hi95)),
                          per_stratum={c: float(hi.mean() - lo.mean()) for c, lo, hi in parts}, n_perm=n_perm,
                          n_strata=len(parts), n=n_used)
