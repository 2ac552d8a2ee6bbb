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


def test_a_class_conditional_model_stays_one_for_guidance():
    from kpe_lib.models import GuidedVelocity, UNet
    from kpe_lib.models.guidance import sample_guided

    torch.manual_seed(0)
    unet = UNet(in_channels=1, width=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, groups=4,
                num_classes=3).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fast = accelerate(unet, bf16=True)
    assert fast.num_classes == 3 and not hasattr(accelerate(Field(), bf16=True), "num_classes")
    x0, y = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        ref = sample_guided(unet, x0, y, scale=2.0, n_steps=4, guide=GuidedVelocity)
        got = sample_guided(fast, x0, y, scale=2.0, n_steps=4, guide=GuidedVelocity)
    assert got.model_evals == ref.model_evals == 8  # CFG: conditional and null class per step
    assert torch.allclose(got.x, ref.x, atol=5e-2, rtol=5e-2) and not torch.equal(got.x, ref.x)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="torch.compile on CPU needs a C compiler")
def test_compile_matches_eager():
    model, x0 = Field(), torch.randn(16, 8)
    ref = sample(model, x0, n_steps=10, solver="heun")
    fast = sample(accelerate(model, compile=True), x0, n_steps=10, solver="heun")
    assert torch.allclose(fast.x, ref.x, atol=1e-5) and torch.allclose(fast.kpe, ref.kpe, rtol=1e-5)


def test_resolve_bf16_passes_bools_and_reads_auto_from_the_hardware(monkeypatch):
    from kpe_lib import accelerate as acc

    assert acc.resolve_bf16(True) is True and acc.resolve_bf16(False, "cuda") is False
    monkeypatch.setattr(acc, "cpu_has_bf16", lambda cpuinfo=None: True)
    assert acc.resolve_bf16("auto", "cpu") is True
    monkeypatch.setattr(acc, "cpu_has_bf16", lambda cpuinfo=None: False)
    assert acc.resolve_bf16("auto", "cpu") is False and acc.resolve_bf16("auto", "mps") is False
    with pytest.raises(ValueError, match="bf16 must be true, false or 'auto'"):
        acc.resolve_bf16("yes")


def test_cpu_has_bf16_reads_the_flags_line_only():
    from kpe_lib.accelerate import cpu_has_bf16

    assert cpu_has_bf16("processor : 0\nflags : fpu amx_bf16 amx_tile\n")
    assert not cpu_has_bf16("model name : avx512_bf16 marketing\nflags : fpu sse2 avx2\n")
    assert not cpu_has_bf16("")
