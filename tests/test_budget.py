"""The time budget of a gain and the budget controls of KTS (Mathematics §3.5)."""
import json
import math
import pickle

import pytest
import torch

from kpe_lib import (KTS, ConstantGain, matched_forms, phase_budgets, RenormalisedGain, budget_controls, budget_matched_constant,
                     discrete_time_budget, sample, time_budget, time_grid)
from kpe_lib.models.guidance import gain_description
from kpe_lib.shaping import LANDING_FORMS, LAUNCH_FORMS

D64 = torch.float64
SOLVER_NAMES = ("euler", "midpoint", "heun", "rk4")


class AnyGain:
    """A KTS seen only through its calls (not a KTS, so ``time_budget`` must integrate it numerically)."""

    def __init__(self, gain, with_split=True):
        self.gain = gain
        if with_split:
            self.tau_split = gain.tau_split

    def __call__(self, t):
        return self.gain(t)


def test_budget_of_the_identity_is_one():
    assert time_budget(None) == 1.0
    assert time_budget(KTS()) == 1.0
    assert time_budget(ConstantGain(1.0)) == 1.0
    assert time_budget(lambda t: 1.0) == pytest.approx(1.0, abs=1e-14)  # the quadrature path
    assert time_budget(lambda t: torch.ones_like(t)) == pytest.approx(1.0, abs=1e-14)  # vectorised


@pytest.mark.parametrize("tau, expected", [(0.2, 0.958), (0.4, 0.970), (0.6, 0.982), (0.8, 0.993)])
def test_the_issues_budgets_of_the_tau_split_sweep(tau, expected):
    # the chapter's sweep KTS(alpha0=0.01, beta0=0.01, tau_split=tau): 1 + 0.01 tau/2 - 0.01 (1 - tau) (e^3 - 4)/3
    budget = time_budget(KTS(0.01, 0.01, tau_split=tau))
    assert round(budget, 3) == expected
    assert budget == pytest.approx(1 + 0.005 * tau - 0.01 * (1 - tau) * (math.exp(3) - 4) / 3, abs=1e-15)


@pytest.mark.parametrize("kts, expected", [(KTS(0.01, 0.01), 0.982), (KTS(beta0=0.02), 0.957),
                                           (KTS(beta0=0.05), 0.893), (KTS(alpha0=0.02), 1.006)])
def test_the_values_quoted_in_the_mathematics(kts, expected):
    assert round(time_budget(kts), 3) == expected


@pytest.mark.parametrize("launch", LAUNCH_FORMS)
@pytest.mark.parametrize("landing", LANDING_FORMS)
@pytest.mark.parametrize("tau, k", [(0.2, 3.0), (0.6, 1.0), (0.8, 3.0)])
def test_closed_forms_match_quadrature_of_the_gain_itself(launch, landing, tau, k):
    beta0 = 0.9 / (math.expm1(k) if landing == "exponential" else 1.0)  # strong, valid damping
    kts = KTS(alpha0=0.3, beta0=beta0, tau_split=tau, launch=launch, landing=landing, k=k)
    exact = time_budget(kts)
    assert time_budget(AnyGain(kts)) == pytest.approx(exact, abs=1e-13)  # split at tau: smooth panels
    # without the split the kink or jump falls inside one panel: accurate to about a panel width times the jump
    assert time_budget(AnyGain(kts, with_split=False)) == pytest.approx(exact, abs=2e-3)
    assert time_budget(AnyGain(kts, with_split=False), panels=4096) == pytest.approx(exact, abs=2e-4)


def test_quadrature_of_a_float_only_gain_and_a_per_sample_gain():
    step = lambda t: 0.9 if t < 0.5 else 1.1  # noqa: E731 - fails on a tensor, so it is called node by node
    assert time_budget(step) == pytest.approx(1.0, abs=1e-13)  # the jump sits on a panel edge
    with pytest.raises(ValueError, match="one value per time"):
        time_budget(lambda t: torch.full((3,), 0.9))


def test_renormalised_gain_has_budget_one_and_keeps_the_shape():
    kts = KTS(0.02, 0.03, tau_split=0.4)
    g = RenormalisedGain(kts)
    assert g.budget == time_budget(kts) and g.tau_split == 0.4
    assert time_budget(g) == pytest.approx(1.0, abs=1e-14)
    assert time_budget(AnyGain(g)) == pytest.approx(1.0, abs=1e-13)  # numerically, through its calls
    t = torch.linspace(0, 1, 11, dtype=D64)
    assert torch.allclose(g(t), kts(t) / time_budget(kts), rtol=1e-15)
    assert g(0.9) == pytest.approx(kts(0.9) / time_budget(kts), rel=1e-15)
    assert RenormalisedGain(KTS()).is_identity and not g.is_identity


def test_budget_controls_follow_the_kts_split():
    kts = KTS(0.01, 0.01, tau_split=0.2)
    c = budget_controls(kts)
    assert c.budget == time_budget(kts)
    assert c.constant == ConstantGain(c.budget, tau_split=0.2) == budget_matched_constant(kts)
    assert c.renormalised == RenormalisedGain(kts) and c.renormalised.tau_split == 0.2
    x0 = torch.randn(3, 2, dtype=D64)
    for gain in (c.constant, c.renormalised):
        assert sample(lambda x, t: -x, x0, n_steps=10, gain=gain).tau_split == 0.2


