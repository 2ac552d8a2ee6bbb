"""The energy-density relation under posterior dominance: points around training items, ``-log p_t`` and
``||v*||^2`` at a fixed time, and their affine fit (Mathematics §4; see the package docstring)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib.closed_form import EmpiricalVelocity

__all__ = ["shell_points", "log_normalizer", "AffineFit", "DominanceData", "dominance_data", "dominance_fit",
           "EnergyDensity", "energy_density_study", "density_display"]


def shell_points(train: torch.Tensor, t: float, n_points: int, noise_scale: tuple[float, float] = (1.0, 1.0),
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``x = t a_k + (1 - t) lam eps`` around random atoms, ``eps ~ N(0, I)``, ``lam ~ U(noise_scale)``.

    ``noise_scale = (1, 1)`` draws exactly from the bridge marginal ``p_t`` (Mathematics §4); a wider range adds
    denser (lam < 1) and sparser (lam > 1) shells, spreading ``-log p_t`` for the dominance fit.

    Returns:
        (x (P, ...) float64, atom index (P,)).
    """
    lo, hi = (float(v) for v in noise_scale)
    if not 0.0 <= t < 1.0:
        raise ValueError(f"t must lie in [0, 1), got {t!r}")
    if not 0.0 < lo <= hi:
        raise ValueError(f"noise_scale must be (lo, hi) with 0 < lo <= hi, got {noise_scale!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a positive integer, got {n_points!r}")
    a = train.detach().to(torch.float64).cpu()
    k = torch.randint(0, a.shape[0], (n_points,), generator=generator)
    eps = torch.randn((n_points, *a.shape[1:]), generator=generator, dtype=torch.float64)
    lam = lo + (hi - lo) * torch.rand(n_points, generator=generator, dtype=torch.float64)
    lam = lam.reshape(-1, *([1] * (a.ndim - 1)))
    return t * a[k] + (1.0 - t) * lam * eps, k


def log_normalizer(n: int, dim: int, t: float) -> float:
    """``C_t = log n + d/2 log(2 pi (1 - t)^2)``: ``-log p_t = C_t + ||eps||^2/2 + log w_k`` exactly."""
    return math.log(n) + 0.5 * dim * math.log(2.0 * math.pi * (1.0 - t) ** 2)


@dataclass
class AffineFit:
    """Least-squares fit ``||v*||^2 = slope * (-log p_t) + intercept`` at one time and dominance threshold.

    Attributes:
        t: time.
        threshold: points kept have max_i w_i >= threshold.
        n_points: number kept.
        slope, intercept, r2: the fit (NaN when fewer than 3 points).
        slope_theory: 2, the dominance limit.
        intercept_theory: ``-2 C_t + mean ||a_i||^2`` (the atom term averaged over the training set).
        median_max_weight: median of max_i w_i over the kept points.
    """

    t: float
    threshold: float
    n_points: int
    slope: float
    intercept: float
    r2: float
    slope_theory: float
    intercept_theory: float
    median_max_weight: float


@dataclass
class DominanceData:
    """Per-point quantities of the dominance check at one t: (P,) each."""

    speed_sq: torch.Tensor
    neg_log_density: torch.Tensor
    max_weight: torch.Tensor


def dominance_data(efm: EmpiricalVelocity, x: torch.Tensor, t: float) -> DominanceData:
    """``||v*||^2``, ``-log p_t(x)`` and ``max_i w_i`` at points ``x`` (P, ...) and a fixed time t."""
    x = x.to(device=efm.train.device, dtype=efm.dtype)
    v = efm(x, t).reshape(x.shape[0], -1)
    return DominanceData(speed_sq=v.pow(2).sum(1).cpu(), neg_log_density=-efm.log_density(x, t).cpu(),
                         max_weight=efm.max_weight(x, t).cpu())


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan"), float("nan"), float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    r2 = 1.0 - float((resid ** 2).sum()) / float(((y - y.mean()) ** 2).sum())
    return float(slope), float(intercept), r2


