"""Fixed-step explicit solvers that expose their stages (Mathematics §2, §3).

Each solver advances ``dx/dt = eta(t) v(x, t)`` by one step and returns its stage velocities, so that the
kinetic energy can be integrated with the solver's own quadrature at no extra velocity evaluation.
Every stage evaluates the gain at its own time (Mathematics §3 [choice]).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# A shaped field: (x (B, ...), t float) -> (raw velocity v (B, ...), gain eta: float or Tensor (B,)).
ShapedField = Callable[[torch.Tensor, float], "tuple[torch.Tensor, float | torch.Tensor]"]


@dataclass(frozen=True)
class ButcherScheme:
    """An explicit Runge-Kutta scheme in Butcher form.

    Attributes:
        name: solver name.
        c: stage time offsets as fractions of the step.
        a: lower-triangular stage coefficients, ``a[j]`` has ``j`` entries.
        b: update weights for the stage slopes.
        energy_weights: quadrature weights of the stages for the energy integral (Mathematics §2 "solver" rule).
        order: classical order of the scheme.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    energy_weights: tuple[float, ...]
    order: int

    @property
    def stages(self) -> int:
        return len(self.c)


SOLVERS: dict[str, ButcherScheme] = {
    "euler": ButcherScheme("euler", (0.0,), ((),), (1.0,), (1.0,), 1),
    # midpoint: the energy uses the midpoint rule on the second stage only.
    "midpoint": ButcherScheme("midpoint", (0.0, 0.5), ((), (0.5,)), (0.0, 1.0), (0.0, 1.0), 2),
    # Heun: trapezoid over the predictor (t_i) and corrector (t_{i+1}) stages.
    "heun": ButcherScheme("heun", (0.0, 1.0), ((), (1.0,)), (0.5, 0.5), (0.5, 0.5), 2),
    "rk4": ButcherScheme("rk4", (0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                         (1 / 6, 1 / 3, 1 / 3, 1 / 6), (1 / 6, 1 / 3, 1 / 3, 1 / 6), 4),
}


@dataclass
class Step:
    """One solver step.

    Attributes:
        x: state at the end of the step, shape (B, ...).
        velocities: raw (unshaped) velocity of each stage, each (B, ...).
        gains: gain eta of each stage, floats or (B,) tensors.
        times: time of each stage.
    """

    x: torch.Tensor
    velocities: list[torch.Tensor]
    gains: list[float | torch.Tensor]
    times: list[float]


def _scale(eta: float | torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``eta * v`` for a scalar gain or a per-sample gain of shape (B,)."""
    if isinstance(eta, float) and eta == 1.0:
        return v  # multiplying by 1 is exact; skipping it saves a pass over the state
    if isinstance(eta, torch.Tensor) and eta.ndim == 1:
        return eta.to(v.dtype).view(-1, *([1] * (v.ndim - 1))) * v
    return eta * v


def rk_step(scheme: ButcherScheme, field: ShapedField, x: torch.Tensor, t: float, dt: float) -> Step:
    """Advance ``x`` from ``t`` to ``t + dt`` with an explicit Runge-Kutta scheme.

    Args:
        scheme: the Butcher scheme (see ``SOLVERS``).
        field: shaped field returning (raw velocity, gain) at (x, t).
        x: current state (B, ...).
        t: current time.
        dt: step size (> 0).

    Returns:
        The ``Step`` with the new state and every stage's raw velocity and gain.
    """
    velocities: list[torch.Tensor] = []
    gains: list[float | torch.Tensor] = []
    slopes: list[torch.Tensor] = []
    times: list[float] = []
    for j in range(scheme.stages):
        tj = t + scheme.c[j] * dt
        v, eta = field(_combine(x, scheme.a[j], slopes, dt), tj)
        velocities.append(v)
        gains.append(eta)
        slopes.append(_scale(eta, v))
        times.append(tj)
    return Step(_combine(x, scheme.b, slopes, dt), velocities, gains, times)


def _combine(x: torch.Tensor, coeffs: tuple[float, ...], slopes: list[torch.Tensor], dt: float) -> torch.Tensor:
    """``x + sum_k coeffs[k] dt slopes[k]``, one fused ``torch.add(..., alpha=)`` per non-zero coefficient.

    The fused add makes one pass over the state per term instead of two (scale, then add); a state needing no
    update (every coefficient zero, e.g. the first stage) is returned as is.
    """
    out = x
    for coeff, slope in zip(coeffs, slopes):
        if coeff != 0.0:
            out = torch.add(out, slope, alpha=coeff * dt)
    return out
