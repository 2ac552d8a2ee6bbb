"""Kernel Inception Distance (KID): the unbiased polynomial-kernel MMD^2 and its bootstrap (Mathematics §5.4).

KID (Binkowski et al., 2018, "Demystifying MMD GANs") is the unbiased estimator of the squared maximum
mean discrepancy between the real features ``x_1..x_n`` and the generated features ``y_1..y_m`` under the
polynomial kernel ``k(x, y) = (gamma <x, y> + coef)^degree`` (``gamma = 1 / d`` by default, degree 3,
coef 1):

``MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
- 2 sum_{i, j} k(x_i, y_j) / (n m)``.

The within-set sums leave out the diagonal ``i == j`` (a U-statistic), so the estimate is unbiased and can
be negative when the two distributions are equal. Everything is computed in float64 with torch, in row
blocks, so only a ``block x block`` kernel tile is held by :func:`kid`.

Bootstrap resamples repeat rows. **Convention:** on a resample ``y_{I_1}..y_{I_m}`` of the generated rows
the within-set sum runs over the position pairs whose *original* rows differ (``I_i != I_j``), normalised by
their number ``m^2 - sum_p c_p^2`` (``c_p``: how often row p was drawn). Pairs that repeat one original row
would contribute ``k(y_p, y_p)``, which is not a draw of ``k(y, y')`` for independent ``y, y'``, and would
inflate a resampled KID by about ``(mean_p k(y_p, y_p) - mean_{p != q} k(y_p, y_q)) / m`` (measured: twice
the bootstrap standard deviation for m = 500 Gaussian features in 8 dimensions, so an interval of a KID
of two equal distributions would miss 0). Without a repeat, the resample estimator is :func:`kid` itself.

Example:
    >>> real = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    >>> fake = torch.tensor([[2.0], [3.0]], dtype=torch.float64)
    >>> kid(real, fake, degree=1, gamma=1.0)   # (1) + (7) - 2 * (1 + 1 + 3 + 4) / 4
    3.5
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
import torch

from kpe_lib.metrics._checks import as_features, check_level, check_positive_int, check_same_dim

__all__ = ["KIDResult", "kid", "kid_with_ci", "resampled_kid", "CachedKID", "resample_counts", "kernel_params",
           "within_kernel_mean"]

# rows per block of the kernel sums and replicates per batch of the cached bootstrap
_BLOCK = 2048
_REP_BATCH = 64

Array = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class KIDResult:
    """KID on the full sets with a bootstrap interval over the generated set.

    Attributes:
        value: KID (unbiased MMD^2) of the full real and generated sets.
        stderr: standard deviation (ddof = 1) of the bootstrap replicates.
        ci: (lo, hi) percentile interval of the replicates.
        level: coverage of ``ci``.
        n_boot: number of resamples of the generated set.
        n_real: number of real rows n.
        n_fake: number of generated rows m.
        degree: kernel degree.
        gamma: kernel scale used (``1 / d`` when not given).
        coef: kernel offset.
    """

    value: float
    stderr: float
    ci: tuple[float, float]
    level: float
    n_boot: int
    n_real: int
    n_fake: int
    degree: int
    gamma: float
    coef: float


def kernel_params(d: int, degree: int, gamma: float | None, coef: float) -> tuple[int, float, float]:
    """Validated kernel parameters ``(degree, gamma, coef)``; ``gamma`` None becomes ``1 / d``."""
    check_positive_int(degree, "degree")
    if gamma is None:
        gamma = 1.0 / d
    elif isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not (math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be None (1 / d) or a finite float > 0, got {gamma!r}")
    if isinstance(coef, bool) or not isinstance(coef, numbers.Real) or not (math.isfinite(coef) and coef >= 0):
        raise ValueError(f"coef must be a finite float >= 0, got {coef!r}")
    return degree, float(gamma), float(coef)


# ----------------------------------------------------------------------------------------------- kernel
def _kernel(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    """(len(x), len(y)) polynomial kernel matrix ``(gamma x y^T + coef)^degree`` in float64."""
    return (gamma * (x @ y.T) + coef).pow(degree)


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float) -> float:
    """``sum_{i, j} k(x_i, y_j)`` over row blocks."""
    total = 0.0
    for s in range(0, x.shape[0], _BLOCK):
        xs = x[s:s + _BLOCK]
        for t in range(0, y.shape[0], _BLOCK):
            total += float(_kernel(xs, y[t:t + _BLOCK], degree, gamma, coef).sum())
    return total


def _kernel_diag_sum(x: torch.Tensor, degree: int, gamma: float, coef: float) -> float:
    """``sum_i k(x_i, x_i)``."""
    return float((gamma * x.pow(2).sum(1) + coef).pow(degree).sum())


def within_kernel_mean(x: torch.Tensor, degree: int, gamma: float, coef: float) -> float:
    """``sum_{i != j} k(x_i, x_j) / (n (n - 1))``."""
    n = x.shape[0]
    return (_kernel_sum(x, x, degree, gamma, coef) - _kernel_diag_sum(x, degree, gamma, coef)) / (n * (n - 1))


def kid(real_feats: Array, fake_feats: Array, degree: int = 3, gamma: float | None = None,
        coef: float = 1.0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 with the polynomial kernel (Binkowski et al., 2018).

    ``k(x, y) = (gamma <x, y> + coef)^degree``; within-set diagonals ``i == j`` are excluded (U-statistic),
    so the value is unbiased for the population MMD^2 and may be slightly negative for equal distributions.
    Computed in float64 with torch over row blocks (memory O(block^2) whatever n and m). For resampled rows
    use :func:`resampled_kid`, which leaves out pairs that repeat one original row (module docstring).

    Args:
        real_feats: (n, d) reference features, n >= 2 (torch tensor or numpy array).
        fake_feats: (m, d) generated features, m >= 2.
        degree: kernel degree (integer >= 1), 3 for KID.
        gamma: kernel scale > 0; None (default) uses ``1 / d``.
        coef: kernel offset >= 0, 1 for KID.

    Returns:
        The KID as a float.

    Raises:
        ValueError: inputs that are not 2-D, with fewer than 2 rows, non-finite, of different d, or bad
            kernel parameters.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(500, 8, generator=g)
        >>> abs(kid(x, torch.randn(500, 8, generator=g))) < 0.05
        True
        >>> kid(x, torch.randn(500, 8, generator=g) + 1.0) > 1.0
        True
    """
    x, y = as_features(real_feats, "real_feats"), as_features(fake_feats, "fake_feats")
    check_same_dim(x, y, "real_feats", "fake_feats")
    degree, gamma, coef = kernel_params(x.shape[1], degree, gamma, coef)
    n, m = x.shape[0], y.shape[0]
    return (within_kernel_mean(x, degree, gamma, coef) + within_kernel_mean(y, degree, gamma, coef)
            - 2.0 * _kernel_sum(x, y, degree, gamma, coef) / (n * m))


