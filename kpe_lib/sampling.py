"""The sampling loop with per-sample kinetic path energy (Mathematics §2) and KTS (Mathematics §3).

``sample`` integrates ``dx/dt = eta(t) v(x, t)`` from noise (t = 0) to data (t = 1) on a fixed grid and
integrates ``1/2 ||eta v||^2`` (and the unshaped ``1/2 ||v||^2``) with the stages the solver already
evaluated, so the energy costs no extra velocity evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._progress import progress_enabled
from kpe_lib._sample_checks import (check_gain_value, check_model_kwargs, check_tau_split, check_velocity_output,
                                    check_x0, explain_first_call_error)
from kpe_lib.grids import GRID_KINDS, time_grid, validate_grid
from kpe_lib.solvers import SOLVERS, rk_step

Velocity = Callable[..., torch.Tensor]
Gain = Callable[[Any], Any]
ENERGY_RULES = ("solver", "left")
DEFAULT_TAU_SPLIT = 0.6


class NonFiniteError(FloatingPointError):
    """The state or the velocity became NaN or infinite during sampling."""


@dataclass
class SampleResult:
    """Output of ``sample`` (Mathematics §2).

    Attributes:
        x: final samples, shape (B, ...).
        kpe: shaped-velocity kinetic path energy ``1/2 int ||eta v||^2 dt``, shape (B,); None if not tracked.
        kpe_raw: unshaped energy ``1/2 int ||v||^2 dt`` along the same path, (B,).
        kpe_early: part of ``kpe`` from steps with ``t_i < tau_split``, (B,).
        kpe_late: the rest, (B,); ``kpe == kpe_early + kpe_late``.
        energy: per-step energy profile (N, B): the step's quadrature-weighted ``1/2 ||eta v||^2``, so
            that ``kpe = sum_i dt_i energy[i]``; with Euler or the left rule this is exactly
            ``1/2 ||eta(t_i) v(x_i, t_i)||^2``.
        energy_raw: the same for the unshaped velocity, (N, B).
        nfe: number of velocity evaluations (one per sample batch and stage).
        grid: the time grid used, (N + 1,).
        trajectory: states at every grid node (N + 1, B, ...) when recorded, else None.
        solver: solver name.
        energy_rule: ``"solver"`` or ``"left"``.
        tau_split: time at which early and late energies are split.
    """

    x: torch.Tensor
    kpe: torch.Tensor | None
    kpe_raw: torch.Tensor | None
    kpe_early: torch.Tensor | None
    kpe_late: torch.Tensor | None
    energy: torch.Tensor | None
    energy_raw: torch.Tensor | None
    nfe: int
    grid: torch.Tensor
    trajectory: torch.Tensor | None
    solver: str
    energy_rule: str
    tau_split: float


def _resolve_grid(grid: torch.Tensor | None, n_steps: int | None, grid_kind: str) -> torch.Tensor:
    if grid is not None and n_steps is not None:
        raise ValueError("pass either grid or n_steps (with grid_kind), not both")
    if grid is None:
        if n_steps is None:
            raise ValueError("pass grid=time_grid(...) or n_steps=N (with grid_kind in "
                             f"{GRID_KINDS})")
        grid = time_grid(n_steps, grid_kind)
    return validate_grid(torch.as_tensor(grid)).detach().to("cpu", torch.float64)


def sample(
    velocity: Velocity,
    x0: torch.Tensor,
    *,
    grid: torch.Tensor | None = None,
    n_steps: int | None = None,
    grid_kind: str = "uniform",
    solver: str = "euler",
    gain: Gain | None = None,
    energy_rule: str = "solver",
    tau_split: float | None = None,
    record_trajectory: bool = False,
    track_energy: bool = True,
    enable_grad: bool = False,
    progress: bool | None = False,
    **model_kwargs: Any,
) -> SampleResult:
    """Integrate a velocity field from noise to data and measure each sample's kinetic path energy.

    Solves ``dx/dt = eta(t) v(x, t)`` on ``grid`` (Mathematics §1, §3) and integrates
    ``E = 1/2 int ||eta v||^2 dt`` per sample (Mathematics §2), summed over all coordinates.

    Args:
        velocity: ``v(x, t, **model_kwargs) -> Tensor`` with ``x`` (B, ...) and ``t`` a tensor of shape (B,)
            in ``x``'s dtype and device (t = 0 noise, t = 1 data).
        x0: initial noise, shape (B, ...); its device and dtype are used throughout.
        grid: time grid (N + 1,) from 0 to 1, strictly increasing. Alternatively ``n_steps``.
        n_steps: number of steps N, with ``grid_kind`` (``"uniform"`` or ``"cosine"``).
        grid_kind: grid kind when ``n_steps`` is given.
        solver: ``"euler"``, ``"midpoint"``, ``"heun"`` or ``"rk4"``. Heun and RK4 evaluate the field at
            ``t = 1``; use Euler or midpoint for fields singular there (the empirical closed form).
        gain: any callable ``t -> eta`` (float, 0-d tensor or (B,) tensor), e.g. ``KTS(...)``;
            None means ``eta = 1``.
        energy_rule: ``"solver"`` (the solver's own quadrature: Euler left sum, midpoint rule, Heun
            trapezoid, RK4 Simpson-like weights) or ``"left"`` (the reference code's left Riemann sum).
        tau_split: early/late boundary; defaults to ``gain.tau_split`` if present, else 0.6.
        record_trajectory: keep the state at every node in ``result.trajectory``.
        track_energy: integrate the energy (True) or only sample (False; energies are then None).
        enable_grad: keep the autograd graph (off by default to save memory).
        progress: show a tqdm bar over steps; None follows ``KPE_PROGRESS``/``CI``.
        **model_kwargs: passed to ``velocity`` unchanged (class labels, guidance scale, ...).

    Returns:
        A ``SampleResult``.

    Raises:
        ValueError: on an unknown solver, energy rule, a bad grid, ``tau_split`` outside [0, 1], a non-finite
            ``x0``, a gain value that is not finite and > 0, or a first velocity output whose shape, dtype or
            device differs from ``x0``'s.
        TypeError: a keyword that looks like a misspelt one of ``sample``'s (``solvr=``), or that the
            velocity cannot take.
        NonFiniteError: if a velocity or the state becomes NaN or infinite; names the step and time.

    Example:
        >>> res = sample(lambda x, t: torch.ones_like(x), torch.zeros(4, 2), n_steps=10)
        >>> res.kpe  # 1/2 ||(1, 1)||^2
        tensor([1., 1., 1., 1.], dtype=torch.float64)
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    if energy_rule not in ENERGY_RULES:
        raise ValueError(f"energy_rule must be one of {ENERGY_RULES}, got {energy_rule!r}")
    check_x0(x0)
    if gain is not None and not callable(gain):
        raise ValueError(f"gain must be a callable t -> eta or None, got {type(gain).__name__}")
    check_model_kwargs(velocity, model_kwargs, sample)
    grid = _resolve_grid(grid, n_steps, grid_kind)
    if tau_split is None:
        tau_split = check_tau_split(getattr(gain, "tau_split", DEFAULT_TAU_SPLIT), "gain.tau_split")
    else:
        tau_split = check_tau_split(tau_split)
    scheme = SOLVERS[solver]
    weights = scheme.energy_weights if energy_rule == "solver" else (1.0,) + (0.0,) * (scheme.stages - 1)
    n, batch = grid.numel() - 1, x0.shape[0]
    acc_dtype = torch.float32 if x0.device.type == "mps" else torch.float64
    times = grid.tolist()

    first_call = [True]

    def field(x: torch.Tensor, t: float):
        tt = torch.full((batch,), t, dtype=x.dtype, device=x.device)
        if first_call[0]:  # one output check: shape, dtype, device (and a clear word for a failing first call)
            try:
                v = velocity(x, tt, **model_kwargs)
            except Exception as err:
                clearer = explain_first_call_error(velocity, x0, err)
                if clearer is None:
                    raise
                raise clearer from err
            check_velocity_output(v, x)
            first_call[0] = False
        else:
            v = velocity(x, tt, **model_kwargs)
        eta = 1.0 if gain is None else gain(t)
        if gain is not None:
            check_gain_value(eta, t)
        if isinstance(eta, torch.Tensor):
            eta = eta.to(x.device) if eta.ndim == 1 else float(eta)
        return v, eta

    energy = torch.zeros(n, batch, dtype=acc_dtype, device=x0.device) if track_energy else None
    energy_raw = torch.zeros_like(energy) if track_energy else None
    trajectory = [x0.detach().clone()] if record_trajectory else None
    x = x0
    with torch.set_grad_enabled(enable_grad):
        for i in tqdm(range(n), desc=f"sample ({solver}, N={n})", disable=not progress_enabled(progress),
                      leave=False):
            t, dt = times[i], times[i + 1] - times[i]
            step = rk_step(scheme, field, x, t, dt)
            if track_energy:
                power_raw = torch.zeros(batch, dtype=acc_dtype, device=x0.device)
                power = torch.zeros_like(power_raw)
                for w, v, eta in zip(weights, step.velocities, step.gains):
                    if w == 0.0:
                        continue
                    sq = v.detach().flatten(1).to(acc_dtype).pow(2).sum(1)
                    power_raw += (0.5 * w) * sq
                    eta2 = eta.detach().to(acc_dtype) ** 2 if isinstance(eta, torch.Tensor) else eta * eta
                    power += (0.5 * w) * eta2 * sq
                energy[i], energy_raw[i] = power, power_raw
                finite = bool(torch.isfinite(power_raw).all()) and all(
                    bool(torch.isfinite(v).all()) for w, v in zip(weights, step.velocities) if w == 0.0)
            else:
                finite = True
            if not finite or not bool(torch.isfinite(step.x).all()):
                raise NonFiniteError(
                    f"non-finite {'velocity' if not finite else 'state'} at step {i} of {n} "
                    f"(t = {t:.6g} -> {times[i + 1]:.6g}, solver={solver!r}); the field may be singular "
                    f"there (e.g. the empirical closed form at t = 1) or the model diverged")
            x = step.x
            if trajectory is not None:
                trajectory.append(x.detach().clone())
    kpe = kpe_raw = kpe_early = kpe_late = None
    if track_energy:
        dts = (grid[1:] - grid[:-1]).to(device=x0.device, dtype=acc_dtype)[:, None]
        per_step = dts * energy
        early = (grid[:-1] < tau_split).to(x0.device)
        kpe, kpe_raw = per_step.sum(0), (dts * energy_raw).sum(0)
        kpe_early, kpe_late = per_step[early].sum(0), per_step[~early].sum(0)
    return SampleResult(
        x=x, kpe=kpe, kpe_raw=kpe_raw, kpe_early=kpe_early, kpe_late=kpe_late, energy=energy,
        energy_raw=energy_raw, nfe=n * scheme.stages, grid=grid,
        trajectory=torch.stack(trajectory) if trajectory is not None else None,
        solver=solver, energy_rule=energy_rule, tau_split=tau_split)
