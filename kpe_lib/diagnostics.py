"""Path diagnostics beyond the total KPE, from the velocities the sampler already evaluates (Mathematics §2).

``sample(..., diagnostics=True)`` fills :class:`PathDiagnostics` at no extra velocity evaluation:

- **straightness** ``S = E / (1/2 ||x_1 - x_0||^2)``, the energy over its straight-line bound. By Cauchy-Schwarz
  ``1/2 int ||u||^2 dt >= 1/2 ||int u dt||^2`` for any path on [0, 1], so ``S >= 1``, with equality only for a
  straight path at constant speed; with Euler the discrete sums obey the same inequality exactly;
- **path length** ``L = int ||eta v|| dt`` (with Euler, the length of the polyline through the states);
  ``L^2 <= 2 E`` (sum normalisation), with equality at constant speed;
- **acceleration profile** ``|d(eta v)/dt|`` between consecutive nodes, from the first stage of each step;
- **guidance energy** ``1/2 int ||eta (w - 1)(v_y - v_null)||^2 dt`` for guided velocities that expose their
  guidance part (a ``velocity_and_guidance`` method, see :class:`GuidedField`), its share of the KPE, and the
  energy of the conditional part ``1/2 int ||eta v_y||^2 dt`` along the same path;
- **cumulative energy curves** and a pandas export (:func:`cumulative_energy`, :func:`to_dataframe`).

The energy normalisation is an explicit choice, written into every result (``result.energy_norm``):
``"sum"`` over all d coordinates as in the paper (Mathematics §2.1), or ``"mean"``, the sum divided by d
(per-dimension energy, comparable across resolutions). It scales every energy (``kpe``, ``kpe_raw``, the
profiles, the straight-line bound, the guidance energy); straightness and the guidance share are ratios and do
not change; path length and acceleration are norms and are never normalised.

The per-step bookkeeping (:class:`PathRecorder`) costs one reduction per stage, the squared norm of each stage
velocity written into a preallocated (N, stages, B) buffer; all energies are formed from it after the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import torch

__all__ = ["ENERGY_NORMS", "StepInfo", "PathDiagnostics", "GuidedField", "PathRecorder", "cumulative_energy",
           "to_dataframe"]

ENERGY_NORMS = ("sum", "mean")


@runtime_checkable
class GuidedField(Protocol):
    """A guided velocity that can return its guidance part with the velocity, in one model call.

    ``velocity_and_guidance(x, t, **extras) -> (v, g)`` with ``v`` the guided velocity (what ``__call__``
    returns) and ``g = (w - 1)(v_y - v_null)``, its difference from the conditional velocity, both (B, ...).
    """

    def velocity_and_guidance(self, x: torch.Tensor, t: torch.Tensor, **extras: Any
                              ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class StepInfo:
    """What a per-step ``callback`` of ``sample`` receives after step ``index`` (no copy is made).

    Attributes:
        index: the step i, 0-based.
        n_steps: N.
        t: t_i; ``t_next``: t_{i+1}.
        x: the state after the step, (B, ...) (do not modify it in place).
        velocities: the raw velocity of each solver stage, each (B, ...).
        gains: the gain of each stage (float or (B,) tensor).
        times: the time of each stage.
        guidance: the guidance part of each stage's velocity (B, ...) for a :class:`GuidedField`, else None.
    """

    index: int
    n_steps: int
    t: float
    t_next: float
    x: torch.Tensor
    velocities: list[torch.Tensor]
    gains: list[Any]
    times: list[float]
    guidance: list[torch.Tensor] | None = None


@dataclass
class PathDiagnostics:
    """Per-sample path diagnostics of one ``sample`` run (Mathematics §2). B samples, N steps.

    Attributes:
        chord_energy: (B,) the straight-line bound ``1/2 ||x_N - x_0||^2`` (normalised like ``kpe``).
        straightness: (B,) ``kpe / chord_energy`` (>= 1; 1 for a straight path at constant speed).
        path_length: (B,) ``int ||eta v|| dt`` with the solver's quadrature (never normalised).
        acceleration: (N - 1, B) ``||eta_{i+1} v_{i+1} - eta_i v_i|| / (t_{i+1} - t_i)`` between the first-stage
            velocities of consecutive steps (at the nodes t_i, states x_i).
        acceleration_times: (N - 1,) midpoints ``(t_i + t_{i+1}) / 2`` of those differences.
        guidance_energy: (B,) ``1/2 int ||eta g||^2 dt`` of the guidance part g (normalised like ``kpe``), or
            None when the velocity is not a :class:`GuidedField`.
        guidance_share: (B,) ``guidance_energy / kpe`` or None. A ratio, not a decomposition:
            ``||v_y + g||^2 != ||v_y||^2 + ||g||^2``.
        conditional_energy: (B,) ``1/2 int ||eta v_y||^2 dt`` of the conditional part ``v_y = v - g`` along the
            same path, or None. ``kpe = conditional_energy + guidance_energy + cross`` with the cross term
            ``int eta^2 <v_y, g> dt`` (see :meth:`cross_energy`).
    """

    chord_energy: torch.Tensor
    straightness: torch.Tensor
    path_length: torch.Tensor
    acceleration: torch.Tensor
    acceleration_times: torch.Tensor
    guidance_energy: torch.Tensor | None
    guidance_share: torch.Tensor | None
    conditional_energy: torch.Tensor | None = None

    def cross_energy(self, kpe: torch.Tensor) -> torch.Tensor | None:
        """(B,) ``kpe - conditional_energy - guidance_energy``: the cross term ``int eta^2 <v_y, g> dt``
        (None without a guided field)."""
        if self.conditional_energy is None or self.guidance_energy is None:
            return None
        return kpe - self.conditional_energy - self.guidance_energy


def _flat_norm(v: torch.Tensor, dtype: torch.dtype, out: torch.Tensor) -> None:
    torch.linalg.vector_norm(v.detach().reshape(v.shape[0], -1), dim=1, dtype=dtype, out=out)


class PathRecorder:
    """The sampler's per-step bookkeeping: stage-velocity norms now, energies and diagnostics after the loop.

    Each step stores ``||v_b||`` per sample and stage, accumulated in ``acc_dtype`` by one ``vector_norm``
    kernel (it converts as it reduces: 2-3.5x faster on CPU than converting and then a dot product, and
    within a few float64 ulps of it); the squares are taken once, in :meth:`finish`.

    Args:
        n: number of steps N; stages: solver stages S; batch: B.
        weights: the energy quadrature weights of the stages (S,).
        acc_dtype: accumulation dtype (float64; float32 on MPS); device: the state's device.
        scale: energy normalisation factor (1 for ``"sum"``, 1/d for ``"mean"``).
        diagnostics: also record the acceleration profile (one extra reduction per step).
        guidance: also record the norms of the guidance parts g and of the conditional parts ``v - g``.
    """

    def __init__(self, n: int, stages: int, batch: int, weights: Sequence[float], acc_dtype: torch.dtype,
                 device: torch.device, scale: float, diagnostics: bool, guidance: bool) -> None:
        self.n, self.acc, self.scale, self.weights = n, acc_dtype, float(scale), tuple(weights)
        self.norm = torch.empty(n, stages, batch, dtype=acc_dtype, device=device)
        self.gnorm = torch.empty_like(self.norm) if guidance else None
        self.cnorm = torch.empty_like(self.norm) if guidance else None
        self.accel = torch.empty(max(n - 1, 0), batch, dtype=acc_dtype, device=device) if diagnostics else None
        self.gains: list[list[Any]] = []
        self._prev: torch.Tensor | None = None

    def record(self, i: int, velocities: list[torch.Tensor], gains: list[Any],
               guidance: list[torch.Tensor] | None = None) -> None:
        """Write step i's stage-velocity norms (guidance parts, acceleration) into the buffers."""
        for j, v in enumerate(velocities):
            _flat_norm(v, self.acc, self.norm[i, j])
        if self.gnorm is not None and guidance is not None:
            for j, (v, g) in enumerate(zip(velocities, guidance)):
                _flat_norm(g, self.acc, self.gnorm[i, j])
                _flat_norm(v - g.to(v.dtype), self.acc, self.cnorm[i, j])
        self.gains.append(gains)
        if self.accel is not None:
            eta, v = gains[0], velocities[0].detach()
            if isinstance(eta, torch.Tensor):
                slope = eta.to(v.dtype).view(-1, *([1] * (v.ndim - 1))) * v
            else:
                slope = v if eta == 1.0 else eta * v
            if i > 0:
                _flat_norm(slope - self._prev, self.acc, self.accel[i - 1])
            self._prev = slope

    def first_nonfinite(self, lo: int, hi: int) -> int | None:
        """The first step in [lo, hi) with a NaN or infinite stage velocity, else None."""
        if hi <= lo:
            return None
        block = self.norm[lo:hi].sum(dim=(1, 2))
        if bool(torch.isfinite(block).all()):
            return None
        return lo + int((~torch.isfinite(block)).nonzero()[0, 0])

    def _etas(self, batch: int) -> torch.Tensor | None:
        """(N, S, B) or (N, S, 1) stage gains, or None when every gain is exactly 1.0."""
        if all(not isinstance(e, torch.Tensor) and e == 1.0 for step in self.gains for e in step):
            return None
        device = self.norm.device
        rows = [torch.stack([e.detach().to(device, self.acc).expand(batch) if isinstance(e, torch.Tensor)
                             else torch.full((batch,), float(e), dtype=self.acc, device=device) for e in step])
                for step in self.gains]
        return torch.stack(rows)

    def finish(self, grid: torch.Tensor, tau_split: float, x0: torch.Tensor, x: torch.Tensor,
               diagnostics: bool) -> dict[str, Any]:
        """Energies (and diagnostics) of the run; keys match :class:`SampleResult` fields."""
        batch, device = self.norm.shape[2], self.norm.device
        w = torch.tensor(self.weights, dtype=self.acc, device=device)[None, :, None]
        norms = self.norm
        sq = norms.square()
        energy_raw = (0.5 * self.scale) * (w * sq).sum(1)
        etas = self._etas(batch)
        energy = energy_raw if etas is None else (0.5 * self.scale) * (w * etas.square() * sq).sum(1)
        dts = (grid[1:] - grid[:-1]).to(device=device, dtype=self.acc)[:, None]
        per_step = dts * energy
        early = (grid[:-1] < tau_split).to(device)
        out: dict[str, Any] = dict(
            kpe=per_step.sum(0), kpe_raw=(dts * energy_raw).sum(0), kpe_early=per_step[early].sum(0),
            kpe_late=per_step[~early].sum(0), energy=energy, energy_raw=energy_raw, diagnostics=None)
        if not diagnostics:
            return out
        speed = norms if etas is None else etas.abs() * norms
        chord = (0.5 * self.scale) * torch.linalg.vector_norm(
            (x.detach() - x0.detach()).reshape(batch, -1), dim=1, dtype=self.acc).square()
        guidance_energy = share = conditional = None
        if self.gnorm is not None:
            def part(norm: torch.Tensor) -> torch.Tensor:
                sq_part = norm.square() if etas is None else (etas * norm).square()
                return (dts * (0.5 * self.scale) * (w * sq_part).sum(1)).sum(0)
            guidance_energy, conditional = part(self.gnorm), part(self.cnorm)
            share = guidance_energy / out["kpe"]
        steps = grid[1:-1] - grid[:-2]
        out["diagnostics"] = PathDiagnostics(
            chord_energy=chord, straightness=out["kpe"] / chord, path_length=(dts * (w * speed).sum(1)).sum(0),
            acceleration=self.accel / steps.to(device, self.acc)[:, None],
            acceleration_times=(grid[1:-1] + grid[:-2]) / 2, guidance_energy=guidance_energy,
            guidance_share=share, conditional_energy=conditional)
        return out


