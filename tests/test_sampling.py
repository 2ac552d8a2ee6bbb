"""The sampler and its energies against analytic oracles (Mathematics §2, §3)."""
import math

import numpy as np
import pytest
import torch

from kpe_lib import KTS, sample, time_grid
from kpe_lib.reference import reference_kpe
from kpe_lib.sampling import NonFiniteError

SOLVERS = ["euler", "midpoint", "heun", "rk4"]
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def constant(c):
    return lambda x, t: c.expand_as(x).to(x.dtype)


def cubic(x, t):  # v = 3 t^2: x(1) - x(0) = 1, KPE = 1/2 * int 9 t^4 = 9/10 per coordinate
    return 3.0 * t.view(-1, *[1] * (x.ndim - 1)) ** 2 * torch.ones_like(x)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("kind", ["uniform", "cosine"])
@pytest.mark.parametrize("rule", ["solver", "left"])
def test_constant_velocity_energy_is_exact(solver, kind, rule):
    c = torch.tensor([1.5, -2.0, 0.5], dtype=torch.float64)
    x0 = torch.randn(5, 3, dtype=torch.float64)
    res = sample(constant(c), x0, n_steps=7, grid_kind=kind, solver=solver, energy_rule=rule)
    expect = 0.5 * float(c.pow(2).sum())
    assert torch.allclose(res.kpe, torch.full((5,), expect, dtype=torch.float64), rtol=1e-13)
    assert torch.allclose(res.kpe_raw, res.kpe, rtol=1e-13)
    assert torch.allclose(res.x, x0 + c, atol=1e-13)
    assert res.nfe == 7 * STAGES[solver]
    assert res.energy.shape == (7, 5)
    dts = (res.grid[1:] - res.grid[:-1])[:, None]
    assert torch.allclose((dts * res.energy).sum(0), res.kpe, rtol=1e-13)
    assert torch.allclose(res.kpe_early + res.kpe_late, res.kpe, rtol=1e-13)


def test_early_late_split_follows_tau_split():
    c = torch.tensor([2.0])
    res = sample(constant(c), torch.zeros(2, 1, dtype=torch.float64), n_steps=10)
    assert torch.allclose(res.kpe_early, torch.full((2,), 0.6 * 2.0, dtype=torch.float64))
    res = sample(constant(c), torch.zeros(2, 1, dtype=torch.float64), n_steps=10, tau_split=0.3)
    assert torch.allclose(res.kpe_late, torch.full((2,), 0.7 * 2.0, dtype=torch.float64))


def test_rk4_moves_cubic_exactly():
    x0 = torch.randn(4, 2, dtype=torch.float64)
    res = sample(cubic, x0, n_steps=3, solver="rk4")
    assert torch.allclose(res.x, x0 + 1.0, atol=1e-14)


def _observed_order(solver, rule, velocity, exact, x0, ns=(8, 16, 32, 64)):
    errors = [abs(float(sample(velocity, x0, n_steps=n, solver=solver, energy_rule=rule).kpe[0]) - exact)
              for n in ns]
    return np.polyfit(np.log(ns), np.log(errors), 1)[0] * -1


@pytest.mark.parametrize("solver,rule,order", [
    ("euler", "solver", 1), ("midpoint", "solver", 2), ("heun", "solver", 2), ("rk4", "solver", 4),
    ("euler", "left", 1), ("midpoint", "left", 1), ("heun", "left", 1), ("rk4", "left", 1),
])
def test_kpe_converges_at_the_quadrature_order_for_cubic(solver, rule, order):
    x0 = torch.zeros(1, 1, dtype=torch.float64)
    observed = _observed_order(solver, rule, cubic, 0.9, x0)
    assert observed == pytest.approx(order, abs=0.1)


