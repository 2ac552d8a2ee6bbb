"""The time budget of a gain and the two budget controls of KTS (Mathematics §3.5).

A gain ``eta(t)`` moves the state by ``eta dt`` per ``dt`` of the model's clock, so over [0, 1] it spends the
time budget ``T[eta] = int_0^1 eta(t) dt``; a KTS landing with ``eta < 1`` late has ``T < 1`` and stops
short. Two controls separate that deficit from the phase structure of the gain:

* ``ConstantGain(T[eta])``: the same budget spent uniformly (``budget_matched_constant``);
* ``RenormalisedGain(eta)``: the same phase structure with budget 1, ``eta / T[eta]``.

Both are frozen, picklable dataclasses usable as ``gain=`` in ``kpe_lib.sample``, with the ``tau_split`` of
the gain they control, so the early/late energy split is the same for all three runs.

Example:
    >>> round(time_budget(KTS(alpha0=0.01, beta0=0.01)), 4)
    0.9816
    >>> controls = budget_controls(KTS(alpha0=0.01, beta0=0.01))
    >>> round(controls.constant.eta, 4), round(time_budget(controls.renormalised), 12)
    (0.9816, 1.0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from kpe_lib._numbers import as_float, as_int
from kpe_lib.grids import validate_grid
from kpe_lib.sampling import DEFAULT_TAU_SPLIT
from kpe_lib.shaping import KTS
from kpe_lib.solvers import SOLVERS

__all__ = ["time_budget", "discrete_time_budget", "phase_budgets", "matched_forms", "ConstantGain", "RenormalisedGain",
           "BudgetControls", "budget_matched_constant", "budget_controls"]

Gain = Callable[[Any], Any]


@dataclass(frozen=True)
class ConstantGain:
    """The constant gain ``eta(t) == eta``: time budget ``eta`` spent uniformly (Mathematics §3.5).

    Args:
        eta: the gain, finite and > 0.
        tau_split: the early/late boundary reported to the sampler (the gain itself has no phases), in [0, 1].

    Example:
        >>> ConstantGain(0.98)(0.3)
        0.98
    """

    eta: float
    tau_split: float = DEFAULT_TAU_SPLIT

    def __post_init__(self) -> None:
        object.__setattr__(self, "eta", as_float(self.eta, "eta", minimum=0.0, open_min=True))
        object.__setattr__(self, "tau_split", as_float(self.tau_split, "tau_split", minimum=0.0, maximum=1.0))

    @property
    def is_identity(self) -> bool:
        """True when ``eta == 1`` (plain flow matching)."""
        return self.eta == 1.0

    def __call__(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """``eta`` as a float for a float ``t``, a tensor of ``t``'s shape for a tensor."""
        if isinstance(t, torch.Tensor):
            return torch.full_like(t if t.is_floating_point() else t.double(), self.eta)
        return self.eta