# ----------------------------------------------------------------------------------- cached bootstrap
class CachedKID:
    """KID of a fixed real set against resamples of one generated set, from kernels computed once.

    With ``c`` the counts of each generated row in a resample (``c = bincount(idx)``), the resampled KID is
    ``K_rr + (c^T K_ff c - (c * c) . diag(K_ff)) / (m^2 - c . c) - 2 (colsum(K_rf) . c) / (n m)``: ``c^T K_ff c``
    sums all position pairs of the resample and ``(c * c) . diag`` removes those that repeat one original
    row (module docstring). Holds the (m, m) matrix K_ff in float64 (8 m^2 bytes).
    """

    def __init__(self, real_term: float, x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float):
        self.n, self.m = x.shape[0], y.shape[0]
        self.real_term = real_term
        self.kff = torch.empty(self.m, self.m, dtype=torch.float64, device=y.device)
        for s in range(0, self.m, _BLOCK):
            self.kff[s:s + _BLOCK] = _kernel(y[s:s + _BLOCK], y, degree, gamma, coef)
        self.diag = self.kff.diagonal().clone()
        self.cross = torch.zeros(self.m, dtype=torch.float64, device=y.device)
        for s in range(0, self.n, _BLOCK):
            self.cross += _kernel(x[s:s + _BLOCK], y, degree, gamma, coef).sum(0)
        self.value = float(self(torch.ones(1, self.m, dtype=torch.float64))[0])

    def __call__(self, counts: torch.Tensor) -> np.ndarray:
        """KID of each resample, ``counts`` (B, m) float64 -> (B,) numpy (computed on the kernels' device)."""
        m, n = self.m, self.n
        counts = counts.to(self.kff.device)
        quad = ((counts @ self.kff) * counts).sum(1)
        pairs = m * m - (counts * counts).sum(1)
        fake_term = (quad - (counts * counts) @ self.diag) / pairs
        return (self.real_term + fake_term - 2.0 * (counts @ self.cross) / (n * m)).cpu().numpy()


def resample_counts(rng: np.random.Generator, n_boot: int, m: int):
    """Bootstrap resamples as row counts: yield (B, m) float64 count batches of ``n_boot`` resamples ``rng.integers(0, m, size=m)``, in order."""
    for s in range(0, n_boot, _REP_BATCH):
        b = min(_REP_BATCH, n_boot - s)
        yield torch.from_numpy(np.stack([np.bincount(rng.integers(0, m, size=m), minlength=m)
                                         for _ in range(b)]).astype(np.float64))