# State-dependent field dx/dt = -x: x(1) = x0 / e and KPE = ||x0||^2 (1 - e^-2) / 4.
@pytest.mark.parametrize("solver,order", [("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)])
def test_kpe_converges_for_a_state_dependent_field(solver, order):
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    exact = 5.0 * (1 - math.exp(-2)) / 4
    observed = _observed_order(solver, "solver", lambda x, t: -x, exact, x0, ns=(32, 64, 128))
    assert observed == pytest.approx(order, abs=0.1)


def test_reference_agrees_with_fine_rk4():
    x0 = torch.randn(3, 2, dtype=torch.float64)
    gain = KTS(alpha0=0.1, beta0=0.01, landing="linear")
    field = lambda x, t: torch.sin(3 * x) + t[:, None]
    ref = reference_kpe(field, x0, gain=gain, rtol=1e-10, atol=1e-10)
    fine = sample(field, x0, grid=torch.cat([time_grid(300) * 0.6, 0.6 + time_grid(200)[1:] * 0.4]),
                  solver="rk4", gain=gain)
    assert torch.allclose(ref.kpe, fine.kpe, rtol=1e-8)
    assert torch.allclose(ref.kpe_raw, fine.kpe_raw, rtol=1e-8)
    assert torch.allclose(ref.x, fine.x, atol=1e-8)


def mlp_field(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))
    return lambda x, t: net(torch.cat([x, t[:, None].to(x.dtype)], 1))


@pytest.mark.parametrize("solver", SOLVERS)
def test_identity_gain_is_bit_identical_to_plain_sampling(solver):
    field, x0 = mlp_field(), torch.randn(16, 2)
    plain = sample(field, x0, n_steps=20, solver=solver)
    shaped = sample(field, x0, n_steps=20, solver=solver, gain=KTS())
    assert torch.equal(plain.x, shaped.x) and torch.equal(plain.kpe, shaped.kpe)


def test_kts_euler_matches_the_reference_update():
    field, x0 = mlp_field(1), torch.randn(8, 2, dtype=torch.float64)
    gain, grid = KTS(alpha0=0.05, beta0=0.02), time_grid(50)
    res = sample(lambda x, t: field(x.float(), t.float()).double(), x0, grid=grid, gain=gain)
    x, kpe, kpe_raw = x0.clone(), torch.zeros(8, dtype=torch.float64), torch.zeros(8, dtype=torch.float64)
    for i in range(50):
        t, dt = float(grid[i]), float(grid[i + 1] - grid[i])
        v = field(x.float(), torch.full((8,), t)).double()
        kpe += 0.5 * dt * (gain(t) * v).pow(2).sum(1)
        kpe_raw += 0.5 * dt * v.pow(2).sum(1)
        x = x + gain(t) * dt * v
    assert torch.allclose(res.x, x, atol=1e-12)
    assert torch.allclose(res.kpe, kpe, rtol=1e-12) and torch.allclose(res.kpe_raw, kpe_raw, rtol=1e-12)


@pytest.mark.parametrize("solver", ["midpoint", "rk4"])
def test_gain_is_applied_at_every_stage_time(solver):
    # constant velocity c: x moves by c * int eta and the shaped KPE is 1/2 ||c||^2 int eta^2
    a0, b0, s, k = 0.2, 0.02, 0.6, 3.0
    gain = KTS(alpha0=a0, beta0=b0, tau_split=s, k=k)
    int_eta = 1 + a0 * s / 2 - b0 * (1 - s) * (math.expm1(k) / k - 1)
    c = torch.tensor([1.0, 2.0], dtype=torch.float64)
    res = sample(constant(c), torch.zeros(1, 2, dtype=torch.float64), n_steps=200, solver=solver, gain=gain)
    tol = 1e-5 if solver == "midpoint" else 1e-10
    assert torch.allclose(res.x[0], c * int_eta, rtol=tol)
    fine = torch.linspace(0, 1, 200001, dtype=torch.float64)
    int_eta2 = float(torch.trapezoid(gain(fine) ** 2, fine))
    assert float(res.kpe[0]) == pytest.approx(2.5 * int_eta2, rel=1e-5)
    assert float(res.kpe_raw[0]) == pytest.approx(2.5, rel=1e-13)


def test_per_sample_gain_tensor_is_broadcast():
    c = torch.tensor([1.0, 1.0], dtype=torch.float64)
    eta = torch.tensor([1.0, 0.5], dtype=torch.float64)
    res = sample(constant(c), torch.zeros(2, 2, dtype=torch.float64), n_steps=4, gain=lambda t: eta)
    assert torch.allclose(res.x, eta[:, None] * c) and torch.allclose(res.kpe, eta ** 2)


def test_model_kwargs_are_passed_through():
    seen = {}

    def field(x, t, y=None, scale=None):
        seen.update(y=y, scale=scale)
        return torch.zeros_like(x)

    sample(field, torch.zeros(3, 2), n_steps=2, y=torch.tensor([1, 2, 3]), scale=1.5)
    assert seen["scale"] == 1.5 and seen["y"].tolist() == [1, 2, 3]


def test_nan_velocity_raises_with_step_and_time():
    def field(x, t):
        return torch.full_like(x, float("nan")) if float(t[0]) >= 0.5 else torch.ones_like(x)

    with pytest.raises(NonFiniteError, match=r"step 5 of 10 \(t = 0.5"):
        sample(field, torch.zeros(2, 2), n_steps=10)
    with pytest.raises(NonFiniteError, match="step 5"):
        sample(field, torch.zeros(2, 2), n_steps=10, track_energy=False)


def test_grad_dtype_device_and_trajectory():
    x0 = torch.randn(4, 2, requires_grad=True)
    field = lambda x, t: -x
    assert not sample(field, x0, n_steps=3).x.requires_grad
    assert sample(field, x0, n_steps=3, enable_grad=True).x.requires_grad
    res = sample(field, x0.detach().double(), n_steps=3, record_trajectory=True)
    assert res.x.dtype == torch.float64 and res.trajectory.shape == (4, 4, 2)
    assert torch.equal(res.trajectory[0], x0.detach().double()) and torch.equal(res.trajectory[-1], res.x)
    res = sample(field, x0.detach(), n_steps=3, track_energy=False)
    assert res.x.dtype == torch.float32 and res.kpe is None and res.energy is None


def test_images_shape_energy_sums_over_all_coordinates():
    x0 = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    res = sample(lambda x, t: torch.ones_like(x), x0, n_steps=5)
    assert torch.allclose(res.kpe, torch.full((2,), 0.5 * 48, dtype=torch.float64))


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_steps=4, solver="rk45"), "solver"), (dict(n_steps=4, energy_rule="right"), "energy_rule"),
    (dict(), "grid"), (dict(n_steps=4, grid=time_grid(4)), "either grid or n_steps"),
    (dict(grid=torch.tensor([0.0, 0.7, 0.5, 1.0])), "increasing"), (dict(n_steps=4, gain=0.5), "gain"),
    (dict(n_steps=4, grid_kind="log"), "kind"),
])
def test_invalid_sampler_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample(lambda x, t: x, torch.zeros(2, 2), **kwargs)


def test_x0_must_be_floating():
    with pytest.raises(ValueError, match="x0"):
        sample(lambda x, t: x, torch.zeros(2, 2, dtype=torch.long), n_steps=2)
