"""Kinetic Trajectory Shaping (KTS): the scalar gain eta(t) of Mathematics §3.

The sampler integrates ``dx/dt = eta(t) v(x, t)``: a *kinetic launch* ``eta = 1 + alpha(t)`` before
``tau_split`` and a *kinetic soft landing* ``eta = 1 - beta(t)`` after it. No retraining is involved.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kpe_lib._numbers import as_float

LAUNCH_FORMS = ("linear", "constant", "exponential")
LANDING_FORMS = ("exponential", "linear", "constant")


@dataclass(frozen=True)
class KTS:
    """The KTS gain ``eta(t)`` (Mathematics §3). Callable on floats and tensors.

    With ``s = tau_split`` and ``r = (t - s) / (1 - s)``:

    ====================  =================================================
    launch ``alpha(t)``    linear ``alpha0 (1 - t/s)``; constant ``alpha0``;
                           exponential ``alpha0 (exp(k (1 - t/s)) - 1) / (exp(k) - 1)``
    landing ``beta(t)``    exponential ``beta0 (exp(k r) - 1)``; linear ``beta0 r``;
                           constant ``beta0``
    ====================  =================================================

    ``eta(t) = 1 + alpha(t)`` for ``t < s`` and ``1 - beta(t)`` for ``t >= s``.
    With ``alpha0 = beta0 = 0`` the gain is identically 1 and sampling is plain flow matching.

    Args:
        alpha0: launch strength (>= 0).
        beta0: landing strength (>= 0); must keep ``eta > 0`` on [0, 1].
        tau_split: phase boundary ``s`` in (0, 1); also splits KPE into early and late parts.
        launch: one of ``LAUNCH_FORMS``.
        landing: one of ``LANDING_FORMS``.
        k: exponential rate (> 0).

    Example:
        >>> round(KTS(beta0=0.01)(1.0), 3)
        0.809
    """

    alpha0: float = 0.0
    beta0: float = 0.0
    tau_split: float = 0.6
    launch: str = "linear"
    landing: str = "exponential"
    k: float = 3.0

    def __post_init__(self) -> None:
        for name in ("alpha0", "beta0", "tau_split", "k"):  # any real type; numpy / tensor scalars become floats
            value = as_float(getattr(self, name), name)
            if type(getattr(self, name)) not in (int, float):
                object.__setattr__(self, name, value)
        if not 0.0 < self.tau_split < 1.0:
            raise ValueError(f"tau_split must lie in the open interval (0, 1), got {self.tau_split}")
        if self.alpha0 < 0:
            raise ValueError(f"alpha0 must be >= 0 (a launch boosts the early velocity), got {self.alpha0}")
        if self.beta0 < 0:
            raise ValueError(f"beta0 must be >= 0 (a landing damps the late velocity), got {self.beta0}")
        if self.k <= 0:
            raise ValueError(f"k must be > 0, got {self.k}")
        if self.launch not in LAUNCH_FORMS:
            raise ValueError(f"launch must be one of {LAUNCH_FORMS}, got {self.launch!r}")
        if self.landing not in LANDING_FORMS:
            raise ValueError(f"landing must be one of {LANDING_FORMS}, got {self.landing!r}")
        # alpha >= 0 keeps the early phase positive; every landing form's beta is non-decreasing in r,
        # so the minimum of eta on [0, 1] is at t = 1.
        eta_min = 1.0 - self.max_beta
        if eta_min <= 0:
            raise ValueError(
                f"beta0 = {self.beta0} makes eta(1) = {eta_min:.4g} <= 0, which freezes or reverses the flow; "
                f"beta0 must be < {1.0 / (self.max_beta / self.beta0):.6g} for landing={self.landing!r}, k={self.k}")

    @property
    def max_beta(self) -> float:
        """``beta(1)``, the largest landing damping on [0, 1]."""
        scale = {"exponential": math.expm1(self.k), "linear": 1.0, "constant": 1.0}[self.landing]
        return self.beta0 * scale

    @property
    def is_identity(self) -> bool:
        """True when ``eta == 1`` everywhere (plain flow matching)."""
        return self.alpha0 == 0 and self.beta0 == 0

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """Launch boost ``alpha(t)`` for ``t`` in [0, tau_split) (values elsewhere are unused)."""
        u = 1.0 - t / self.tau_split
        if self.launch == "linear":
            return self.alpha0 * u
        if self.launch == "constant":
            return torch.full_like(t, float(self.alpha0))
        return self.alpha0 * torch.expm1(self.k * u) / math.expm1(self.k)

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """Landing damping ``beta(t)`` for ``t`` in [tau_split, 1] (values elsewhere are unused)."""
        r = (t - self.tau_split) / (1.0 - self.tau_split)
        if self.landing == "exponential":
            return self.beta0 * torch.expm1(self.k * r)
        if self.landing == "linear":
            return self.beta0 * r
        return torch.full_like(t, float(self.beta0))

    def __call__(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """Evaluate ``eta(t)``; returns a float for a float and a tensor (same shape) for a tensor."""
        is_tensor = isinstance(t, torch.Tensor)
        tt = t if is_tensor else torch.tensor(float(t), dtype=torch.float64)
        if not tt.is_floating_point():
            tt = tt.to(torch.float64)
        if self.is_identity:
            eta = torch.ones_like(tt)
        else:
            eta = torch.where(tt < self.tau_split, 1.0 + self.alpha(tt), 1.0 - self.beta(tt))
        return eta if is_tensor else float(eta)
