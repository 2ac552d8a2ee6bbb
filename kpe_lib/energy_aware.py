"""Energy-aware soft landing: damp only the trajectories whose late kinetic energy is high.

Beyond the paper. Fixed KTS (Mathematics §3) applies the same landing ``eta(t) = 1 - beta(t)`` to every sample.
The paper's reading of KPE (Mathematics §4) is that memorising trajectories are the ones that spend a lot of
energy late (the terminal spike of the empirical field as the posterior collapses onto one training
item), so a landing that only brakes *those* should lower the memorised fraction while leaving the other
samples, and hence sample quality, alone.

The rule, per sample ``i`` and evaluation time ``t``:

* running late power ``P_i(t)``: the time-weighted mean of the power ``p_i = 1/2 ||v(x_i, t)||^2`` of the
  unshaped field over the late evaluations made before ``t`` (left rule between consecutive evaluation
  times, from the first evaluation at or after ``tau_split``; at that first evaluation it is the current
  power). For Euler this is the sampler's own energy sum, so a plain run gives the same numbers
  (:func:`mean_late_power`);
* switch ``s_i = 1[P_i > threshold]`` (``sharpness=None``) or the logistic
  ``sigmoid(sharpness * log(P_i / threshold))``, in [0, 1]; either re-evaluated at every late evaluation
  (``decide_at=None``) or **decided once** at the first evaluation at or after ``decide_at`` and frozen;
* gain ``eta_i(t) = 1 + alpha(t)`` before ``tau_split`` (the KTS launch, the same for every sample) and
  ``1 - s_i beta(t)`` after it (a per-sample KTS landing; with ``decide_at`` the landing starts there).

Why ``decide_at``: a damped path lags behind its schedule and the trained field pushes it harder, so its
raw power *rises* under damping; a switch re-evaluated at every step then latches on for most paths (the
CelebA chapter measured this). Deciding once, before any damping, keeps the signal clean: until
``decide_at`` every path is the plain (launch-only) path, so the decision equals the plain run's
``mean_late_power(..., until=decide_at)`` and the threshold calibrated on it damps the intended share.

Since ``0 <= s_i <= 1``, ``eta_i >= 1 - beta(1) > 0`` whenever the fixed KTS with the same ``beta0`` is
valid. With ``threshold = 0`` every late path is damped (the fixed KTS, up to the first late
evaluation); with ``threshold = inf`` none is.

``threshold`` is a power (the units of ``1/2 ||v||^2``). :func:`late_power_threshold` calibrates it
as a quantile of the per-sample mean late power of a plain flow-matching run.

Example:
    >>> landing = EnergyAwareLanding(threshold=800.0, kts=KTS(beta0=0.05))
    >>> out = sample_energy_aware(model, x0, landing, n_steps=100)     # doctest: +SKIP
    >>> out.result.x, out.damped.float().mean()                         # doctest: +SKIP
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kpe_lib.sampling import SampleResult, sample
from kpe_lib.shaping import KTS

Velocity = Callable[..., torch.Tensor]

__all__ = ["EnergyAwareLanding", "EnergyMonitor", "EnergyAwareResult", "sample_energy_aware",
           "late_power_threshold", "mean_late_power"]


@dataclass(frozen=True)
class EnergyAwareLanding:
    """Settings of the energy-aware landing (module docstring).

    Attributes:
        threshold: mean late power above which a trajectory is damped (>= 0, may be ``inf``).
        kts: the gain a switched-on path follows (Mathematics §3): its launch applies to every trajectory, its
            landing (``beta0 > 0``) to the damped ones; its ``tau_split`` starts the late phase.
        sharpness: None for a hard switch, else the slope (> 0) of the logistic switch in
            ``log(P / threshold)``.
        decide_at: None to re-evaluate the switch at every late evaluation, else a time in
            (tau_split, 1) at which it is decided once and frozen (no landing before it).
    """

    threshold: float
    kts: KTS = KTS(beta0=0.05)
    sharpness: float | None = None
    decide_at: float | None = None

    def __post_init__(self) -> None:
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t) or t < 0:
            raise ValueError(f"threshold must be a number >= 0 (a mean late power; inf damps nothing), got {t!r}")
        if not isinstance(self.kts, KTS) or not self.kts.beta0 > 0:
            raise ValueError(f"kts must be a KTS with beta0 > 0 (the landing of the damped paths), got {self.kts!r}")
        s = self.sharpness
        if s is not None and (isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s)
                              or s <= 0):
            raise ValueError(f"sharpness must be None (hard switch) or a finite number > 0, got {s!r}")
        d = self.decide_at
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, float)) or not self.tau_split < d < 1):
            raise ValueError(f"decide_at must be None or a time in (tau_split, 1) = ({self.tau_split}, 1), got {d!r}")

    @property
    def tau_split(self) -> float:
        """The phase boundary of ``kts``: the late energy is measured from here."""
        return self.kts.tau_split

    def switch(self, power: torch.Tensor) -> torch.Tensor:
        """``s(P)`` in [0, 1] for mean late powers ``power`` (any shape), float64."""
        p = power.to(torch.float64)
        if self.sharpness is None:
            return (p > self.threshold).to(torch.float64)
        if self.threshold == 0:
            return torch.ones_like(p)
        if math.isinf(self.threshold):
            return torch.zeros_like(p)
        return torch.sigmoid(self.sharpness * (torch.log(p) - math.log(self.threshold)))


class EnergyMonitor:
    """A velocity wrapper and a per-sample gain that share the running late energy (one sampling run).

    ``sample`` calls ``monitor.velocity(x, t)`` and then ``monitor.gain(t)`` at every stage: the wrapper
    measures the power, the gain (which receives the exact stage time) updates the running energy and
    the switch and returns ``eta_i``. Use a fresh monitor per run (``sample_energy_aware`` does).

    Attributes:
        late_energy: (B,) left-rule integral of the raw power over the late evaluations before the last.
        mean_power: (B,) running mean late power ``P_i`` (0 before ``tau_split``).
        switch: (B,) current switch values ``s_i`` (0 before ``tau_split``, and before ``decide_at``).
        ever_on: (B,) bool, whether ``s_i > 0`` at any late evaluation so far.
        decided_at: the evaluation time at which the switch was frozen (``decide_at`` rule), else None.
        times: evaluation times seen so far.
    """

    def __init__(self, velocity: Velocity, landing: EnergyAwareLanding) -> None:
        if not callable(velocity):
            raise ValueError(f"velocity must be callable v(x, t, **extras), got {type(velocity).__name__}")
        if not isinstance(landing, EnergyAwareLanding):
            raise ValueError(f"landing must be an EnergyAwareLanding, got {type(landing).__name__}")
        self._velocity, self.landing = velocity, landing
        self.times: list[float] = []
        self.late_energy: torch.Tensor | None = None
        self.mean_power: torch.Tensor | None = None
        self.switch: torch.Tensor | None = None
        self.ever_on: torch.Tensor | None = None
        self.decided_at: float | None = None
        self._pending: tuple[float, torch.Tensor] | None = None
        self._last_power: torch.Tensor | None = None
        self._late_start: float | None = None

    def velocity(self, x: torch.Tensor, t: torch.Tensor | float, **extras: Any) -> torch.Tensor:
        """Evaluate the wrapped field and record its power; returns the raw velocity."""
        v = self._velocity(x, t, **extras)
        tt = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
        self._pending = (tt, 0.5 * v.detach().flatten(1).to(torch.float64).pow(2).sum(1))
        return v

    def _update(self, t: float, power: torch.Tensor) -> None:
        if self.late_energy is None:
            self.late_energy = torch.zeros_like(power)
            self.mean_power = torch.zeros_like(power)
            self.switch = torch.zeros_like(power)
            self.ever_on = torch.zeros_like(power, dtype=torch.bool)
        if t >= self.landing.tau_split:
            if self._late_start is None:
                self._late_start = t
                self.mean_power = power.clone()
            else:
                self.late_energy = self.late_energy + (t - self.times[-1]) * self._last_power
                width = t - self._late_start
                self.mean_power = self.late_energy / width if width > 0 else power.clone()
            decide = self.landing.decide_at
            if decide is None:
                self.switch = self.landing.switch(self.mean_power)
            elif self.decided_at is None and t >= decide:
                self.switch = self.landing.switch(self.mean_power)
                self.decided_at = t
            self.ever_on = self.ever_on | (self.switch > 0)
        self.times.append(t)
        self._last_power = power

    def gain(self, t: torch.Tensor | float) -> torch.Tensor:
        """Per-sample ``eta_i(t)``, shape (B,) float64; must follow ``velocity`` at the same time."""
        tt = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else float(t)
        # the sampler hands the velocity t in the state's dtype (float32 for images) and the gain the exact
        # float, so the two agree only to the state's precision; the exact one is kept
        if self._pending is None or abs(tt - self._pending[0]) > 1e-6 * max(1.0, abs(tt)):
            raise ValueError(f"gain(t = {tt}) must follow a velocity evaluation at the same time "
                             f"(last evaluation: {self._pending[0] if self._pending else 'none'})")
        if self.times and tt < self.times[-1]:
            raise ValueError(f"evaluation times must not decrease within one run (got t = {tt} after "
                             f"{self.times[-1]}); use a fresh EnergyMonitor for every sampling run")
        self._update(tt, self._pending[1])
        self._pending = None
        tensor_t, kts = torch.tensor(tt, dtype=torch.float64), self.landing.kts
        if tt < kts.tau_split:
            eta = 1.0 + float(kts.alpha(tensor_t)) if kts.alpha0 else 1.0
            return torch.full_like(self.switch, eta)
        return 1.0 - self.switch * float(kts.beta(tensor_t))


@dataclass
class EnergyAwareResult:
    """Output of :func:`sample_energy_aware`.

    Attributes:
        result: the ``SampleResult`` (``kpe`` is the shaped energy with the per-sample gains).
        damped: (B,) bool, whether the final switch is on (``s_i > 1/2``).
        switch: (B,) final switch values in [0, 1].
        ever_damped: (B,) bool, whether the switch was on (``s_i > 0``) at any late evaluation.
        mean_late_power: (B,) final running mean late power ``P_i``.
        landing: the settings used.
    """

    result: SampleResult
    damped: torch.Tensor
    switch: torch.Tensor
    ever_damped: torch.Tensor
    mean_late_power: torch.Tensor
    landing: EnergyAwareLanding = field(repr=False)


def sample_energy_aware(velocity: Velocity, x0: torch.Tensor, landing: EnergyAwareLanding,
                        **sample_kwargs: Any) -> EnergyAwareResult:
    """Sample with the energy-aware landing (module docstring).

    Args:
        velocity: ``v(x, t, **extras)`` as for ``kpe_lib.sample``.
        x0: initial noise (B, ...).
        landing: the settings.
        **sample_kwargs: passed to ``kpe_lib.sample`` (``n_steps``, ``grid``, ``grid_kind``, ``solver``,
            model extras, ...); ``gain`` and ``tau_split`` are set here.

    Returns:
        EnergyAwareResult.
    """
    for key in ("gain", "tau_split"):
        if key in sample_kwargs:
            raise ValueError(f"{key} is set by the energy-aware landing; do not pass it")
    monitor = EnergyMonitor(velocity, landing)
    res = sample(monitor.velocity, x0, gain=monitor.gain, tau_split=landing.tau_split, **sample_kwargs)
    return EnergyAwareResult(result=res, damped=monitor.switch > 0.5, switch=monitor.switch.clone(),
                             ever_damped=monitor.ever_on.clone(), mean_late_power=monitor.mean_power.clone(), landing=landing)


def mean_late_power(result: SampleResult, tau_split: float | None = None, until: float | None = None
                    ) -> torch.Tensor:
    """Per-sample time-weighted mean of the raw late power of a finished run, (B,) float64.

    ``sum_i dt_i e_raw[i] / sum_i dt_i`` over the steps with ``tau <= t_i < until`` (``until`` None: to the
    end), with the run's own quadrature (``energy_raw``); for a plain Euler run this is exactly the
    running mean ``P_i`` an :class:`EnergyMonitor` sees at the first evaluation at or after ``until``.

    Args:
        result: a ``SampleResult``, or any record with ``energy_raw`` (N, B), ``grid`` (N + 1,) and
            ``tau_split`` (e.g. ``kpe_lib.experiments.celeba_kts.ConfigEval``).
        tau_split: the boundary (default: the run's own).
        until: end of the window (exclusive), or None.
    """
    if getattr(result, "energy_raw", None) is None:
        raise ValueError("result has no energy profile: sample with track_energy=True")
    tau = result.tau_split if tau_split is None else float(tau_split)
    grid = result.grid.to(torch.float64)
    late = grid[:-1] >= tau
    if until is not None:
        late &= grid[:-1] < float(until)
    if not bool(late.any()):
        raise ValueError(f"no step of the grid starts in [tau_split, until) = [{tau}, {until})")
    dts = (grid[1:] - grid[:-1])[late].to(result.energy_raw.device)
    e = result.energy_raw[late].to(torch.float64)
    return (dts[:, None] * e).sum(0).cpu() / float(dts.sum())


def late_power_threshold(result: SampleResult, quantile: float, tau_split: float | None = None,
                         until: float | None = None) -> float:
    """Calibrate ``threshold``: the ``quantile`` of :func:`mean_late_power` over a (plain) run's samples
    (``result`` and ``until`` as for :func:`mean_late_power`; pass ``until=decide_at`` for a decided switch).

    With ``quantile = q`` roughly the top ``1 - q`` fraction of paths by late energy gets damped.
    """
    if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    return float(torch.quantile(mean_late_power(result, tau_split, until), float(quantile)))
