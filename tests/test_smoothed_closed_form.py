"""The Gaussian-smoothed closed form (Mathematics §4.7) against the point closed form, the analytic
Gaussian-to-Gaussian flow, brute-force quadrature and its own identities."""
import math

import pytest
import torch

from kpe_lib import EmpiricalVelocity, SmoothedEmpiricalVelocity, sample

D64 = torch.float64


def test_sigma_zero_is_the_empirical_closed_form_bit_for_bit():
    torch.manual_seed(0)
    train, x = torch.randn(30, 6), torch.randn(5, 6, dtype=D64)
    for fused in (False, True):
        for chunk in (4096, 7):
            efm = EmpiricalVelocity(train, chunk_size=chunk, fused=fused)
            smooth = SmoothedEmpiricalVelocity(train, 0.0, chunk_size=chunk, fused=fused)
            for t in (0.0, 0.4, 0.99):
                assert torch.equal(efm(x, t), smooth(x, t))
                assert torch.equal(efm.denoise(x, t), smooth.denoise(x, t))
                assert torch.equal(efm.log_density(x, t), smooth.log_density(x, t))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        SmoothedEmpiricalVelocity(train, 0.0)(x, 1.0)  # sigma = 0 keeps the singularity at t = 1


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9, 0.99])
def test_tiny_sigma_recovers_the_empirical_closed_form(t):
    torch.manual_seed(1)
    train, x = torch.randn(40, 2, 3, 3), torch.randn(7, 2, 3, 3, dtype=D64)
    v0, v = EmpiricalVelocity(train)(x, t), SmoothedEmpiricalVelocity(train, 1e-6)(x, t)
    assert torch.allclose(v, v0, rtol=1e-6, atol=1e-6)
    assert not torch.equal(v, v0) or t == 0.0  # the smoothed path really ran


def one_atom_oracle(a, sigma, x, t):
    """The Gaussian-to-Gaussian flow N(0, I) -> N(a, sigma^2 I), derived without the implementation's algebra.

    The marginals are N(t a, s(t)^2 I) with s(t) = sqrt((1 - t)^2 + t^2 sigma^2); the flow map is
    x(t) = t a + s(t) z for z ~ N(0, I), so the velocity at x is a + s'(t) z with z = (x - t a) / s(t).
    s'(t) is taken by autograd of s(t) itself."""
    tt = torch.tensor(t, dtype=D64, requires_grad=True)
    s = torch.sqrt((1 - tt) ** 2 + (tt * sigma) ** 2)
    (ds,) = torch.autograd.grad(s, tt)
    z = (x - t * a) / float(s.detach())
    return a + float(ds) * z


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("t", [0.0, 0.25, 0.8, 0.999, 1.0])
def test_one_atom_is_the_gaussian_to_gaussian_flow(sigma, t):
    torch.manual_seed(2)
    a = torch.randn(1, 5, dtype=D64)
    x = torch.randn(4, 5, dtype=D64)
    v = SmoothedEmpiricalVelocity(a, sigma)(x, t)
    assert torch.allclose(v, one_atom_oracle(a, sigma, x, t), rtol=1e-10, atol=1e-10)


def test_one_atom_flow_lands_on_the_transported_noise():
    # the flow map x(1) = a + sigma x0: every solver reaches it, Heun and RK4 evaluating at t = 1
    a, sigma = torch.tensor([[0.7, -1.5, 2.0]], dtype=D64), 0.3
    x0 = torch.randn(6, 3, dtype=D64, generator=torch.Generator().manual_seed(3))
    field = SmoothedEmpiricalVelocity(a, sigma)
    for solver, n_steps, tol in (("euler", 2000, 2e-3), ("heun", 200, 1e-5), ("rk4", 50, 1e-8)):
        res = sample(field, x0, n_steps=n_steps, solver=solver, track_energy=False)
        assert torch.allclose(res.x, a + sigma * x0, atol=tol), solver


def brute_force_2d(atoms, sigma, x, t, half_width=9.0, n=601):
    """E[x1 - x0 | x_t = x] and E[x1 | x_t = x] by quadrature over x1 on a grid (2-D only, no closed form).

    Given x1 the path has x_t ~ N(t x1, (1 - t)^2 I) and velocity (x1 - x) / (1 - t)."""
    g = torch.linspace(-half_width, half_width, n, dtype=D64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)  # (G, 2) values of x1
    prior = torch.logsumexp(-((grid[:, None] - atoms[None]) ** 2).sum(-1) / (2 * sigma ** 2), 1)  # log p_1 + c
    vel, den = [], []
    for xi in x:
        loglik = -((xi - t * grid) ** 2).sum(-1) / (2 * (1 - t) ** 2)
        w = torch.softmax(prior + loglik, 0)[:, None]
        den.append((w * grid).sum(0))
        vel.append((w * (grid - xi) / (1 - t)).sum(0))
    return torch.stack(vel), torch.stack(den)


