"""The empirical flow matching closed form (Mathematics §4) against brute force and its identities."""
import math

import pytest
import torch

from kpe_lib import EmpiricalVelocity, sample


def brute_force_velocity(train, x, t):
    """v* from the definition: softmax of -||x - t a_i||^2 / (2 (1 - t)^2), float64, no tricks."""
    a, xf = train.reshape(len(train), -1).double(), x.reshape(len(x), -1).double()
    d2 = ((xf[:, None, :] - t * a[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * (1 - t) ** 2), 1)
    return ((w @ a - xf) / (1 - t)).reshape(x.shape)


def test_single_training_point_is_reached_exactly():
    a = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    res = sample(EmpiricalVelocity(a), torch.randn(5, 3, dtype=torch.float64), n_steps=50)
    assert torch.allclose(res.x, a.expand(5, 3), atol=1e-12)


@pytest.mark.parametrize("t", [0.0, 0.3, 0.9, 0.99])
def test_matches_brute_force(t):
    torch.manual_seed(0)
    train, x = torch.randn(40, 2, 3, 3), torch.randn(7, 2, 3, 3)
    v = EmpiricalVelocity(train)(x.double(), t)
    assert torch.allclose(v, brute_force_velocity(train, x, t), atol=1e-9, rtol=1e-9)


def test_per_sample_times():
    torch.manual_seed(1)
    train, x = torch.randn(20, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
    v = EmpiricalVelocity(train)(x, t)
    for i in range(3):
        assert torch.allclose(v[i:i + 1], brute_force_velocity(train, x[i:i + 1], float(t[i])), atol=1e-10)


@pytest.mark.parametrize("t", [0.2, 0.7, 0.97])
def test_score_identity_by_autograd(t):
    # v*(x, t) = (x + (1 - t) grad log p_t(x)) / t  (Mathematics §4)
    torch.manual_seed(2)
    efm = EmpiricalVelocity(torch.randn(30, 5))
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    (score,) = torch.autograd.grad(efm.log_density(x, t).sum(), x)
    assert torch.allclose(efm(x.detach(), t), (x.detach() + (1 - t) * score) / t, atol=1e-9)
    # E[x0 | x_t = x] = -(1 - t) grad log p_t(x): the posterior mean of the noise
    w = efm.weights(x.detach(), t)
    x0_mean = (x.detach()[:, None, :] - t * efm.train[None]) / (1 - t)
    assert torch.allclose((w[..., None] * x0_mean).sum(1), -(1 - t) * score, atol=1e-9)


def test_chunked_equals_unchunked():
    torch.manual_seed(3)
    train, x = torch.randn(103, 8), torch.randn(9, 8, dtype=torch.float64)
    whole, chunked = EmpiricalVelocity(train, chunk_size=4096), EmpiricalVelocity(train, chunk_size=10)
    for t in (0.1, 0.8, 0.999):
        assert torch.allclose(whole(x, t), chunked(x, t), rtol=1e-12, atol=1e-12)
        assert torch.allclose(whole.log_density(x, t), chunked.log_density(x, t), rtol=1e-12)
        assert torch.allclose(whole.max_weight(x, t), chunked.weights(x, t).max(1).values, rtol=1e-12)
        assert torch.allclose(chunked.weights(x, t).sum(1), torch.ones(9, dtype=torch.float64))


def test_log_density_is_the_gaussian_mixture():
    torch.manual_seed(4)
    train, x, t = torch.randn(5, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64), 0.4
    comps = torch.distributions.MultivariateNormal(t * train, (1 - t) ** 2 * torch.eye(2, dtype=torch.float64))
    expect = torch.logsumexp(comps.log_prob(x[:, None, :]), 1) - math.log(5)
    assert torch.allclose(EmpiricalVelocity(train).log_density(x, t), expect, atol=1e-12)


def test_float64_finite_close_to_one_in_image_dimension():
    torch.manual_seed(5)
    train = torch.rand(64, 3 * 32 * 32) - 0.5
    efm = EmpiricalVelocity(train, chunk_size=16)
    x = torch.randn(4, 3 * 32 * 32, dtype=torch.float64)
    for gap in (1e-2, 1e-4, 1e-6):
        v = efm(x, 1 - gap)
        assert bool(torch.isfinite(v).all()) and bool(torch.isfinite(efm.log_density(x, 1 - gap)).all())
    # a point on the path of atom 0 at t is pulled straight back to it
    t = 1 - 1e-6
    x_on = (t * train[0] + (1 - t) * torch.randn(3072) * 1e-3).double()[None]
    assert torch.allclose(efm.denoise(x_on, t)[0], train[0].double(), atol=1e-9)


def test_returns_input_dtype_and_rejects_bad_input():
    efm = EmpiricalVelocity(torch.randn(4, 3))
    assert efm(torch.randn(2, 3), 0.5).dtype == torch.float32
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        efm(torch.randn(2, 3), 1.0)
    with pytest.raises(ValueError, match="shape"):
        efm(torch.randn(2, 4), 0.5)
    with pytest.raises(ValueError, match="chunk_size"):
        EmpiricalVelocity(torch.randn(4, 3), chunk_size=0)
    with pytest.raises(ValueError, match="NaN"):
        EmpiricalVelocity(torch.tensor([[float("nan"), 0.0]]))
