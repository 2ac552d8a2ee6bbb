"""bf16 autocast and torch.compile give the same samples as the plain model within tolerance."""
import shutil

import pytest
import torch
from torch import nn

from kpe_lib import KTS, sample
from kpe_lib.accelerate import accelerate


class Field(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(9, 64), nn.SiLU(), nn.Linear(64, 8))

    def forward(self, x, t):
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))


def test_flags_off_returns_the_model_itself():
    model = Field()
    assert accelerate(model) is model
    with pytest.raises(ValueError, match="velocity"):
        accelerate(3)


def test_bf16_matches_fp32_within_tolerance():
    model, x0 = Field(), torch.randn(64, 8)
    ref = sample(model, x0, n_steps=20, gain=KTS(alpha0=0.05, beta0=0.01))
    fast = sample(accelerate(model, bf16=True), x0, n_steps=20, gain=KTS(alpha0=0.05, beta0=0.01))
    assert fast.x.dtype == torch.float32 and fast.kpe.dtype == torch.float64
    # bf16 has an 8-bit mantissa: relative error ~ 2^-8 per evaluation
    assert torch.allclose(fast.x, ref.x, atol=5e-2, rtol=5e-2)
    assert torch.allclose(fast.kpe, ref.kpe, rtol=3e-2)
    assert not torch.equal(fast.x, ref.x)  # it really ran in reduced precision


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compile_matches_eager():
    model, x0 = Field(), torch.randn(16, 8)
    ref = sample(model, x0, n_steps=10, solver="heun")
    fast = sample(accelerate(model, compile=True), x0, n_steps=10, solver="heun")
    assert torch.allclose(fast.x, ref.x, atol=1e-5) and torch.allclose(fast.kpe, ref.kpe, rtol=1e-5)
