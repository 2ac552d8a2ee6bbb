"""The sampling loop with per-sample kinetic path energy (Mathematics §2) and KTS (Mathematics §3).

``sample`` integrates ``dx/dt = eta(t) v(x, t)`` from noise (t = 0) to data (t = 1) on a fixed grid and
integrates ``1/2 ||eta v||^2`` (and the unshaped ``1/2 ||v||^2``) with the stages the solver already
evaluated, so the energy costs no extra velocity evaluation.

Conventions (Mathematics §1.3): the velocity is called as ``v(x, t, **extras)`` with ``t`` a (B,) tensor
(``time_shape="batch"``) or a 0-d tensor (``time_shape="scalar"``), holding the common time of the batch. The
state and ``t`` stay in float32 when ``x0`` is half precision (float16, bfloat16): the model receives ``x`` in
``x0``'s dtype, its output is cast back, and the update happens in float32, so neither the timesteps nor the
Euler sums are quantised. Diagnostics beyond the total energy are described in :mod:`kpe_lib.diagnostics`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._progress import progress_enabled
from kpe_lib.diagnostics import ENERGY_NORMS, PathDiagnostics, PathRecorder, StepInfo, cumulative_energy, to_dataframe
from kpe_lib._sample_checks import (check_gain_value, check_model_kwargs, check_tau_split, check_velocity_output,
                                    check_x0, explain_first_call_error)
from kpe_lib.grids import GRID_KINDS, time_grid, validate_grid
from kpe_lib.solvers import SOLVERS, rk_step

Velocity = Callable[..., torch.Tensor]
Gain = Callable[[Any], Any]
ENERGY_RULES = ("solver", "left")
DEFAULT_TAU_SPLIT = 0.6
TIME_SHAPES = ("batch", "scalar")
CHECK_EVERY = 8  # steps between the non-finite checks (each one a device sync); the failing step is still exact
_HALF = (torch.float16, torch.bfloat16)


class NonFiniteError(FloatingPointError):
    """The state or the velocity became NaN or infinite during sampling."""


@dataclass
class SampleResult:
    """Output of ``sample`` (Mathematics §2).

    Attributes:
        x: final samples, shape (B, ...), in ``x0``'s dtype (float32 for a half-precision ``x0``).
        kpe: shaped-velocity kinetic path energy ``1/2 int ||eta v||^2 dt``, shape (B,); None if not tracked;
            summed over coordinates or averaged per dimension as ``energy_norm`` says.
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
        energy_norm: ``"sum"`` (over all coordinates, the paper's) or ``"mean"`` (divided by the dimension d).
        diagnostics: straightness, path length, acceleration, guidance energy (``sample(diagnostics=True)``),
            see :class:`kpe_lib.diagnostics.PathDiagnostics`; else None.
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
    energy_norm: str = "sum"
    diagnostics: PathDiagnostics | None = None

    def cumulative_energy(self, raw: bool = False) -> torch.Tensor:
        """The energy spent up to each node, (N + 1, B); see :func:`kpe_lib.diagnostics.cumulative_energy`."""
        return cumulative_energy(self, raw)

    def to_dataframe(self):
        """One pandas row per sample with every energy and diagnostic; see :func:`kpe_lib.diagnostics.to_dataframe`."""
        return to_dataframe(self)


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
    time_shape: str = "batch",
    energy_norm: str = "sum",
    diagnostics: bool = False,
    callback: Callable[[StepInfo], Any] | None = None,
    **model_kwargs: Any,
) -> SampleResult:
    """Integrate a velocity field from noise to data and measure each sample's kinetic path energy.

    Solves ``dx/dt = eta(t) v(x, t)`` on ``grid`` (Mathematics §1, §3) and integrates
    ``E = 1/2 int ||eta v||^2 dt`` per sample (Mathematics §2), summed over all coordinates.

    Args:
        velocity: ``v(x, t, **model_kwargs) -> Tensor`` with ``x`` (B, ...) and ``t`` a tensor of shape (B,)
            (or 0-d, see ``time_shape``) on ``x``'s device (t = 0 noise, t = 1 data). A velocity with a
            ``velocity_and_guidance`` method (:class:`kpe_lib.diagnostics.GuidedField`) is called through it
            when ``diagnostics`` is on, to record the guidance energy in the same call.
        x0: initial noise, shape (B, ...); its device is used throughout and its dtype is the model's input
            dtype. The state and ``t`` are float32 for a float16/bfloat16 ``x0``, else ``x0``'s dtype.
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
        time_shape: ``"batch"`` (t of shape (B,), the default) or ``"scalar"`` (a 0-d t, as torchdiffeq and
            facebookresearch/flow_matching's ODE solver pass it). ``TimeFirst`` passes a 0-d t by itself.
        energy_norm: ``"sum"`` over all coordinates (the paper's, Mathematics §2.1) or ``"mean"`` (divided by
            the dimension d of one sample); recorded in ``result.energy_norm``.
        diagnostics: also compute :class:`kpe_lib.diagnostics.PathDiagnostics` (straightness, path length,
            acceleration profile, guidance energy) from the velocities already evaluated (needs
            ``track_energy``).
        callback: called after every step with a :class:`kpe_lib.diagnostics.StepInfo` (state, stage
            velocities, gains, times); its return value is ignored.
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
        >>> res = sample(lambda x, t: torch.ones_like(x), torch.zeros(3, 4), n_steps=10)
        >>> res.kpe  # 1/2 ||(1, 1, 1, 1)||^2
        tensor([2., 2., 2.], dtype=torch.float64)
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    if energy_rule not in ENERGY_RULES:
        raise ValueError(f"energy_rule must be one of {ENERGY_RULES}, got {energy_rule!r}")
    if time_shape not in TIME_SHAPES:
        raise ValueError(f"time_shape must be one of {TIME_SHAPES} (t of shape (B,) or 0-d), got {time_shape!r}")
    if energy_norm not in ENERGY_NORMS:
        raise ValueError(f"energy_norm must be one of {ENERGY_NORMS} (sum over coordinates, as the paper, or "
                         f"mean per dimension), got {energy_norm!r}")
    if diagnostics and not track_energy:
        raise ValueError("diagnostics=True needs track_energy=True (they are formed from the energy terms)")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be a callable taking a StepInfo, or None; got {type(callback).__name__}")
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
    model_dtype = x0.dtype
    state_dtype = torch.float32 if model_dtype in _HALF else model_dtype
    t_shape = (batch,) if time_shape == "batch" else ()
    split = getattr(velocity, "velocity_and_guidance", None) if diagnostics else None
    call = velocity if split is None else split
    guidance: list[torch.Tensor] = []

    first_call = [True]

    def field(x: torch.Tensor, t: float):
        tt = torch.full(t_shape, t, dtype=state_dtype, device=x.device)
        xm = x if x.dtype == model_dtype else x.to(model_dtype)
        if first_call[0]:  # one output check: shape, dtype, device (and a clear word for a failing first call)
            try:
                v = call(xm, tt, **model_kwargs)
            except Exception as err:
                clearer = explain_first_call_error(velocity, x0, err)
                if clearer is None:
                    raise
                raise clearer from err
        else:
            v = call(xm, tt, **model_kwargs)
        if split is not None:
            v, g = v
            guidance.append(g)
        if first_call[0]:
            check_velocity_output(v, xm)
            if split is not None:
                check_velocity_output(g, xm)
            first_call[0] = False
        if v.dtype != state_dtype:
            v = v.to(state_dtype)
        eta = 1.0 if gain is None else gain(t)
        if gain is not None:
            check_gain_value(eta, t)
        if isinstance(eta, torch.Tensor):
            eta = eta.to(x.device) if eta.ndim == 1 else float(eta)
        return v, eta

    scale = 1.0 if energy_norm == "sum" else 1.0 / max(1, x0[0].numel())
    recorder = PathRecorder(n, scheme.stages, batch, weights, acc_dtype, x0.device, scale, diagnostics,
                            split is not None)

    def check(lo: int, hi: int, x: torch.Tensor | None = None) -> None:
        bad = recorder.first_nonfinite(lo, hi)
        what = "velocity"
        if bad is None and x is not None and not bool(torch.isfinite(x).all()):
            bad, what = hi - 1, "state"
        if bad is not None:
            raise NonFiniteError(
                f"non-finite {what} at step {bad} of {n} (t = {times[bad]:.6g} -> {times[bad + 1]:.6g}, "
                f"solver={solver!r}); the field may be singular there (e.g. the empirical closed form at t = 1) "
                "or the model diverged")

    trajectory = [x0.detach().to(state_dtype, copy=True)] if record_trajectory else None
    x, checked = x0.to(state_dtype), 0
    with torch.set_grad_enabled(enable_grad):
        for i in tqdm(range(n), desc=f"sample ({solver}, N={n})", disable=not progress_enabled(progress),
                      leave=False):
            t = times[i]
            step = rk_step(scheme, field, x, t, times[i + 1] - t)
            recorder.record(i, step.velocities, step.gains, guidance if split is not None else None)
            if (i + 1) % CHECK_EVERY == 0:
                check(checked, i + 1)
                checked = i + 1
            x = step.x
            if trajectory is not None:
                trajectory.append(x.detach().clone())
            if callback is not None:
                callback(StepInfo(i, n, t, times[i + 1], x, step.velocities, step.gains, step.times,
                                  list(guidance) if split is not None else None))
            guidance.clear()
    check(checked, n, x)
    energies = recorder.finish(grid, tau_split, x0.to(state_dtype), x, diagnostics) if track_energy else {}
    return SampleResult(
        x=x, kpe=energies.get("kpe"), kpe_raw=energies.get("kpe_raw"), kpe_early=energies.get("kpe_early"),
        kpe_late=energies.get("kpe_late"), energy=energies.get("energy"), energy_raw=energies.get("energy_raw"),
        nfe=n * scheme.stages, grid=grid, trajectory=torch.stack(trajectory) if trajectory is not None else None,
        solver=solver, energy_rule=energy_rule, tau_split=tau_split, energy_norm=energy_norm,
        diagnostics=energies.get("diagnostics"))
