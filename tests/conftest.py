"""Shared pytest set-up. Kept minimal: other test modules may add their own fixtures here."""
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "browser: opens the built HTML book in headless Chromium (needs /usr/bin/chromium)")


@pytest.fixture
def tiny_unet():
    """A one-channel UNet (W = 8, 8x8 inputs) in eval mode whose every weight is moved off its initial value: the
    output layers start at zero (v = 0), and a field that is not trivial is what batch-size tests need."""
    from kpe_lib.models import UNet

    torch.manual_seed(0)
    unet = UNet(in_channels=1, width=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, groups=4).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return unet
