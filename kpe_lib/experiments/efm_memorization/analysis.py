"""Path analysis of the EFM closed form: displacement factors of collapsed paths, the speed envelope and
posterior collapse along sampled paths (Mathematics §3, §4; see the package docstring)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from kpe_lib.closed_form import EmpiricalVelocity
from kpe_lib.grids import validate_grid
from kpe_lib.metrics.neighbors import squared_distances

__all__ = ["Gain", "displacement_factors", "CollapsedPath", "collapsed_path", "predicted_memorized",
           "PathDiagnostics", "path_diagnostics", "StateRecorder", "commit_time"]

Gain = Callable[[float], float]


def _eta(gain: Gain | None, t: float) -> float:
    return 1.0 if gain is None else float(gain(t))


def displacement_factors(grid: torch.Tensor, gain: Gain | None = None, start: int = 0) -> torch.Tensor:
    """Factors by which shaped Euler shrinks the displacement to a collapsed atom (Mathematics §3, §4).

    For the linear field ``v = (a - x) / (1 - t)`` the shaped Euler update gives
    ``e_{i+1} = (1 - eta(t_i) dt_i / (1 - t_i)) e_i`` for ``e = a - x``.

    Args:
        grid: time grid (N + 1,) from 0 to 1.
        gain: ``t -> eta`` (e.g. ``KTS``); None means ``eta = 1``.
        start: first step index (0 <= start < N).

    Returns:
        (N + 1 - start,) float64: ``F_0 = 1`` and ``F_j = prod_{i=start}^{start+j-1} (1 - eta_i dt_i / (1 - t_i))``,
        so ``||e_{start+j}|| = |F_j| ||e_start||``. The last entry is the fraction of the displacement
        left at t = 1 (exactly 0 when ``eta(t_{N-1}) = 1``).
    """
    grid = validate_grid(torch.as_tensor(grid)).detach().cpu().to(torch.float64)
    n = grid.numel() - 1
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < n:
        raise ValueError(f"start must be an integer step index in [0, {n - 1}], got {start!r}")
    t = grid.tolist()
    factors = [1.0]
    for i in range(start, n):
        factors.append(factors[-1] * (1.0 - _eta(gain, t[i]) * (t[i + 1] - t[i]) / (1.0 - t[i])))
    return torch.tensor(factors, dtype=torch.float64)


@dataclass
class CollapsedPath:
    """Analytic Euler path of states whose weights have collapsed onto one atom (module docstring).

    Attributes:
        t: step times t_start, ..., t_{N-1} (N - start,).
        distance: ||a - x|| at nodes start, ..., N: (N + 1 - start, B).
        speed: unshaped speed ||v|| = ||a - x|| / (1 - t) at steps start, ..., N - 1: (N - start, B).
        shaped_speed: ``eta(t) * speed``, (N - start, B).
    """

    t: torch.Tensor
    distance: torch.Tensor
    speed: torch.Tensor
    shaped_speed: torch.Tensor


def collapsed_path(distance_start: torch.Tensor, grid: torch.Tensor, gain: Gain | None = None,
                   start: int = 0) -> CollapsedPath:
    """Predict distance and speed of collapsed paths from their distance to the atom at step ``start``.

    Args:
        distance_start: (B,) ``||a_k - x_start||``.
        grid: time grid (N + 1,).
        gain: ``t -> eta``; None means 1.
        start: step index at which the weights are (numerically) one-hot.

    Returns:
        CollapsedPath (exact for Euler while the weights stay one-hot).
    """
    d0 = torch.as_tensor(distance_start, dtype=torch.float64).reshape(-1)
    f = displacement_factors(grid, gain, start)
    grid = torch.as_tensor(grid, dtype=torch.float64).cpu()
    t = grid[start:-1]
    eta = torch.tensor([_eta(gain, float(s)) for s in t], dtype=torch.float64)
    distance = f.abs()[:, None] * d0[None, :]
    speed = distance[:-1] / (1.0 - t)[:, None]
    return CollapsedPath(t=t, distance=distance, speed=speed, shaped_speed=eta[:, None] * speed)


def predicted_memorized(distance_start: torch.Tensor, atom_gap: torch.Tensor, factor: float,
                        threshold: float = 1.0 / 3.0) -> torch.Tensor:
    """Predict the F_mem verdict of collapsed paths from the landing's displacement factor (Mathematics §5).

    A collapsed path ends at ``x = a_k + e`` with ``||e|| = |factor| * distance_start``
    (``displacement_factors(...)[-1]``). In high dimension ``e`` is nearly orthogonal to the gap to the next
    atom, so ``d1 = ||e||`` and ``d2 ~ sqrt(gap^2 + ||e||^2)``; ``d1 / d2 < threshold`` becomes
    ``||e|| < threshold * gap / sqrt(1 - threshold^2)`` (``gap / sqrt(8)`` for 1/3).

    Args:
        distance_start: (B,) ``||a_k - x||`` when the landing's factor starts.
        atom_gap: (B,) distance from each path's atom to its nearest other training item.
        factor: fraction of the displacement left at t = 1.
        threshold: the F_mem threshold on d1/d2, in (0, 1).

    Returns:
        (B,) bool, predicted memorised.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    d1 = abs(float(factor)) * torch.as_tensor(distance_start, dtype=torch.float64)
    return d1 < threshold * torch.as_tensor(atom_gap, dtype=torch.float64) / math.sqrt(1.0 - threshold ** 2)


