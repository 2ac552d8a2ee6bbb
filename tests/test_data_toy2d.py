"""2D toy distributions: the log-density is a normalised density and is the law the sampler draws from."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from kpe_lib.data import TOY_NAMES, Checkerboard, EightGaussians, Rings, TwoMoons, toy_dataset


def _grid(lo: float, hi: float, h: float) -> tuple[torch.Tensor, float]:
    """Midpoints of an h-spaced grid on [lo, hi]^2 (midpoint quadrature nodes) and the cell area."""
    k = int(round((hi - lo) / h))
    c = lo + (torch.arange(k, dtype=torch.float64) + 0.5) * (hi - lo) / k
    return torch.cartesian_prod(c, c), ((hi - lo) / k) ** 2


@pytest.mark.parametrize("name", TOY_NAMES)
def test_density_integrates_to_one(name: str) -> None:
    ds = toy_dataset(name)
    lo, hi = ds.bounds
    pts, area = _grid(lo - 1.0, hi + 1.0, 0.05)  # checkerboard: grid lines fall on the square edges
    total = float(ds.density(pts).sum() * area)
    assert total == pytest.approx(1.0, abs=2e-3)
    # the bounds hold (almost) all the mass
    inside = pts[((pts >= lo) & (pts <= hi)).all(1)]
    assert float(ds.density(inside).sum() * area) == pytest.approx(1.0, abs=3e-3)


@pytest.mark.parametrize("name", TOY_NAMES)
def test_samples_agree_with_density(name: str) -> None:
    """Histogram of 100k samples vs the density integrated over each bin (binomial z-scores)."""
    ds = toy_dataset(name)
    n, bins, sub = 100_000, 12, 12
    x = ds.sample(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lo, hi = ds.bounds
    assert float(((x >= lo) & (x <= hi)).all(1).double().mean()) > 0.999
    counts, edges, _ = np.histogram2d(x[:, 0].numpy(), x[:, 1].numpy(), bins=bins, range=[[lo, hi], [lo, hi]])
    pts, area = _grid(lo, hi, (hi - lo) / (bins * sub))  # sub x sub quadrature nodes per bin
    p = (ds.density(pts) * area).reshape(bins, sub, bins, sub).sum((1, 3)).numpy()  # (bin_x, bin_y)
    z = (counts / n - p) / np.sqrt(np.maximum(p * (1 - p), 1e-12) / n)
    assert np.abs(z).max() < 5.0, f"worst bin z = {np.abs(z).max():.2f}"
    expected = n * p
    used = expected > 5  # Pearson chi-square over the populated bins; dof ~ number of bins
    chi2 = float((((counts - expected) ** 2)[used] / expected[used]).sum())
    dof = int(used.sum()) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), f"chi2 = {chi2:.1f} for {dof} dof"
    assert counts[~used].sum() < 50  # nothing lands where the density says (almost) nothing can


def test_eight_gaussians_matches_scipy_mixture() -> None:
    ds = EightGaussians(radius=2.0, std=0.4)
    x = torch.tensor([[2.0, 0.0], [0.0, 0.0], [1.3, 1.5], [-3.0, 0.2]], dtype=torch.float64)
    ref = np.zeros(len(x))
    for k in range(8):
        a = 2 * math.pi * k / 8
        ref += multivariate_normal(mean=[2 * math.cos(a), 2 * math.sin(a)], cov=0.16 * np.eye(2)).pdf(x.numpy()) / 8
    np.testing.assert_allclose(ds.log_density(x).numpy(), np.log(ref), rtol=1e-10)
    assert torch.allclose(ds.means.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))


def test_rings_closed_form_matches_angle_integral() -> None:
    """Bessel closed form vs brute-force quadrature over the angle of each ring."""
    ds = Rings(radii=(0.5, 1.5), std=0.3)
    x = torch.tensor([[0.0, 0.0], [0.5, 0.1], [1.2, -0.9], [3.0, 2.0], [-0.1, 1.6]], dtype=torch.float64)
    theta = torch.linspace(0, 2 * math.pi, 4_001, dtype=torch.float64)[:-1]  # periodic: plain mean is exact-ish
    ref = torch.zeros(len(x), dtype=torch.float64)
    for r in ds.radii:
        c = r * torch.stack([theta.cos(), theta.sin()], 1)
        d2 = torch.cdist(x, c).square()
        ref += torch.exp(-d2 / (2 * 0.09)).mean(1) / (2 * math.pi * 0.09) / 2
    torch.testing.assert_close(ds.log_density(x), ref.log(), rtol=1e-9, atol=1e-9)


def test_two_moons_is_its_mixture() -> None:
    ds = TwoMoons(scale=1.0, std=0.1, n_components=3)
    m = ds.means
    # midpoint nodes u = pi/6, pi/2, 5pi/6 on the upper arc, shifted by (-1/2, -1/4)
    torch.testing.assert_close(m[1], torch.tensor([-0.5, 0.75], dtype=torch.float64))
    torch.testing.assert_close(m[4], torch.tensor([0.5, -0.75], dtype=torch.float64))
    x = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    ref = sum(multivariate_normal(mean=mk.numpy(), cov=0.01 * np.eye(2)).pdf(x.numpy()) for mk in m) / 6
    np.testing.assert_allclose(ds.log_density(x).numpy(), np.log(ref), rtol=1e-10)


def test_checkerboard_values() -> None:
    ds = Checkerboard()
    x = torch.tensor([[-1.5, -1.5], [-1.5, -0.5], [0.5, 0.5], [1.99, 1.99], [2.0, 0.5], [-2.5, 0.0]])
    ld = ds.log_density(x)
    assert ld[0].item() == pytest.approx(-math.log(8)) and ld[2].item() == pytest.approx(-math.log(8))
    assert ld[3].item() == pytest.approx(-math.log(8))
    assert torch.isneginf(ld[[1, 4, 5]]).all()  # light square, right edge (half-open), outside
    s = ds.sample(10_000, generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(ds.log_density(s)).all()


@pytest.mark.parametrize("name", TOY_NAMES)
def test_sampling_contract(name: str) -> None:
    ds = toy_dataset(name)
    a = ds.sample(64, generator=torch.Generator().manual_seed(3))
    b = ds.sample(64, generator=torch.Generator().manual_seed(3))
    assert a.shape == (64, 2) and a.dtype == torch.float32 and torch.equal(a, b)
    assert ds.log_density(a).shape == (64,) and ds.log_density(a).dtype == torch.float32
    assert ds.sample(0).shape == (0, 2)
    assert ds.name == name


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="name must be one of"):
        toy_dataset("spiral")
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        EightGaussians().log_density(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="n must be"):
        Rings().sample(-1)
    with pytest.raises(ValueError, match="std"):
        EightGaussians(std=0.0)