def dominance_fit(efm: EmpiricalVelocity, x: torch.Tensor, t: float,
                  thresholds: Sequence[float] = (0.0, 0.5, 0.9, 0.99),
                  data: DominanceData | None = None) -> list[AffineFit]:
    """Fit ``||v*||^2`` against ``-log p_t(x)`` among points under posterior dominance (module docstring).

    Args:
        efm: the closed form.
        x: (P, ...) points at time t (e.g. ``shell_points``).
        t: the fixed time in [0, 1).
        thresholds: dominance thresholds on max_i w_i in [0, 1]; 0 keeps every point.
        data: precomputed ``dominance_data(efm, x, t)`` (to avoid recomputing).

    Returns:
        One AffineFit per threshold.
    """
    if any(not 0.0 <= float(h) <= 1.0 for h in thresholds):
        raise ValueError(f"thresholds must lie in [0, 1], got {list(thresholds)}")
    data = data if data is not None else dominance_data(efm, x, t)
    c_t = log_normalizer(efm.n, efm.dim, t)
    intercept_theory = -2.0 * c_t + float(efm.sq_norms.mean())
    out = []
    for h in thresholds:
        keep = (data.max_weight >= h).numpy()
        xs, ys = data.neg_log_density.numpy()[keep], data.speed_sq.numpy()[keep]
        slope, intercept, r2 = _fit(xs, ys)
        med = float(np.median(data.max_weight.numpy()[keep])) if keep.any() else float("nan")
        out.append(AffineFit(t=float(t), threshold=float(h), n_points=int(keep.sum()), slope=slope,
                             intercept=intercept, r2=r2, slope_theory=2.0, intercept_theory=intercept_theory,
                             median_max_weight=med))
    return out


@dataclass
class EnergyDensity:
    """The energy-density check at every time.

    Attributes:
        table: one row per (t, threshold): points kept, slope, intercept and its theory, R^2, median max
            weight, and R^2 / slope / points of the typical-set design (``lam = 1``).
        scatter: t -> DominanceData of the density-sweep points ((P,) each), for the figure.
    """

    table: pd.DataFrame
    scatter: dict[float, DominanceData]


def energy_density_study(efm: EmpiricalVelocity, train: torch.Tensor, times: Sequence[float], n_points: int,
                         noise_scale: tuple[float, float], thresholds: Sequence[float],
                         generator: torch.Generator) -> EnergyDensity:
    """Fit ``||v*||^2`` against ``-log p_t`` at each time on two designs drawn from ``generator``.

    Per time, in this order: ``n_points`` density-sweep points (``lam ~ U(noise_scale)``), then
    ``n_points`` typical-set points (``lam = 1``, drawn from ``p_t``); each design is fitted at every
    dominance threshold (``dominance_fit``).
    """
    rows, scatter = [], {}
    for t in times:
        x_sweep, _ = shell_points(train, t, n_points, noise_scale, generator)
        x_typ, _ = shell_points(train, t, n_points, (1.0, 1.0), generator)
        data = dominance_data(efm, x_sweep, t)
        typ = dominance_data(efm, x_typ, t)
        fits = dominance_fit(efm, x_sweep, t, thresholds, data=data)
        fits_typ = dominance_fit(efm, x_typ, t, thresholds, data=typ)
        scatter[t] = data
        for f, ft in zip(fits, fits_typ):
            rows.append({"t": t, "threshold": f.threshold, "points": f.n_points, "slope": f.slope,
                         "intercept": f.intercept, "theory intercept": f.intercept_theory, "R2": f.r2,
                         "median max w": f.median_max_weight, "R2 typical set": ft.r2,
                         "slope typical set": ft.slope, "points typical set": ft.n_points})
    return EnergyDensity(table=pd.DataFrame(rows), scatter=scatter)


def density_display(theory: pd.DataFrame) -> pd.DataFrame:
    """The energy-density table as shown, indexed by (t, threshold) and rounded."""
    return theory.set_index(["t", "threshold"]).round({"slope": 3, "intercept": 0, "theory intercept": 0, "R2": 3,
                                                       "median max w": 3, "R2 typical set": 3,
                                                       "slope typical set": 3})
