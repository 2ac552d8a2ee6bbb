"""Significance tests for comparing samplers: exact McNemar, Holm-Bonferroni, two-sample wrappers.

* :func:`mcnemar_exact`: paired binary outcomes on shared noise, e.g. "sample i is memorised under sampler A
  / under sampler B". Only the discordant pairs carry information; under the null each is equally likely
  to go either way, so ``n01 ~ Binomial(n01 + n10, 1/2)`` and the exact two-sided p-value is
  ``min(1, 2 * P(X <= min(n01, n10)))``.
* :func:`holm` / :func:`holm_reject`: Holm's step-down adjustment of a family of p-values (controls the
  family-wise error rate under any dependence).
* :func:`welch_test` / :func:`mann_whitney`: unpaired two-sample tests of ``b`` against ``a``. The
  statistics come from :mod:`kpe_lib.metrics.groups` (``welch_t``, ``mann_whitney_u``, shared with
  :func:`kpe_lib.metrics.groups.compare_groups`), the p-values from scipy.

Example:
    >>> res = mcnemar_exact([0, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1, 1])   # 6 discordant, all a -> b
    >>> (res.n01, res.n10, res.pvalue)
    (6, 0, 0.03125)
    >>> [round(p, 6) for p in holm([0.01, 0.04, 0.03, 0.005])]
    [0.03, 0.06, 0.06, 0.02]
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.stats
import torch

from kpe_lib.metrics._checks import as_vector
from kpe_lib.metrics.groups import mann_whitney_u, welch_t

__all__ = ["McNemarResult", "TwoSampleResult", "mcnemar_exact", "holm", "holm_reject", "welch_test",
           "mann_whitney"]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of paired binary outcomes.

    Attributes:
        pvalue: exact two-sided p-value, ``min(1, 2 * binom.cdf(min(n01, n10), n01 + n10, 0.5))``; 1 when
            there are no discordant pairs.
        n01: pairs with a false and b true.
        n10: pairs with a true and b false.
        n: number of pairs.
        prop_a: mean(a), the proportion of true outcomes under A.
        prop_b: mean(b).
        change: ``prop_b - prop_a`` (= ``(n01 - n10) / n``).
    """

    pvalue: float
    n01: int
    n10: int
    n: int
    prop_a: float
    prop_b: float
    change: float


@dataclass(frozen=True)
class TwoSampleResult:
    """An unpaired two-sample test of ``b`` against ``a``.

    Attributes:
        test: ``"welch"`` or ``"mann-whitney"``.
        statistic: Welch's t of ``mean(b) - mean(a)``, or the Mann-Whitney U of b against a (pairs with
            ``b_j > a_i``, ties counting one half).
        pvalue: two-sided p-value.
        difference: ``mean(b) - mean(a)`` (Welch) or ``median(b) - median(a)`` (Mann-Whitney).
        n_a: size of a.
        n_b: size of b.
        dof: Welch-Satterthwaite degrees of freedom (Welch only, else None).
    """

    test: str
    statistic: float
    pvalue: float
    difference: float
    n_a: int
    n_b: int
    dof: float | None = None


def _binary(x: ArrayLike, name: str) -> np.ndarray:
    """1-D bool array from a bool or 0/1 array (ValueError naming ``name`` for anything else)."""
    v = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if v.ndim != 1 or v.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D bool or 0/1 array with at least one entry, got shape {v.shape}")
    if v.dtype == np.bool_:
        return v
    if not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
        raise ValueError(f"{name} must hold bools or 0/1 values, got dtype {v.dtype}")
    if not np.isin(v, (0, 1)).all():
        bad = v[~np.isin(v, (0, 1))][:3]
        raise ValueError(f"{name} must hold only 0/1 (or bool) values, got e.g. {bad.tolist()}")
    return v.astype(bool)


def mcnemar_exact(a: ArrayLike, b: ArrayLike) -> McNemarResult:
    """Exact two-sided McNemar test for paired binary outcomes (same items, e.g. shared noise, under A and B).

    Args:
        a: (n,) bool or 0/1 outcomes under A.
        b: (n,) bool or 0/1 outcomes under B, paired with ``a`` item by item.

    Returns:
        McNemarResult(pvalue, n01, n10, n, prop_a, prop_b, change); ``n01`` counts a false / b true.

    Raises:
        ValueError: inputs that are not 1-D, empty, of different lengths, or not bool/0-1.

    Example:
        >>> mcnemar_exact([True, True, False], [True, True, False]).pvalue   # no discordant pairs
        1.0
    """
    x, y = _binary(a, "a"), _binary(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"b must have the same length as a ({x.shape[0]}, paired outcomes), got {y.shape[0]}")
    n01, n10 = int((~x & y).sum()), int((x & ~y).sum())
    disc = n01 + n10
    pvalue = 1.0 if disc == 0 else min(1.0, 2.0 * float(scipy.stats.binom.cdf(min(n01, n10), disc, 0.5)))
    n = int(x.shape[0])
    prop_a, prop_b = float(x.mean()), float(y.mean())
    return McNemarResult(pvalue=pvalue, n01=n01, n10=n10, n=n, prop_a=prop_a, prop_b=prop_b,
                         change=(n01 - n10) / n)