@dataclass
class PathDiagnostics:
    """The closed form evaluated along sampled paths (Mathematics §4), every ``every``-th step.

    Attributes:
        t: times (K,).
        speed: ||v*(x, t)||, (K, B).
        upper: the envelope max_i ||a_i - x|| / (1 - t), (K, B).
        top_speed: the collapsed limit ||a_k - x|| / (1 - t) for the top-weight atom k, (K, B).
        max_weight: max_i w_i(x, t), (K, B).
        top_atom: index k of the top-weight atom, (K, B).
    """

    t: torch.Tensor
    speed: torch.Tensor
    upper: torch.Tensor
    top_speed: torch.Tensor
    max_weight: torch.Tensor
    top_atom: torch.Tensor


def path_diagnostics(efm: EmpiricalVelocity, states: torch.Tensor, times: torch.Tensor | Sequence[float]
                     ) -> PathDiagnostics:
    """Speed, its envelope and the posterior weights at states recorded along paths (Mathematics §4).

    Args:
        efm: the closed form the paths were sampled with.
        states: (K, B, ...) states, e.g. ``SampleResult.trajectory[steps]`` or ``StateRecorder.stacked()``.
        times: (K,) their times, each in [0, 1) (t = 1 is singular and never evaluated).

    Returns:
        PathDiagnostics.
    """
    tt = torch.as_tensor(times, dtype=torch.float64).detach().cpu().reshape(-1)
    if states.ndim < 3 or states.shape[0] != tt.numel() or tt.numel() < 1:
        raise ValueError(f"states must have shape (K, B, ...) with K = len(times) = {tt.numel()}, "
                         f"got {tuple(states.shape)}")
    if bool(((tt < 0) | (tt >= 1)).any()):
        raise ValueError("times must lie in [0, 1): the closed form is singular at t = 1")
    a = efm.train
    rows = {k: [] for k in ("speed", "upper", "top", "wmax", "atom")}
    for x, t in zip(states, tt.tolist()):
        x = x.to(device=a.device, dtype=efm.dtype)
        xf = x.reshape(x.shape[0], -1)
        w = efm.weights(x, t)
        wmax, k = w.max(1)
        v = (w @ a - xf) / (1.0 - t)
        d2 = squared_distances(xf, a, efm.sq_norms)
        rows["speed"].append(v.norm(dim=1))
        rows["upper"].append(d2.max(1).values.sqrt() / (1.0 - t))
        rows["top"].append((a[k] - xf).norm(dim=1) / (1.0 - t))
        rows["wmax"].append(wmax)
        rows["atom"].append(k)
    st = {k: torch.stack(v).cpu() for k, v in rows.items()}
    return PathDiagnostics(t=tt, speed=st["speed"], upper=st["upper"], top_speed=st["top"],
                           max_weight=st["wmax"], top_atom=st["atom"])


class StateRecorder:
    """Wrap a velocity ``v(x, t, **extras)`` and keep the states it is first evaluated at, at chosen times.

    A cheap alternative to ``sample(..., record_trajectory=True)`` when only a few times matter (e.g.
    the state at ``tau_split`` of 10,000 CIFAR-10 paths). With Euler every node ``t_i < 1`` is evaluated
    once; with multi-stage solvers the first evaluation at that time is kept.

    Args:
        velocity: the field to wrap (called unchanged).
        times: times in [0, 1) to record; they must be nodes of the sampling grid (matched to 1e-9).

    Example:
        >>> rec = StateRecorder(lambda x, t: -x, times=[0.5])
        >>> _ = sample(rec, torch.ones(2, 1), n_steps=4)   # doctest: +SKIP
        >>> rec.stacked()[0].shape                         # doctest: +SKIP
        torch.Size([1, 2, 1])
    """

    def __init__(self, velocity: Callable[..., torch.Tensor], times: Sequence[float]) -> None:
        self.velocity = velocity
        self.times = sorted(float(t) for t in times)
        if not self.times or any(not 0.0 <= t < 1.0 for t in self.times):
            raise ValueError(f"times must be a non-empty list of times in [0, 1), got {list(times)}")
        self.states: dict[float, torch.Tensor] = {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **extras) -> torch.Tensor:
        now = float(torch.as_tensor(t).reshape(-1)[0])
        for s in self.times:
            if abs(now - s) < 1e-9 and s not in self.states:
                self.states[s] = x.detach().clone()
        return self.velocity(x, t, **extras)

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(states (K, B, ...), times (K,)) in time order, ready for ``path_diagnostics(efm, *rec.stacked())``.

        Raises ValueError if a time was never reached.
        """
        missing = [s for s in self.times if s not in self.states]
        if missing:
            raise ValueError(f"no state was recorded at times {missing}: they are not nodes of the grid used")
        return torch.stack([self.states[s] for s in self.times]), torch.tensor(self.times, dtype=torch.float64)


def commit_time(max_weight: torch.Tensor, t: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """First time at which a path's largest posterior weight reaches ``threshold``.

    Args:
        max_weight: (K, B) max_i w_i along paths (``PathDiagnostics.max_weight``).
        t: (K,) increasing times.
        threshold: in (0, 1].

    Returns:
        (B,) float64 commit times; 1.0 for paths that never reach the threshold on the given times.
    """
    if not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    mw, tt = torch.as_tensor(max_weight), torch.as_tensor(t, dtype=torch.float64).cpu()
    if mw.ndim != 2 or mw.shape[0] != tt.numel():
        raise ValueError(f"max_weight must have shape (K, B) with K = len(t) = {tt.numel()}, got {tuple(mw.shape)}")
    hit = (mw >= threshold).cpu()
    first = hit.to(torch.int64).argmax(0)
    return torch.where(hit.any(0), tt[first], torch.ones_like(tt[first]))
