"""Adapters for other velocity conventions give the same samples as the native one."""
import torch

from kpe_lib import KTS, sample
from kpe_lib.adapters import ReversedTime, TimeFirst


def native(x, t):
    return torch.sin(2 * x) + t[:, None] * x


def test_time_first_models_give_identical_samples():
    x0 = torch.randn(8, 2, dtype=torch.float64)
    ref = sample(native, x0, n_steps=20, solver="heun", gain=KTS(alpha0=0.1))
    batched = sample(TimeFirst(lambda t, x: native(x, t)), x0, n_steps=20, solver="heun", gain=KTS(alpha0=0.1))
    scalar = sample(TimeFirst(lambda t, x: native(x, t.expand(len(x))), scalar_time=True), x0, n_steps=20,
                    solver="heun", gain=KTS(alpha0=0.1))
    assert torch.equal(ref.x, batched.x) and torch.equal(ref.kpe, batched.kpe)
    assert torch.equal(ref.x, scalar.x)


def test_reversed_time_models_give_the_same_samples():
    # a model in time s = 1 - t (s = 1 noise) has velocity u(x, s) = -v(x, 1 - s)
    reversed_model = lambda x, s: -native(x, 1.0 - s)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    ref = sample(native, x0, n_steps=20, solver="rk4")
    out = sample(ReversedTime(reversed_model), x0, n_steps=20, solver="rk4")
    assert torch.allclose(ref.x, out.x, atol=1e-14) and torch.allclose(ref.kpe, out.kpe, rtol=1e-13)