@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_three_atoms_in_2d_match_brute_force_quadrature(t):
    atoms = torch.tensor([[-1.0, 0.5], [1.5, 1.0], [0.2, -1.3]], dtype=D64)
    sigma = 0.6
    x = torch.tensor([[0.0, 0.0], [1.0, 0.8], [-0.9, 0.1], [0.3, -1.5]], dtype=D64) * t
    field = SmoothedEmpiricalVelocity(atoms, sigma)
    vel, den = brute_force_2d(atoms, sigma, x, t)
    assert torch.allclose(field(x, t), vel, atol=1e-7)
    assert torch.allclose(field.denoise(x, t), den, atol=1e-7)


def test_three_atoms_in_2d_sample_the_smoothed_mixture():
    # the flow carries N(0, I) onto (1/3) sum_i N(a_i, sigma^2 I): its mean and covariance, by Monte Carlo
    atoms = torch.tensor([[-2.0, 0.5], [1.5, 1.0], [0.2, -1.3]], dtype=D64)
    sigma = 0.4
    x0 = torch.randn(6000, 2, dtype=D64, generator=torch.Generator().manual_seed(4))
    x1 = sample(SmoothedEmpiricalVelocity(atoms, sigma), x0, n_steps=100, solver="heun", track_energy=False).x
    centred = atoms - atoms.mean(0)
    cov = centred.T @ centred / 3 + sigma ** 2 * torch.eye(2, dtype=D64)
    assert torch.allclose(x1.mean(0), atoms.mean(0), atol=0.06)
    assert torch.allclose(torch.cov(x1.T), cov, atol=0.1)


@pytest.mark.parametrize("t", [0.2, 0.7, 0.97, 1.0])
def test_score_identity_and_log_density(t):
    # v = (x + (1 - t) grad log p_t) / t with p_t = (1/n) sum_i N(t a_i, s_t^2 I) (Mathematics §4.4, §4.7)
    torch.manual_seed(5)
    train, sigma = torch.randn(30, 5, dtype=D64), 0.3
    field = SmoothedEmpiricalVelocity(train, sigma)
    x = torch.randn(6, 5, dtype=D64, requires_grad=True)
    (score,) = torch.autograd.grad(field.log_density(x, t).sum(), x)
    assert torch.allclose(field(x.detach(), t), (x.detach() + (1 - t) * score) / t, atol=1e-9)
    var = (1 - t) ** 2 + (t * sigma) ** 2
    comps = torch.distributions.MultivariateNormal(t * train, var * torch.eye(5, dtype=D64))
    expect = torch.logsumexp(comps.log_prob(x.detach()[:, None, :]), 1) - math.log(30)
    assert torch.allclose(field.log_density(x.detach(), t), expect, atol=1e-10)


def test_finite_at_t_one_where_it_is_the_state():
    torch.manual_seed(6)
    train = torch.rand(64, 3 * 32 * 32) - 0.5
    field = SmoothedEmpiricalVelocity(train, 0.05, chunk_size=16)
    x = torch.randn(4, 3 * 32 * 32, dtype=D64)
    for t in (1 - 1e-9, 1.0):
        v = field(x, t)
        assert bool(torch.isfinite(v).all()) and bool(torch.isfinite(field.log_density(x, t)).all())
    assert torch.allclose(field(x, 1.0), x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(field(x, torch.ones(4, dtype=D64)), x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("t", [0.3, 0.95, 1.0])
def test_fused_chunked_and_per_sample_times_agree(t):
    torch.manual_seed(7)
    train, x = torch.randn(53, 8), torch.randn(9, 8, dtype=D64)
    plain = SmoothedEmpiricalVelocity(train, 0.2)
    tb = torch.full((9,), t, dtype=D64)
    for other in (SmoothedEmpiricalVelocity(train, 0.2, fused=True),
                  SmoothedEmpiricalVelocity(train, 0.2, chunk_size=10),
                  SmoothedEmpiricalVelocity(train, 0.2, chunk_size=10, fused=True)):
        assert torch.allclose(plain(x, t), other(x, t), rtol=1e-12, atol=1e-12)
        assert torch.allclose(plain(x, t), other(x, tb), rtol=1e-12, atol=1e-12)
    ts = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.99, 1.0, 0.3, 0.7, 0.2], dtype=D64)
    per = plain(x, ts)
    for i in range(9):
        assert torch.allclose(per[i:i + 1], plain(x[i:i + 1], float(ts[i])), rtol=1e-12, atol=1e-12)


def test_bad_arguments_name_the_parameter():
    train = torch.randn(4, 3)
    for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="sigma"):
            SmoothedEmpiricalVelocity(train, bad)
    with pytest.raises(ValueError, match="train contains NaN"):
        SmoothedEmpiricalVelocity(torch.tensor([[float("inf"), 0.0]]), 0.1)
    with pytest.raises(ValueError, match="train must be"):
        SmoothedEmpiricalVelocity(torch.randn(3), 0.1)
    field = SmoothedEmpiricalVelocity(train, 0.1)
    with pytest.raises(ValueError, match="x must be"):
        field(torch.randn(2, 4), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        field(torch.randn(2, 3), 1.01)
    with pytest.raises(ValueError, match="t must"):
        field(torch.randn(2, 3), float("nan"))
    with pytest.raises(ValueError, match="x contains NaN"):
        field(torch.tensor([[float("nan"), 0.0, 0.0]]), 0.5)
    assert field(torch.randn(2, 3), 0.5).dtype == torch.float32  # the input's dtype, as the closed form