def cumulative_energy(result: Any, raw: bool = False) -> torch.Tensor:
    """The cumulative energy ``E(t_k) = sum_{i < k} dt_i e_i`` of a ``SampleResult`` at every node, (N + 1, B).

    Row 0 is 0 and the last row is ``result.kpe`` (``kpe_raw`` with ``raw=True``), in ``result.energy_norm``.

    Raises:
        ValueError: the run did not track energy.
    """
    profile = result.energy_raw if raw else result.energy
    if profile is None:
        raise ValueError("the result has no energy profile: sample with track_energy=True")
    dts = (result.grid[1:] - result.grid[:-1]).to(profile.device, profile.dtype)[:, None]
    return torch.cat([torch.zeros_like(profile[:1]), torch.cumsum(dts * profile, 0)])


def to_dataframe(result: Any):
    """One row per sample: the energies and every per-sample diagnostic of a ``SampleResult`` (pandas).

    Columns: ``kpe``, ``kpe_raw``, ``kpe_early``, ``kpe_late`` and, when diagnostics were recorded,
    ``chord_energy``, ``straightness``, ``path_length``, ``max_acceleration`` (the largest value of the
    acceleration profile), ``guidance_energy``, ``guidance_share`` and ``conditional_energy`` (guided fields).
    ``df.attrs`` holds
    ``energy_norm``, ``solver``, ``energy_rule``, ``nfe``, ``n_steps`` and ``tau_split``.

    Raises:
        ValueError: the run tracked no energy.
    """
    import pandas as pd

    if result.kpe is None:
        raise ValueError("the result has no energies: sample with track_energy=True")
    cols = {name: getattr(result, name) for name in ("kpe", "kpe_raw", "kpe_early", "kpe_late")}
    diag = getattr(result, "diagnostics", None)
    if diag is not None:
        cols.update(chord_energy=diag.chord_energy, straightness=diag.straightness, path_length=diag.path_length)
        if diag.acceleration.shape[0]:
            cols["max_acceleration"] = diag.acceleration.max(0).values
        if diag.guidance_energy is not None:
            cols.update(guidance_energy=diag.guidance_energy, guidance_share=diag.guidance_share,
                        conditional_energy=diag.conditional_energy)
    frame = pd.DataFrame({k: v.detach().cpu().numpy() for k, v in cols.items()})
    frame.index.name = "sample"
    frame.attrs.update(energy_norm=result.energy_norm, solver=result.solver, energy_rule=result.energy_rule,
                       nfe=result.nfe, n_steps=int(result.grid.numel() - 1), tau_split=result.tau_split)
    return frame