def _pvalues(pvalues: ArrayLike) -> np.ndarray:
    v = pvalues.detach().cpu().numpy() if isinstance(pvalues, torch.Tensor) else np.asarray(pvalues)
    if v.ndim != 1:
        raise ValueError(f"pvalues must be a 1-D sequence of p-values, got shape {v.shape}")
    if v.size and v.dtype.kind not in "iuf":
        raise ValueError(f"pvalues must hold numbers in [0, 1] or NaN, got dtype {v.dtype} ({v.tolist()[:3]!r})")
    p = v.astype(np.float64)
    ok = np.isnan(p) | ((p >= 0.0) & (p <= 1.0))
    if not ok.all():
        raise ValueError(f"pvalues must lie in [0, 1] (NaN allowed), got e.g. {p[~ok][:3].tolist()}")
    return p


def holm(pvalues: ArrayLike) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order.

    With the m non-NaN p-values sorted ascending, ``p_(1) <= ... <= p_(m)``, the adjusted value of the j-th
    is ``max_{i <= j} min(1, (m - i + 1) p_(i))`` (step-down, monotone in the sorted order, capped at 1).
    Reject at level alpha where the adjusted value is <= alpha. NaN entries stay NaN and are not counted
    in m. Ties get the same adjusted value.

    Args:
        pvalues: (m,) p-values in [0, 1] or NaN (list, numpy array or tensor).

    Returns:
        The adjusted p-values as a list of floats, aligned with the input.

    Raises:
        ValueError: not 1-D, non-numeric, or values outside [0, 1] (other than NaN).

    Example:
        >>> holm([0.02, float("nan"), 0.04])
        [0.04, nan, 0.04]
    """
    p = _pvalues(pvalues)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    if m:
        order = idx[np.argsort(p[idx], kind="stable")]
        scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
        out[order] = np.maximum.accumulate(scaled)
    return [float(v) for v in out]


def holm_reject(pvalues: ArrayLike, alpha: float = 0.05) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level ``alpha`` (NaN: never rejected).

    Args:
        pvalues: (m,) p-values in [0, 1] or NaN.
        alpha: family-wise error rate in (0, 1).

    Returns:
        A list of bools aligned with the input: ``holm(pvalues)[i] <= alpha``.

    Example:
        >>> holm_reject([0.01, 0.04, 0.03, 0.005], alpha=0.05)
        [True, False, False, True]
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a float in (0, 1), got {alpha!r}")
    return [bool(v <= alpha) for v in holm(pvalues)]  # NaN <= alpha is False


def _sample(x: ArrayLike, name: str, min_size: int) -> np.ndarray:
    v = as_vector(x if isinstance(x, (torch.Tensor, np.ndarray)) else np.asarray(x, dtype=np.float64), name)
    if v.shape[0] < min_size:
        raise ValueError(f"{name} must have at least {min_size} values, got {v.shape[0]}")
    return v


def welch_test(a: ArrayLike, b: ArrayLike) -> TwoSampleResult:
    """Welch's unequal-variance t test of ``mean(b) - mean(a)`` (two-sided).

    ``t`` and the Welch-Satterthwaite dof are :func:`kpe_lib.metrics.groups.welch_t`; the p-value is
    ``2 * scipy.stats.t.sf(|t|, dof)`` (equal to ``scipy.stats.ttest_ind(b, a, equal_var=False)``). When
    both samples are constant, t is 0 (p = 1) for equal means and +-inf (p = 0) otherwise, where scipy
    gives NaN.

    Args:
        a: (n_a,) values, n_a >= 2.
        b: (n_b,) values, n_b >= 2.

    Returns:
        TwoSampleResult(test="welch", statistic=t, pvalue, difference=mean(b) - mean(a), n_a, n_b, dof).

    Example:
        >>> r = welch_test([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0])
        >>> (r.difference, round(r.statistic, 4), round(r.dof, 1))
        (2.0, 2.1909, 6.0)
    """
    x, y = _sample(a, "a", 2), _sample(b, "b", 2)
    t, dof = welch_t(x, y)
    pvalue = float(2.0 * scipy.stats.t.sf(abs(t), dof)) if math.isfinite(t) else 0.0
    return TwoSampleResult(test="welch", statistic=t, pvalue=pvalue, difference=float(y.mean() - x.mean()),
                           n_a=int(x.size), n_b=int(y.size), dof=dof)


def mann_whitney(a: ArrayLike, b: ArrayLike) -> TwoSampleResult:
    """Mann-Whitney U test of ``b`` against ``a`` (two-sided, ``scipy.stats.mannwhitneyu``'s default method).

    U is :func:`kpe_lib.metrics.groups.mann_whitney_u` (pairs with ``b_j > a_i``, ties one half), equal to
    scipy's statistic for ``mannwhitneyu(b, a)``.

    Args:
        a: (n_a,) values, n_a >= 1.
        b: (n_b,) values, n_b >= 1.

    Returns:
        TwoSampleResult(test="mann-whitney", statistic=U, pvalue, difference=median(b) - median(a), n_a, n_b).

    Example:
        >>> r = mann_whitney([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
        >>> (r.statistic, r.pvalue, r.difference)
        (9.0, 0.1, 3.0)
    """
    x, y = _sample(a, "a", 1), _sample(b, "b", 1)
    u = mann_whitney_u(x, y)
    pvalue = float(scipy.stats.mannwhitneyu(y, x, alternative="two-sided").pvalue)
    return TwoSampleResult(test="mann-whitney", statistic=u, pvalue=pvalue,
                           difference=float(np.median(y) - np.median(x)), n_a=int(x.size), n_b=int(y.size))
