"""Bootstrap uncertainty for the metrics of Mathematics §5.

Mathematics §5 asks for F_mem with a bootstrap standard error and 95% interval (1,000 resamples) and for Spearman
rho between per-sample KPE and local support with a bootstrap interval. Both are the same recipe: resample
the items with replacement (paired across arrays), recompute the statistic, report the standard deviation
of the replicates (ddof = 1) and their percentile interval.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import scipy.stats
import torch

from kpe_lib.metrics._checks import as_vector, check_positive_int


@dataclass
class BootstrapResult:
    """A statistic with its bootstrap uncertainty.

    Attributes:
        value: the statistic on the full data.
        stderr: standard deviation (ddof = 1) of the bootstrap replicates.
        ci: (lo, hi) percentile interval of the replicates at ``level``.
        level: coverage of ``ci`` (0.95 by default).
        n_boot: number of resamples (replicates whose statistic is NaN are left out of stderr and ci).
    """

    value: float
    stderr: float
    ci: tuple[float, float]
    level: float
    n_boot: int

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95% interval; only defined when the result was computed with ``level=0.95``."""
        if not np.isclose(self.level, 0.95):
            raise ValueError(f"ci95 is only available for level=0.95, this result has level={self.level}; use .ci")
        return self.ci


@dataclass
class SpearmanResult(BootstrapResult):
    """Spearman rank correlation with bootstrap uncertainty (``value`` is rho).

    Attributes:
        pvalue: two-sided p-value of scipy.stats.spearmanr on the full data.
        n: number of paired items.
    """

    pvalue: float = float("nan")
    n: int = 0


def bootstrap_ci(stat_fn: Callable[..., float], *arrays: np.ndarray | torch.Tensor, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> BootstrapResult:
    """Nonparametric (percentile) bootstrap of a statistic of one or more paired arrays.

    Args:
        stat_fn: ``stat_fn(*resampled_arrays) -> float``; it receives numpy arrays indexed along axis 0.
        *arrays: one or more arrays with the same length along axis 0 (torch tensors are converted).
        n_boot: number of resamples (Mathematics §5: 1,000).
        seed: seed of the numpy generator that draws the resampling indices.
        level: coverage of the percentile interval, in (0, 1).

    Returns:
        BootstrapResult(value, stderr, ci, level, n_boot).

    Example:
        >>> r = bootstrap_ci(np.mean, np.array([0.0, 1.0, 1.0, 0.0]), n_boot=200)
        >>> r.value
        0.5
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    check_positive_int(n_boot, "n_boot")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    data = [a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a) for a in arrays]
    n = data[0].shape[0] if data[0].ndim else 0
    if n < 1 or any(d.ndim == 0 or d.shape[0] != n for d in data):
        raise ValueError(f"arrays must be non-empty and share their length along axis 0, got "
                         f"{[d.shape for d in data]}")
    value = float(stat_fn(*data))
    rng = np.random.default_rng(seed)
    reps = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        reps[b] = float(stat_fn(*(d[idx] for d in data)))
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return BootstrapResult(value, float("nan"), (float("nan"), float("nan")), float(level), n_boot)
    alpha = (1.0 - float(level)) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return BootstrapResult(value=value, stderr=float(reps.std(ddof=1)), ci=(float(lo), float(hi)),
                           level=float(level), n_boot=n_boot)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rho as the Pearson correlation of average ranks (NaN when either side is constant)."""
    ra, rb = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def spearman_with_ci(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, n_boot: int = 1000, seed: int = 0,
                     level: float = 0.95) -> SpearmanResult:
    """Spearman rho between two per-sample quantities with a paired bootstrap interval (Mathematics §5).

    Ties get average ranks (as scipy.stats.spearmanr), which matters inside bootstrap resamples where
    items repeat.

    Args:
        a: (n,) e.g. per-sample KPE.
        b: (n,) e.g. per-sample log support density.
        n_boot: number of paired resamples.
        seed: resampling seed.
        level: interval coverage.

    Returns:
        SpearmanResult(value=rho, stderr, ci, level, n_boot, pvalue, n).
    """
    x, y = as_vector(a, "a"), as_vector(b, "b")
    if x.shape != y.shape or x.shape[0] < 3:
        raise ValueError(f"a and b must be 1-D with the same length >= 3, got {x.shape} and {y.shape}")
    boot = bootstrap_ci(_spearman, x, y, n_boot=n_boot, seed=seed, level=level)
    pvalue = float(scipy.stats.spearmanr(x, y).pvalue)
    return SpearmanResult(value=boot.value, stderr=boot.stderr, ci=boot.ci, level=boot.level, n_boot=boot.n_boot,
                          pvalue=pvalue, n=int(x.shape[0]))
