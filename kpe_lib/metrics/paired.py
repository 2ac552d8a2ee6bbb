"""Paired bootstrap changes of set statistics (FID, KID) between two samplers run on the same noise
(Mathematics §5.7).

Two sampler configurations started from the same noise vectors give paired generated sets: row i of both
comes from noise vector i. A change of a set statistic (FID, KID) between them is bootstrapped by drawing
one index vector per replicate and applying it to both sets, with the reference set held fixed.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> real, z = torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g)
    >>> res = paired_kid_change(real, z, z + 0.5, n_boot=50)
    >>> res.change > 0 and res.ci[0] > 0
    True
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kpe_lib.metrics._checks import as_features, check_level, check_positive_int, check_same_dim
from kpe_lib.metrics.kid import Array, CachedKID, kernel_params, resample_counts, within_kernel_mean

__all__ = ["PairedChange", "paired_set_change", "paired_kid_change"]


@dataclass(frozen=True)
class PairedChange:
    """Change of a set statistic between two samplers run on the same noise, with a paired bootstrap.

    Attributes:
        value_a: statistic of (real, feats_a) on the full sets.
        value_b: statistic of (real, feats_b) on the full sets.
        change: ``value_b - value_a``.
        ci: (lo, hi) percentile interval of the replicate changes at ``level``.
        level: coverage of ``ci``.
        n_boot: number of resamples asked for (replicates whose change is not finite are left out).
        pvalue: two-sided bootstrap p-value ``min(1, 2 min(P*(change* <= 0), P*(change* >= 0)))`` over the
            replicates; 0 means no replicate reached 0, i.e. p < 1 / n_boot.
        n: number of paired rows (noise vectors).
        stderr: standard deviation (ddof = 1) of the replicate changes.
        bias: mean of the replicate changes minus ``change``.
    """

    value_a: float
    value_b: float
    change: float
    ci: tuple[float, float]
    level: float
    n_boot: int
    pvalue: float
    n: int
    stderr: float
    bias: float


def _summarise_change(value_a: float, value_b: float, changes: np.ndarray, n_boot: int, level: float,
                      n: int) -> PairedChange:
    change = float(value_b - value_a)
    reps = changes[np.isfinite(changes)]
    nan = float("nan")
    if reps.size < 2:
        return PairedChange(value_a=float(value_a), value_b=float(value_b), change=change, ci=(nan, nan),
                            level=level, n_boot=n_boot, pvalue=nan, n=n, stderr=nan, bias=nan)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    pvalue = min(1.0, 2.0 * min(float(np.mean(reps <= 0.0)), float(np.mean(reps >= 0.0))))
    return PairedChange(value_a=float(value_a), value_b=float(value_b), change=change, ci=(float(lo), float(hi)),
                        level=level, n_boot=n_boot, pvalue=pvalue, n=n, stderr=float(reps.std(ddof=1)),
                        bias=float(reps.mean() - change))


def _check_paired(real_feats: Array | None, feats_a: Array, feats_b: Array, n_boot: int, level: float
                  ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, float]:
    a, b = as_features(feats_a, "feats_a"), as_features(feats_b, "feats_b")
    check_same_dim(a, b, "feats_a", "feats_b")
    x = None
    if real_feats is not None:
        x = as_features(real_feats, "real_feats")
        check_same_dim(x, a, "real_feats", "feats_a")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"feats_b must have as many rows as feats_a ({a.shape[0]}, one per shared noise vector), "
                         f"got {b.shape[0]}")
    check_positive_int(n_boot, "n_boot")
    return x, a, b, check_level(level)


def _as_given(x: Array) -> Array:
    """The rows of a validated 2-D input in its own type (numpy stays numpy, a tensor goes to CPU)."""
    return x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x)


def paired_set_change(stat: Callable[[Array, Array], float], real_feats: Array | None, feats_a: Array, feats_b: Array,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> PairedChange:
    """Paired bootstrap of the change ``stat(real, b) - stat(real, a)`` of a set statistic (FID, KID, ...).

    ``feats_a[i]`` and ``feats_b[i]`` must come from the same noise vector i (two samplers on shared noise).
    Each replicate draws one index vector ``idx = rng.integers(0, n, size=n)``
    (``rng = numpy.random.default_rng(seed)``) and applies it to both sets, which keeps the pairing; the
    reference set stays fixed. The replicate change is ``stat(real, feats_b[idx]) - stat(real, feats_a[idx])``.
    The interval is the percentile interval of the replicate changes, and the p-value is the two-sided
    bootstrap p ``min(1, 2 min(frac(change* <= 0), frac(change* >= 0)))`` (1 when every replicate change is
    0, e.g. for identical sets; 0 when none reaches 0, i.e. p < 1 / n_boot). Replicates whose change is
    not finite are left out. Resampled sets repeat rows, which moves a set statistic such as FID (whose
    covariance shrinks); ``bias`` reports the mean shift of the change. Each replicate costs two calls of ``stat``; for KID use
    :func:`paired_kid_change` (same numbers, kernels cached).

    Args:
        stat: ``stat(real, fake) -> float``; it gets ``real_feats`` and the resampled rows of ``feats_a`` /
            ``feats_b``, each as a 2-D array of the type given (numpy stays numpy, tensors are on CPU).
        real_feats: (n_ref, d) reference features, n_ref >= 2, held fixed; None when ``stat`` carries its
            reference itself (e.g. FID against cached reference statistics), it then gets None.
        feats_a: (n, d) features of sampler A, n >= 2.
        feats_b: (n, d) features of sampler B on the same noise, row for row.
        n_boot: number of paired resamples (integer >= 1; ci, stderr and pvalue are NaN with fewer than 2).
        seed: resampling seed.
        level: interval coverage in (0, 1).

    Returns:
        PairedChange(value_a, value_b, change, ci, level, n_boot, pvalue, n, stderr, bias).

    Raises:
        ValueError: a non-callable stat, inputs that are not 2-D or have fewer than 2 rows, different d,
            feats_a and feats_b of different lengths, n_boot < 1, level outside (0, 1).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real, z = torch.randn(100, 3, generator=g), torch.randn(100, 3, generator=g)
        >>> from kpe_lib.metrics.kid import kid
        >>> res = paired_set_change(kid, real, z, z + 0.5, n_boot=50)
        >>> res.change > 0 and res.ci[0] > 0 and res.pvalue == 0.0
        True
    """
    if not callable(stat):
        raise ValueError(f"stat must be a callable stat(real, fake) -> float, got {type(stat).__name__}")
    _, a, _, level = _check_paired(real_feats, feats_a, feats_b, n_boot, level)
    real = None if real_feats is None else _as_given(real_feats)
    fa, fb = _as_given(feats_a), _as_given(feats_b)
    n = a.shape[0]
    value_a, value_b = float(stat(real, fa)), float(stat(real, fb))
    rng = np.random.default_rng(seed)
    changes = np.empty(n_boot)
    for r in range(n_boot):
        idx = rng.integers(0, n, size=n)
        changes[r] = float(stat(real, fb[idx])) - float(stat(real, fa[idx]))
    return _summarise_change(value_a, value_b, changes, n_boot, level, n)


def paired_kid_change(real_feats: Array, feats_a: Array, feats_b: Array, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0, device: str | torch.device | None = None) -> PairedChange:
    """:func:`paired_set_change` with ``stat = kid``, from kernel matrices computed once.

    The real-real term is a constant; ``k(fake, fake)`` (n x n, for a and for b) and the column sums of
    ``k(real, fake)`` are computed once and each resample is read from them through the counts of its rows,
    leaving out the pairs that repeat one original row (:func:`kpe_lib.metrics.kid.resampled_kid`). Same
    resamples as :func:`paired_set_change` for the same seed, so it equals
    ``paired_set_change(stat, ...)`` with ``stat`` on a resample given by ``resampled_kid`` (to rounding). Memory 16 n^2 bytes (two n x n float64 matrices), each
    replicate O(n^2) instead of O((n_ref + n)^2 d).

    Args:
        real_feats: (n_ref, d) reference features, n_ref >= 2.
        feats_a: (n, d) features of sampler A, n >= 2.
        feats_b: (n, d) features of sampler B on the same noise, row for row.
        n_boot: number of paired resamples (integer >= 1).
        seed: resampling seed.
        level: interval coverage in (0, 1).
        degree, gamma, coef: the kernel, as in :func:`kid` (gamma = 1 / d by default).
        device: where kernels and replicates are computed (None: the CPU); the resamples are the same.

    Returns:
        PairedChange(value_a, value_b, change, ci, level, n_boot, pvalue, n, stderr, bias).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real, z = torch.randn(200, 3, generator=g), torch.randn(200, 3, generator=g)
        >>> res = paired_kid_change(real, z, z, n_boot=50)
        >>> (res.change, res.pvalue)
        (0.0, 1.0)
    """
    x, a, b, level = _check_paired(real_feats, feats_a, feats_b, n_boot, level)
    degree, gamma, coef = kernel_params(x.shape[1], degree, gamma, coef)
    if device is not None:
        x, a, b = x.to(device), a.to(device), b.to(device)
    real_term = within_kernel_mean(x, degree, gamma, coef)
    cache_a = CachedKID(real_term, x, a, degree, gamma, coef)
    cache_b = CachedKID(real_term, x, b, degree, gamma, coef)
    rng = np.random.default_rng(seed)
    changes = np.concatenate([cache_b(c) - cache_a(c) for c in resample_counts(rng, n_boot, a.shape[0])])
    return _summarise_change(cache_a.value, cache_b.value, changes, n_boot, level, a.shape[0])