def kid_with_ci(real_feats: Array, fake_feats: Array, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                degree: int = 3, gamma: float | None = None, coef: float = 1.0,
                device: str | torch.device | None = None) -> KIDResult:
    """KID on the full sets with a bootstrap interval over the generated set.

    Only the generated rows are resampled (with replacement, ``numpy.random.default_rng(seed)``); the real
    set stays fixed, so the interval reflects the sampling of generated images only, not of the reference
    set (with a finite reference it is too narrow when the distributions differ). Each replicate is
    :func:`resampled_kid` (pairs repeating one original row left out). Kernels are computed once: memory
    8 m^2 bytes, each replicate O(m^2).

    Args:
        real_feats: (n, d) reference features, n >= 2.
        fake_feats: (m, d) generated features, m >= 2.
        n_boot: number of resamples (integer >= 1; stderr and ci are NaN with fewer than 2).
        seed: resampling seed.
        level: interval coverage in (0, 1).
        degree, gamma, coef: the kernel, as in :func:`kid`.
        device: where the kernels and the replicates are computed (None: the CPU, as always); the
            resampling indices are drawn on the CPU with numpy either way, so devices agree to rounding.

    Returns:
        KIDResult(value, stderr, ci, level, n_boot, n_real, n_fake, degree, gamma, coef).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = kid_with_ci(torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g), n_boot=200)
        >>> res.ci[0] <= 0.0 <= res.ci[1]
        True
    """
    x, y = as_features(real_feats, "real_feats"), as_features(fake_feats, "fake_feats")
    check_same_dim(x, y, "real_feats", "fake_feats")
    degree, gamma, coef = kernel_params(x.shape[1], degree, gamma, coef)
    check_positive_int(n_boot, "n_boot")
    level = check_level(level)
    if device is not None:
        x, y = x.to(device), y.to(device)
    cache = CachedKID(within_kernel_mean(x, degree, gamma, coef), x, y, degree, gamma, coef)
    rng = np.random.default_rng(seed)
    reps = np.concatenate([cache(c) for c in resample_counts(rng, n_boot, cache.m)])
    nan = float("nan")
    stderr, ci = nan, (nan, nan)
    if reps.size >= 2:
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
        stderr, ci = float(reps.std(ddof=1)), (float(lo), float(hi))
    return KIDResult(value=float(cache.value), stderr=stderr, ci=ci, level=level, n_boot=n_boot, n_real=cache.n,
                     n_fake=cache.m, degree=degree, gamma=gamma, coef=coef)


def resampled_kid(real_feats: Array, fake_feats: Array, idx: Array, degree: int = 3, gamma: float | None = None,
                  coef: float = 1.0) -> float:
    """KID of ``real_feats`` against the resample ``fake_feats[idx]`` under the distinct-row convention.

    The brute-force definition behind :func:`kid_with_ci` and :func:`kpe_lib.metrics.paired.paired_kid_change`
    (module docstring): within the resample only position pairs drawn from different original rows count.

    Args:
        real_feats: (n, d) reference features, n >= 2.
        fake_feats: (m, d) generated features, m >= 2.
        idx: (m',) integer row indices into ``fake_feats`` with at least two distinct values.
        degree, gamma, coef: the kernel, as in :func:`kid`.

    Example:
        >>> x, y = torch.randn(20, 3), torch.randn(30, 3)
        >>> abs(resampled_kid(x, y, torch.arange(30)) - kid(x, y)) < 1e-12
        True
    """
    x, y = as_features(real_feats, "real_feats"), as_features(fake_feats, "fake_feats")
    check_same_dim(x, y, "real_feats", "fake_feats")
    degree, gamma, coef = kernel_params(x.shape[1], degree, gamma, coef)
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long).reshape(-1)
    if idx.numel() < 2 or idx.unique().numel() < 2 or int(idx.min()) < 0 or int(idx.max()) >= y.shape[0]:
        raise ValueError(f"idx must hold at least two distinct row indices in [0, {y.shape[0]}), got {idx.tolist()[:8]}")
    ys = y[idx]
    k = _kernel(ys, ys, degree, gamma, coef)
    distinct = idx.unsqueeze(0) != idx.unsqueeze(1)
    fake_term = float(k[distinct].sum()) / int(distinct.sum())
    return (within_kernel_mean(x, degree, gamma, coef) + fake_term
            - 2.0 * _kernel_sum(x, ys, degree, gamma, coef) / (x.shape[0] * ys.shape[0]))
