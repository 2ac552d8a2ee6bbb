"""Kernel Inception Distance (KID) and paired bootstrap changes of set statistics (FID, KID).

KID (Binkowski et al., 2018, "Demystifying MMD GANs") is the unbiased estimator of the squared maximum
mean discrepancy between the real features ``x_1..x_n`` and the generated features ``y_1..y_m`` under the
polynomial kernel ``k(x, y) = (gamma <x, y> + coef)^degree`` (``gamma = 1 / d`` by default, degree 3,
coef 1):

``MMD^2_u = sum_{i != j} k(x_i, x_j) / (n (n - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
- 2 sum_{i, j} k(x_i, y_j) / (n m)``.

The within-set sums leave out the diagonal ``i == j`` (a U-statistic), so the estimate is unbiased and can
be negative when the two distributions are equal. Everything is computed in float64 with torch, in row
blocks, so only a ``block x block`` kernel tile is held by :func:`kid`.

Bootstrap resamples repeat rows. **Convention:** on a resample ``y_{I_1}..y_{I_m}`` the estimator is applied
to the resampled rows as they stand: only the positions ``i == j`` *of the resample* are left out, while
pairs ``i != j`` that repeat one original row (``I_i == I_j``) stay in and contribute ``k(y_p, y_p)``. This
is exactly ``kid(real, fake[idx])``. Those self-pairs make a resampled KID larger on average by about
``(mean_p k(y_p, y_p) - mean_{p != q} k(y_p, y_q)) / m`` (about 0.017 for m = 500 standard Gaussian features
in 8 dimensions, twice the bootstrap standard deviation there), so

* :func:`kid_with_ci` recentres its percentile interval on the full-set value (``bias`` is reported);
* :func:`paired_set_change` / :func:`paired_kid_change` report the raw percentile interval and p-value
  of the change as specified; the inflation of ``a`` and ``b`` largely cancels in ``b - a`` but not
  entirely when the samplers differ in spread (``bias`` is reported: compare it to ``stderr``).

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
from typing import Callable

import numpy as np
import torch

from kpe_lib.metrics._checks import as_matrix, check_positive_int

__all__ = ["KIDResult", "PairedChange", "kid", "kid_with_ci", "paired_set_change", "paired_kid_change"]

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
        ci: (lo, hi) percentile interval of the replicates, recentred on ``value`` (shifted by ``-bias``).
        level: coverage of ``ci``.
        n_boot: number of resamples of the generated set.
        bias: mean of the replicates minus ``value`` (the self-pair inflation of resamples, module docstring).
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
    bias: float
    n_real: int
    n_fake: int
    degree: int
    gamma: float
    coef: float


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


# ----------------------------------------------------------------------------------------------- checks
def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    return float(level)


def _features(x: Array, name: str, min_rows: int = 2) -> torch.Tensor:
    """(n, d) float64 CPU tensor of a 2-D tensor/array with n >= min_rows rows (ValueError naming ``name``)."""
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) tensor or array, got shape {tuple(x.shape)}")
    t = as_matrix(x, name)
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows (n >= {min_rows}) for the unbiased estimator, "
                         f"got {t.shape[0]}")
    return t.to(torch.float64)


def _same_dim(x: torch.Tensor, y: torch.Tensor, name_x: str, name_y: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name_y} must have the same number of features d as {name_x} ({x.shape[1]}), "
                         f"got {y.shape[1]}")


def _kernel_params(d: int, degree: int, gamma: float | None, coef: float) -> tuple[int, float, float]:
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


def _within_mean(x: torch.Tensor, degree: int, gamma: float, coef: float) -> float:
    """``sum_{i != j} k(x_i, x_j) / (n (n - 1))``."""
    n = x.shape[0]
    return (_kernel_sum(x, x, degree, gamma, coef) - _kernel_diag_sum(x, degree, gamma, coef)) / (n * (n - 1))


def kid(real_feats: Array, fake_feats: Array, degree: int = 3, gamma: float | None = None,
        coef: float = 1.0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 with the polynomial kernel (Binkowski et al., 2018).

    ``k(x, y) = (gamma <x, y> + coef)^degree``; within-set diagonals ``i == j`` are excluded (U-statistic),
    so the value is unbiased for the population MMD^2 and may be slightly negative for equal distributions.
    Computed in float64 with torch over row blocks (memory O(block^2) whatever n and m). Called on
    resampled rows (bootstrap), only the positions ``i == j`` of the resample are excluded (module docstring).

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
    x, y = _features(real_feats, "real_feats"), _features(fake_feats, "fake_feats")
    _same_dim(x, y, "real_feats", "fake_feats")
    degree, gamma, coef = _kernel_params(x.shape[1], degree, gamma, coef)
    n, m = x.shape[0], y.shape[0]
    return (_within_mean(x, degree, gamma, coef) + _within_mean(y, degree, gamma, coef)
            - 2.0 * _kernel_sum(x, y, degree, gamma, coef) / (n * m))


# ----------------------------------------------------------------------------------- cached bootstrap
class _CachedKID:
    """KID of a fixed real set against resamples of one generated set, from kernels computed once.

    With ``c`` the counts of each generated row in a resample (``c = bincount(idx)``), the resampled KID is
    ``K_rr + (c^T K_ff c - c . diag(K_ff)) / (m (m - 1)) - 2 (colsum(K_rf) . c) / (n m)``: ``c^T K_ff c`` sums
    all position pairs of the resample, ``c . diag`` removes exactly the positions ``i == j``. Holds the
    (m, m) matrix K_ff in float64 (8 m^2 bytes).
    """

    def __init__(self, real_term: float, x: torch.Tensor, y: torch.Tensor, degree: int, gamma: float, coef: float):
        self.n, self.m = x.shape[0], y.shape[0]
        self.real_term = real_term
        self.kff = torch.empty(self.m, self.m, dtype=torch.float64)
        for s in range(0, self.m, _BLOCK):
            self.kff[s:s + _BLOCK] = _kernel(y[s:s + _BLOCK], y, degree, gamma, coef)
        self.diag = self.kff.diagonal().clone()
        self.cross = torch.zeros(self.m, dtype=torch.float64)
        for s in range(0, self.n, _BLOCK):
            self.cross += _kernel(x[s:s + _BLOCK], y, degree, gamma, coef).sum(0)
        m, n = self.m, self.n
        self.value = float(real_term + (float(self.kff.sum()) - float(self.diag.sum())) / (m * (m - 1))
                           - 2.0 * float(self.cross.sum()) / (n * m))

    def __call__(self, counts: torch.Tensor) -> np.ndarray:
        """KID of each resample, ``counts`` (B, m) float64 -> (B,) numpy."""
        m, n = self.m, self.n
        quad = ((counts @ self.kff) * counts).sum(1)
        fake_term = (quad - counts @ self.diag) / (m * (m - 1))
        return (self.real_term + fake_term - 2.0 * (counts @ self.cross) / (n * m)).numpy()


def _draw_counts(rng: np.random.Generator, n_boot: int, m: int):
    """Yield (B, m) float64 count batches of ``n_boot`` resamples ``rng.integers(0, m, size=m)``, in order."""
    for s in range(0, n_boot, _REP_BATCH):
        b = min(_REP_BATCH, n_boot - s)
        yield torch.from_numpy(np.stack([np.bincount(rng.integers(0, m, size=m), minlength=m)
                                         for _ in range(b)]).astype(np.float64))


def kid_with_ci(real_feats: Array, fake_feats: Array, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> KIDResult:
    """KID on the full sets with a bootstrap interval over the generated set.

    Only the generated rows are resampled (with replacement, ``numpy.random.default_rng(seed)``); the real
    set stays fixed, so the interval reflects the sampling of generated images only, not of the reference
    set (with a finite reference it is too narrow when the distributions differ). Resamples keep their
    repeated-row pairs (module docstring), which inflates them by ``bias`` on average; the reported
    interval is the percentile interval of the replicates shifted by ``-bias`` (recentred on ``value``):
    on equal distributions the raw percentile interval covers 0 far less often than ``level`` says.
    Kernels are computed once: memory 8 m^2 bytes, each replicate O(m^2).

    Args:
        real_feats: (n, d) reference features, n >= 2.
        fake_feats: (m, d) generated features, m >= 2.
        n_boot: number of resamples (integer >= 1; stderr and ci are NaN with fewer than 2).
        seed: resampling seed.
        level: interval coverage in (0, 1).
        degree, gamma, coef: the kernel, as in :func:`kid`.

    Returns:
        KIDResult(value, stderr, ci, level, n_boot, bias, n_real, n_fake, degree, gamma, coef).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> res = kid_with_ci(torch.randn(500, 8, generator=g), torch.randn(500, 8, generator=g), n_boot=200)
        >>> res.ci[0] <= 0.0 <= res.ci[1] and res.bias > 0
        True
    """
    x, y = _features(real_feats, "real_feats"), _features(fake_feats, "fake_feats")
    _same_dim(x, y, "real_feats", "fake_feats")
    degree, gamma, coef = _kernel_params(x.shape[1], degree, gamma, coef)
    check_positive_int(n_boot, "n_boot")
    level = _check_level(level)
    cache = _CachedKID(_within_mean(x, degree, gamma, coef), x, y, degree, gamma, coef)
    rng = np.random.default_rng(seed)
    reps = np.concatenate([cache(c) for c in _draw_counts(rng, n_boot, cache.m)])
    value = float(cache.value)
    nan = float("nan")
    if reps.size < 2:
        stderr, ci, bias = nan, (nan, nan), nan
    else:
        bias = float(reps.mean() - value)
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
        stderr, ci = float(reps.std(ddof=1)), (float(lo - bias), float(hi - bias))
    return KIDResult(value=value, stderr=stderr, ci=ci, level=level, n_boot=n_boot, bias=bias, n_real=cache.n,
                     n_fake=cache.m, degree=degree, gamma=gamma, coef=coef)


# ------------------------------------------------------------------------------------ paired changes
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


def _check_paired(real_feats: Array, feats_a: Array, feats_b: Array, n_boot: int, level: float
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    x = _features(real_feats, "real_feats")
    a, b = _features(feats_a, "feats_a"), _features(feats_b, "feats_b")
    _same_dim(x, a, "real_feats", "feats_a")
    _same_dim(x, b, "real_feats", "feats_b")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"feats_b must have as many rows as feats_a ({a.shape[0]}, one per shared noise vector), "
                         f"got {b.shape[0]}")
    check_positive_int(n_boot, "n_boot")
    return x, a, b, _check_level(level)


def _as_given(x: Array) -> Array:
    """The rows of a validated 2-D input in its own type (numpy stays numpy, a tensor goes to CPU)."""
    return x.detach().cpu() if isinstance(x, torch.Tensor) else np.asarray(x)


def paired_set_change(stat: Callable[[Array, Array], float], real_feats: Array, feats_a: Array, feats_b: Array,
                      n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> PairedChange:
    """Paired bootstrap of the change ``stat(real, b) - stat(real, a)`` of a set statistic (FID, KID, ...).

    ``feats_a[i]`` and ``feats_b[i]`` must come from the same noise vector i (two samplers on shared noise).
    Each replicate draws one index vector ``idx = rng.integers(0, n, size=n)``
    (``rng = numpy.random.default_rng(seed)``) and applies it to both sets, which keeps the pairing; the
    reference set stays fixed. The replicate change is ``stat(real, feats_b[idx]) - stat(real, feats_a[idx])``.
    The interval is the percentile interval of the replicate changes, and the p-value is the two-sided
    bootstrap p ``min(1, 2 min(frac(change* <= 0), frac(change* >= 0)))`` (1 when every replicate change is
    0, e.g. for identical sets; 0 when none reaches 0, i.e. p < 1 / n_boot). Replicates whose change is
    not finite are left out. Resampled sets repeat rows, which moves a set statistic (module docstring);
    ``bias`` reports the mean shift of the change. Each replicate costs two calls of ``stat``; for KID use
    :func:`paired_kid_change` (same numbers, kernels cached).

    Args:
        stat: ``stat(real, fake) -> float``; it gets ``real_feats`` and the resampled rows of ``feats_a`` /
            ``feats_b``, each as a 2-D array of the type given (numpy stays numpy, tensors are on CPU).
        real_feats: (n_ref, d) reference features, n_ref >= 2, held fixed.
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
        >>> res = paired_set_change(kid, real, z, z + 0.5, n_boot=50)
        >>> res.change > 0 and res.ci[0] > 0 and res.pvalue == 0.0
        True
    """
    if not callable(stat):
        raise ValueError(f"stat must be a callable stat(real, fake) -> float, got {type(stat).__name__}")
    _, a, _, level = _check_paired(real_feats, feats_a, feats_b, n_boot, level)
    real, fa, fb = _as_given(real_feats), _as_given(feats_a), _as_given(feats_b)
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
                      coef: float = 1.0) -> PairedChange:
    """:func:`paired_set_change` with ``stat = kid``, from kernel matrices computed once.

    The real-real term is a constant; ``k(fake, fake)`` (n x n, for a and for b) and the column sums of
    ``k(real, fake)`` are computed once and each resample is read from them through the counts of its rows,
    leaving out exactly the positions ``i == j`` of the resample (repeated-row pairs stay in, as in
    ``kid(real, feats[idx])``). Same resamples as :func:`paired_set_change` for the same seed, so the
    numbers agree to rounding (about 1e-14). Memory 16 n^2 bytes (two n x n float64 matrices), each
    replicate O(n^2) instead of O((n_ref + n)^2 d).

    Args:
        real_feats: (n_ref, d) reference features, n_ref >= 2.
        feats_a: (n, d) features of sampler A, n >= 2.
        feats_b: (n, d) features of sampler B on the same noise, row for row.
        n_boot: number of paired resamples (integer >= 1).
        seed: resampling seed.
        level: interval coverage in (0, 1).
        degree, gamma, coef: the kernel, as in :func:`kid` (gamma = 1 / d by default).

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
    degree, gamma, coef = _kernel_params(x.shape[1], degree, gamma, coef)
    real_term = _within_mean(x, degree, gamma, coef)
    cache_a = _CachedKID(real_term, x, a, degree, gamma, coef)
    cache_b = _CachedKID(real_term, x, b, degree, gamma, coef)
    rng = np.random.default_rng(seed)
    changes = np.concatenate([cache_b(c) - cache_a(c) for c in _draw_counts(rng, n_boot, a.shape[0])])
    return _summarise_change(cache_a.value, cache_b.value, changes, n_boot, level, a.shape[0])