@pytest.mark.parametrize("solver", SOLVER_NAMES)
@pytest.mark.parametrize("grid_kind, n_steps", [("uniform", 100), ("cosine", 37)])
def test_constant_field_moves_by_exactly_the_budget(solver, grid_kind, n_steps):
    # analytic oracle: along v == c the shaped flow ends at x0 + T c (Mathematics §3.5)
    c = torch.tensor([[1.5, -2.0, 0.25]], dtype=D64)
    x0 = torch.randn(4, 3, dtype=D64, generator=torch.Generator().manual_seed(0))
    kts = KTS(0.02, 0.01, tau_split=0.6)
    grid = time_grid(n_steps, grid_kind)

    def run(gain):
        return sample(lambda x, t: c.expand_as(x), x0, grid=grid, solver=solver, gain=gain, track_energy=False).x

    b = time_budget(kts)
    assert torch.allclose(run(budget_matched_constant(kts)), x0 + b * c, rtol=0, atol=1e-13)
    # KTS itself and its renormalisation move by the budget the solver spends on the grid
    tn = discrete_time_budget(kts, grid, solver)
    assert torch.allclose(run(kts), x0 + tn * c, rtol=0, atol=1e-13)
    assert torch.allclose(run(RenormalisedGain(kts)), x0 + (tn / b) * c, rtol=0, atol=1e-13)


def test_discrete_budget_tends_to_the_budget():
    kts = KTS(0.01, 0.01)
    assert round(discrete_time_budget(kts, time_grid(100), "euler"), 3) == 0.983  # Mathematics §3.5
    assert discrete_time_budget(None, time_grid(7, "cosine"), "rk4") == pytest.approx(1.0, abs=1e-15)
    exact = time_budget(kts)
    errors = [abs(discrete_time_budget(kts, time_grid(n), "euler") - exact) for n in (100, 1000)]
    assert errors[1] < errors[0] / 5 and errors[1] < 2e-4  # first order
    assert abs(discrete_time_budget(kts, time_grid(1000), "rk4") - exact) < 1e-6


def test_controls_pickle_and_describe_as_json():
    kts = KTS(0.01, 0.02, tau_split=0.4, launch="constant")
    for gain in (ConstantGain(0.97, tau_split=0.4), RenormalisedGain(kts)):
        assert pickle.loads(pickle.dumps(gain)) == gain
        desc = json.loads(json.dumps(gain_description(gain)))
        assert desc["kind"] == type(gain).__name__ and desc["tau_split"] == 0.4
    desc = gain_description(RenormalisedGain(kts))
    assert desc["gain"]["launch"] == "constant" and desc["budget"] == time_budget(kts)
    assert ConstantGain(0.97)(torch.zeros(5)).shape == (5,) and ConstantGain(0.97)(0.3) == 0.97


def test_bad_arguments_name_the_parameter():
    for bad in (0.0, -0.5, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="eta"):
            ConstantGain(bad)
    with pytest.raises(ValueError, match="tau_split"):
        ConstantGain(0.9, tau_split=1.5)
    with pytest.raises(ValueError, match="gain must be a callable"):
        RenormalisedGain(0.9)
    with pytest.raises(ValueError, match="gain must be a callable"):
        time_budget("KTS")
    with pytest.raises(ValueError, match="panels"):
        time_budget(lambda t: 1.0, panels=0)
    with pytest.raises(ValueError, match="order"):
        time_budget(lambda t: 1.0, order=0)
    with pytest.raises(ValueError, match="solver"):
        discrete_time_budget(KTS(), time_grid(4), "rk45")
    with pytest.raises(ValueError, match="grid"):
        discrete_time_budget(KTS(), torch.tensor([0.0, 0.7, 0.5, 1.0]), "euler")


def test_phase_budgets_match_quadrature_of_each_phase():
    for launch in ("linear", "constant", "exponential"):
        for landing in ("exponential", "linear", "constant"):
            g = KTS(0.03, 0.02, tau_split=0.4, launch=launch, landing=landing, k=2.0)
            add, remove = phase_budgets(g)
            assert add == pytest.approx(time_budget(KTS(0.03, 0.0, tau_split=0.4, launch=launch, k=2.0)) - 1, rel=1e-9)
            assert remove == pytest.approx(1 - time_budget(KTS(0.0, 0.02, tau_split=0.4, landing=landing, k=2.0)),
                                           rel=1e-9)
            assert time_budget(g) == pytest.approx(1 + add - remove, abs=1e-12)
    with pytest.raises(ValueError, match="g must be a KTS gain"):
        phase_budgets(ConstantGain(0.9))


def test_matched_forms_keep_the_phase_budgets_of_the_reference():
    like = KTS(0.01, 0.01)
    for launch in ("linear", "constant", "exponential"):
        for landing in ("exponential", "linear", "constant"):
            g = matched_forms(like, launch, landing)
            assert (g.launch, g.landing, g.tau_split, g.k) == (launch, landing, 0.6, 3.0)
            assert phase_budgets(g) == pytest.approx(phase_budgets(like), rel=1e-12)
            assert time_budget(g) == pytest.approx(time_budget(like), abs=1e-12)
    same = matched_forms(like, "linear", "exponential")
    assert (same.alpha0, same.beta0) == pytest.approx((0.01, 0.01), rel=1e-12)
    lin = matched_forms(like, "linear", "linear")
    assert lin.beta0 == pytest.approx(0.01 * 2 * (math.expm1(3) / 3 - 1)) and lin(1.0) == pytest.approx(1 - lin.beta0)
    with pytest.raises(ValueError, match="launch must be one of"):
        matched_forms(like, "cubic", "linear")
    with pytest.raises(ValueError, match="landing must be one of"):
        matched_forms(like, "linear", "cubic")
    with pytest.raises(ValueError, match="like must be a KTS gain"):
        matched_forms(ConstantGain(0.9), "linear", "linear")
    with pytest.raises(ValueError, match="beta0"):  # an exponential landing cannot remove that much time
        matched_forms(KTS(0.0, 0.5, landing="constant"), "linear", "exponential")
