"""Tests of kpe_lib.models.guidance with a class-conditional field whose guided flow is known exactly."""
import pytest
import torch
from torch import nn

from kpe_lib import KTS, time_grid
from kpe_lib.models.guidance import class_balanced_noise, gain_description, sample_guided


class ConstantPerClass(nn.Module):
    """v(x, t, y) = c_y, with row K of ``c`` the null class: every guided path is a straight line."""

    def __init__(self, c: torch.Tensor) -> None:
        super().__init__()
        self.c, self.num_classes = c, c.shape[0] - 1

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y
        return self.c[y].reshape(x.shape).to(x.dtype).clone()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ConstantPerClass(torch.randn(4, 6, dtype=torch.float64))  # K = 3 classes + null, d = 6


@pytest.mark.parametrize("scale", [0.0, 1.0, 1.5, 4.0])
def test_guided_kpe_and_endpoint_are_exact(model, scale):
    noise = class_balanced_noise(9, (6,), num_classes=3, seed=1, dtype=torch.float64)
    run = sample_guided(model, noise.x0, noise.labels, scale=scale, n_steps=7, batch_size=4)
    v = model.c[3] + scale * (model.c[noise.labels] - model.c[3])  # CFG of Mathematics §5's setting, by hand
    assert torch.allclose(run.x, noise.x0 + v, atol=1e-12)
    assert torch.allclose(run.kpe, 0.5 * v.pow(2).sum(1), rtol=1e-12)
    assert torch.allclose(run.kpe_early + run.kpe_late, run.kpe, rtol=1e-12)
    assert run.nfe == 7 and run.model_evals == (7 if scale in (0.0, 1.0) else 14)
    assert run.energy.shape == (7, 9) and run.gain is None and run.scale == scale


def test_kts_gain_scales_path_and_energy_as_the_euler_sums(model):
    noise = class_balanced_noise(6, (6,), num_classes=3, seed=2, dtype=torch.float64)
    gain = KTS(alpha0=0.05, beta0=0.05)
    n = 10
    run = sample_guided(model, noise.x0, noise.labels, scale=1.5, gain=gain, n_steps=n)
    t = time_grid(n).double()
    eta = torch.as_tensor(gain(t[:-1])).double()
    dt = t[1:] - t[:-1]
    v = model.c[3] + 1.5 * (model.c[noise.labels] - model.c[3])
    assert torch.allclose(run.x, noise.x0 + (eta * dt).sum() * v, atol=1e-12)
    assert torch.allclose(run.kpe, 0.5 * v.pow(2).sum(1) * (eta ** 2 * dt).sum(), rtol=1e-12)
    assert torch.allclose(run.kpe_raw, 0.5 * v.pow(2).sum(1), rtol=1e-12)
    assert run.gain["alpha0"] == 0.05 and run.gain["kind"] == "KTS"


def test_batching_does_not_change_results(model):
    noise = class_balanced_noise(10, (6,), num_classes=3, seed=3, dtype=torch.float64)
    a = sample_guided(model, noise.x0, noise.labels, scale=2.0, n_steps=5, batch_size=3)
    b = sample_guided(model, noise.x0, noise.labels, scale=2.0, n_steps=5, batch_size=100)
    assert torch.equal(a.x, b.x) and torch.equal(a.kpe, b.kpe) and torch.equal(a.energy, b.energy)


def test_noise_is_balanced_seeded_and_prefix_stable():
    a = class_balanced_noise(25, (2, 4, 4), num_classes=10, seed=7)
    b = class_balanced_noise(10, (2, 4, 4), num_classes=10, seed=7)
    assert torch.equal(a.x0[:10], b.x0) and torch.equal(a.labels[:10], b.labels)
    assert torch.bincount(a.labels).tolist() == [3] * 5 + [2] * 5
    with pytest.raises(ValueError, match="num_classes"):
        class_balanced_noise(5, (2,), num_classes=0)


def test_bad_labels_are_refused(model):
    with pytest.raises(ValueError, match="labels"):
        sample_guided(model, torch.zeros(4, 6), torch.zeros(3, dtype=torch.long), scale=1.5)
    with pytest.raises(ValueError, match="labels"):
        sample_guided(model, torch.zeros(4, 6), torch.zeros(4), scale=1.5)


def test_gain_description():
    assert gain_description(None) is None
    assert gain_description(KTS(beta0=0.02))["beta0"] == 0.02