@dataclass(frozen=True)
class RenormalisedGain:
    """A gain divided by its own time budget: ``eta(t) / T[eta]``, whose budget is 1 (Mathematics §3.5).

    Args:
        gain: the gain to renormalise, a callable ``t -> eta`` of the time alone (a ``KTS``, say); a frozen
            dataclass keeps this gain picklable and its ``gain_description`` JSON-ready.

    Attributes:
        budget: ``T[gain]``, computed once (``time_budget``).
        tau_split: ``gain.tau_split`` (0.6 when the gain has none).

    Example:
        >>> g = RenormalisedGain(KTS(beta0=0.02))
        >>> round(g.budget, 4), round(g(0.0), 4)
        (0.9571, 1.0448)
    """

    gain: Gain
    budget: float = field(init=False)
    tau_split: float = field(init=False)

    def __post_init__(self) -> None:
        if not callable(self.gain):
            raise ValueError(f"gain must be a callable t -> eta, got {type(self.gain).__name__}")
        object.__setattr__(self, "budget", time_budget(self.gain))
        split = getattr(self.gain, "tau_split", DEFAULT_TAU_SPLIT)
        object.__setattr__(self, "tau_split", as_float(split, "gain.tau_split", minimum=0.0, maximum=1.0))

    @property
    def is_identity(self) -> bool:
        """True when the renormalised gain is identically 1 (the gain was a constant)."""
        return isinstance(self.gain, ConstantGain) or (isinstance(self.gain, KTS) and self.gain.is_identity)

    def __call__(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """``gain(t) / budget``: a float for a float ``t``, a tensor for a tensor."""
        eta = self.gain(t)
        return eta / self.budget if isinstance(eta, torch.Tensor) else float(eta) / self.budget


@dataclass(frozen=True)
class BudgetControls:
    """A gain's time budget and its two controls (Mathematics §3.5).

    Attributes:
        budget: ``T[eta]``.
        constant: ``ConstantGain(T[eta])`` with the gain's ``tau_split``.
        renormalised: ``RenormalisedGain(eta)``, budget 1.
    """

    budget: float
    constant: ConstantGain
    renormalised: RenormalisedGain


_LAUNCH_AREA = {"linear": lambda k: 0.5, "constant": lambda k: 1.0,
                "exponential": lambda k: 1.0 / k - 1.0 / math.expm1(k)}
_LANDING_AREA = {"linear": lambda k: 0.5, "constant": lambda k: 1.0, "exponential": lambda k: math.expm1(k) / k - 1.0}


def phase_budgets(g: KTS) -> tuple[float, float]:
    """``(int_0^s alpha dt, int_s^1 beta dt)`` of a KTS gain in closed form (the table of Mathematics §3.5):
    the time the launch adds and the time the landing removes, so ``T = 1 + launch - landing``.

    Example:
        >>> [round(v, 4) for v in phase_budgets(KTS(alpha0=0.01, beta0=0.01))]
        [0.003, 0.0214]
    """
    if not isinstance(g, KTS):
        raise ValueError(f"g must be a KTS gain, got {type(g).__name__}")
    s, k = g.tau_split, g.k
    return g.alpha0 * s * _LAUNCH_AREA[g.launch](k), g.beta0 * (1.0 - s) * _LANDING_AREA[g.landing](k)


def _kts_budget(g: KTS) -> float:
    """``T`` of a KTS gain in closed form: ``1 + int_0^s alpha - int_s^1 beta``."""
    if g.is_identity:
        return 1.0
    launch, landing = phase_budgets(g)
    return 1.0 + launch - landing


def matched_forms(like: KTS, launch: str, landing: str) -> KTS:
    """The KTS gain with the given launch and landing forms whose launch adds and whose landing removes as
    much time as ``like``'s (Mathematics §3.5): the same time budget and the same split of it between the
    phases, so forms are compared at equal damping rather than at equal ``alpha0, beta0``.

    Raises:
        ValueError: a form not in ``LAUNCH_FORMS`` / ``LANDING_FORMS``, or a landing that would need
            ``eta(1) <= 0`` to remove that much time.

    Example:
        >>> g = matched_forms(KTS(alpha0=0.01, beta0=0.01), "constant", "linear")
        >>> round(g.alpha0, 4), round(g.beta0, 4), round(time_budget(g), 4)
        (0.005, 0.1072, 0.9816)
    """
    if not isinstance(like, KTS):
        raise ValueError(f"like must be a KTS gain, got {type(like).__name__}")
    if launch not in _LAUNCH_AREA:
        raise ValueError(f"launch must be one of {tuple(_LAUNCH_AREA)}, got {launch!r}")
    if landing not in _LANDING_AREA:
        raise ValueError(f"landing must be one of {tuple(_LANDING_AREA)}, got {landing!r}")
    add, remove = phase_budgets(like)
    s, k = like.tau_split, like.k
    return KTS(alpha0=add / (s * _LAUNCH_AREA[launch](k)), beta0=remove / ((1.0 - s) * _LANDING_AREA[landing](k)),
               tau_split=s, launch=launch, landing=landing, k=k)


def _gauss_legendre(order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights of the ``order``-point Gauss-Legendre rule on [-1, 1] (Golub-Welsch), float64."""
    k = torch.arange(1, order, dtype=torch.float64)
    off = k / torch.sqrt(4.0 * k * k - 1.0)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))
    return nodes, 2.0 * vectors[0] ** 2


def _values(gain: Gain, times: torch.Tensor) -> torch.Tensor:
    """``gain`` at every time (1-D float64): one vectorised call where the gain takes a tensor, else node by node."""
    try:
        out = gain(times)
    except Exception:  # a gain written for float times only (``0.9 if t < 0.5 else 1.0``)
        out = None
    if isinstance(out, torch.Tensor) and out.shape == times.shape:
        return out.detach().to("cpu", torch.float64)
    return torch.tensor([_eta_at(gain, t) for t in times.tolist()], dtype=torch.float64)


def _eta_at(gain: Gain | None, t: float) -> float:
    """``gain(t)`` as a float (1 for no gain); a gain answering one value per sample is refused."""
    if gain is None:
        return 1.0
    eta = gain(t)
    if isinstance(eta, torch.Tensor) and eta.numel() != 1:
        raise ValueError(f"gain(t) returned a tensor of shape {tuple(eta.shape)} at t = {t:.6g}: the time "
                         "budget needs a gain of the time alone (one value per time, not per sample)")
    return float(eta)


def _quadrature(gain: Gain, lo: float, hi: float, panels: int, order: int) -> float:
    """``int_lo^hi gain(t) dt`` by composite Gauss-Legendre (open nodes: a jump at ``lo`` or ``hi`` is not seen)."""
    if hi <= lo:
        return 0.0
    nodes, weights = _gauss_legendre(order)
    edges = torch.linspace(lo, hi, panels + 1, dtype=torch.float64)
    half = (edges[1:] - edges[:-1])[:, None] / 2.0  # (panels, 1)
    times = ((edges[:-1] + edges[1:])[:, None] / 2.0 + half * nodes[None]).reshape(-1)
    return float((_values(gain, times).reshape(panels, order) * half * weights[None]).sum())


def time_budget(gain: Gain | None, *, panels: int = 256, order: int = 8) -> float:
    """The time budget ``T[eta] = int_0^1 eta(t) dt`` of a gain (Mathematics §3.5).

    Exact for ``None`` (1), ``KTS`` (the closed forms of Mathematics §3.5), ``ConstantGain`` and
    ``RenormalisedGain`` of those; any other callable ``t -> eta`` is integrated by composite Gauss-Legendre
    quadrature (``panels`` panels of ``order`` nodes), split at its ``tau_split`` when it has one, so the
    kink or jump of a two-phase gain falls on a panel edge; a smooth gain is then integrated to rounding.

    Args:
        gain: a gain of the time alone (the ``gain=`` of ``kpe_lib.sample``) or None (``eta == 1``).
        panels: quadrature panels per phase (>= 1).
        order: Gauss-Legendre nodes per panel (>= 1).

    Returns:
        ``T[eta]`` as a float.

    Raises:
        ValueError: ``gain`` not callable, ``panels`` or ``order`` below 1, or a gain returning one value per
            sample (a (B,) tensor) instead of one per time.
    """
    panels, order = as_int(panels, "panels", minimum=1), as_int(order, "order", minimum=1)
    if gain is None:
        return 1.0
    if isinstance(gain, KTS):
        return _kts_budget(gain)
    if isinstance(gain, ConstantGain):
        return gain.eta
    if isinstance(gain, RenormalisedGain):
        return time_budget(gain.gain, panels=panels, order=order) / gain.budget
    if not callable(gain):
        raise ValueError(f"gain must be a callable t -> eta or None, got {type(gain).__name__}")
    split = getattr(gain, "tau_split", None)
    split = as_float(split, "gain.tau_split", minimum=0.0, maximum=1.0) if split is not None else 1.0
    return _quadrature(gain, 0.0, split, panels, order) + _quadrature(gain, split, 1.0, panels, order)


def discrete_time_budget(gain: Gain | None, grid: torch.Tensor, solver: str = "euler") -> float:
    """The budget a fixed-step solver spends: ``T_N = sum_i dt_i sum_j b_j eta(t_i + c_j dt_i)`` (Mathematics §3.5).

    Along a constant velocity ``v`` the sampler moves the state by exactly ``T_N v``, whatever the solver; it
    tends to ``time_budget(gain)`` as the steps shrink. The gain is evaluated at the same float times as the
    sampler's stages.

    Args:
        gain: a gain of the time alone, or None.
        grid: (N + 1,) time grid from 0 to 1 (``time_grid``).
        solver: one of ``kpe_lib.solvers.SOLVERS``.

    Raises:
        ValueError: an unknown ``solver``, an invalid ``grid``, or a gain returning one value per sample.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {solver!r}")
    if gain is not None and not callable(gain):
        raise ValueError(f"gain must be a callable t -> eta or None, got {type(gain).__name__}")
    scheme = SOLVERS[solver]
    times = validate_grid(torch.as_tensor(grid)).detach().to("cpu", torch.float64).tolist()
    total = 0.0
    for t, t_next in zip(times[:-1], times[1:]):
        dt = t_next - t
        total += dt * sum(b * _eta_at(gain, t + c * dt) for b, c in zip(scheme.b, scheme.c))
    return total


def budget_matched_constant(gain: Gain | None) -> ConstantGain:
    """``ConstantGain(T[gain])`` with the gain's ``tau_split``: the gain's budget without its phase structure."""
    split = getattr(gain, "tau_split", DEFAULT_TAU_SPLIT)
    return ConstantGain(time_budget(gain), tau_split=split)


def budget_controls(gain: Gain) -> BudgetControls:
    """The time budget of ``gain`` and its two controls (budget-matched constant, renormalised to budget 1).

    Example:
        >>> c = budget_controls(KTS(0.01, 0.01, tau_split=0.2))
        >>> round(c.budget, 3), c.constant.tau_split, c.renormalised.tau_split
        (0.958, 0.2, 0.2)
    """
    renormalised = RenormalisedGain(gain)
    return BudgetControls(budget=renormalised.budget, constant=budget_matched_constant(gain),
                          renormalised=renormalised)
