"""AtomGaussianVelocity: the exact field of "training atoms + a fitted Gaussian" (Mathematics §4 identities)."""
import math

import pytest
import torch

from kpe_lib import EmpiricalVelocity, sample
from kpe_lib.mixture_velocity import AtomGaussianVelocity


def _train(n=12, d=3, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("t", [0.05, 0.4, 0.9])
def test_velocity_is_the_score_identity(t):
    # Mathematics §4: v(x, t) = (x + (1 - t) grad log p_t(x)) / t for the marginal of the linear path
    field = AtomGaussianVelocity(_train(), rho=0.3, cov_floor=1e-2)
    x = torch.randn(7, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64).requires_grad_(True)
    (score,) = torch.autograd.grad(field.log_density(x, t).sum(), x)
    assert torch.allclose(field(x.detach(), t), (x.detach() + (1 - t) * score) / t, rtol=1e-8, atol=1e-9)


def test_gaussian_component_density_matches_torch_distributions():
    train = _train(n=30, d=4, seed=2)
    field = AtomGaussianVelocity(train, rho=0.5, cov_floor=1e-3)
    t, x = 0.6, torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    cov = torch.cov(train.T)
    lam, u = torch.linalg.eigh(cov)
    sigma = u @ torch.diag(lam.clamp_min(1e-3)) @ u.T
    mvn = torch.distributions.MultivariateNormal(t * train.mean(0), t * t * sigma + (1 - t) ** 2 * torch.eye(4))
    atoms = torch.distributions.Normal(t * train[None], 1 - t).log_prob(x[:, None]).sum(-1)  # (5, 30)
    expected = torch.logsumexp(torch.cat([math.log(0.5 / 30) + atoms, math.log(0.5) + mvn.log_prob(x)[:, None]], 1), 1)
    assert torch.allclose(field.log_density(x, t), expected, rtol=1e-10)
    g = field.gaussian_weight(x, t)
    assert torch.allclose(g, torch.exp(math.log(0.5) + mvn.log_prob(x) - expected), rtol=1e-9)


def test_velocity_is_the_posterior_blend_of_empirical_and_gaussian_fields():
    # v = (1 - w_G) v*_EFM + w_G v_G, with v_G = mu + (t Sigma - sigma I) S^-1 (x - t mu) by a dense solve
    train = _train(n=10, d=6, seed=4)
    field = AtomGaussianVelocity(train, rho=0.5, cov_floor=1e-3)
    t, sigma = 0.7, 0.3
    gen = torch.Generator().manual_seed(5)
    x = t * train[:6] + sigma * torch.linspace(0.5, 3.0, 6, dtype=torch.float64)[:, None] * torch.randn(
        6, 6, generator=gen, dtype=torch.float64)
    lam, u = torch.linalg.eigh(torch.cov(train.T))
    cov = u @ torch.diag(lam.clamp_min(1e-3)) @ u.T
    mu = train.mean(0)
    s_mat = t * t * cov + sigma ** 2 * torch.eye(6, dtype=torch.float64)
    v_gauss = mu + torch.linalg.solve(s_mat, (x - t * mu).T).T @ (t * cov - sigma * torch.eye(6, dtype=torch.float64)).T
    w_g = field.gaussian_weight(x, t)[:, None]
    assert 0.01 < float(w_g.max()) and float(w_g.min()) < 0.99  # both kinds of component matter here
    expected = (1 - w_g) * EmpiricalVelocity(train)(x, t) + w_g * v_gauss
    assert torch.allclose(field(x, t), expected, rtol=1e-9, atol=1e-10)


def test_samples_split_into_copies_and_novel_points():
    # atoms spread far apart in 2D; about rho of the paths end on the Gaussian, the rest on an atom
    train = 4.0 * _train(n=40, d=2, seed=6)
    field = AtomGaussianVelocity(train, rho=0.5, cov_floor=1e-2)
    x0 = torch.randn(400, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    res = sample(field, x0, n_steps=100)
    copies = torch.cdist(res.x, train).min(1).values < 0.02  # atoms are ~4 apart
    assert 0.35 < float(copies.float().mean()) < 0.65
    assert bool(torch.isfinite(res.kpe).all())


@pytest.mark.parametrize("kwargs, match", [(dict(rho=0.0), "rho"), (dict(rho=1.0), "rho"),
                                           (dict(cov_floor=0.0), "cov_floor")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AtomGaussianVelocity(_train(), **kwargs)


def test_bad_time_and_shape():
    field = AtomGaussianVelocity(_train())
    with pytest.raises(ValueError, match="t must"):
        field(torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="one time"):
        field(torch.zeros(2, 3), torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="shape"):
        field(torch.zeros(2, 4), 0.5)
