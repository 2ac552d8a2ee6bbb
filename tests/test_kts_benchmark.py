"""The KTS benchmark helpers against closed-form oracles (kpe_lib.kts_benchmark)."""
import numpy as np
import pytest
import torch

from kpe_lib.kts_benchmark import (SamplerSpec, frechet_to_reference, paired_fmem_change, pareto_mask, run_config,
                                   summary_row, to_unit_range)
from kpe_lib.metrics import feature_statistics, frechet_distance, memorization_fraction

F64 = torch.float64


def attractor(train: torch.Tensor, targets: torch.Tensor):
    """v(x, t) = (a - x) / (1 - t) towards a fixed training item a per sample: the straight path
    x_t = (1 - t) x0 + t a, which Euler follows exactly, so FM lands on a (memorised) and KPE = 1/2 |a - x0|^2."""
    a = train[targets]

    def v(x, t):
        return (a.to(x.dtype) - x) / (1 - t).view(-1, *[1] * (x.ndim - 1))
    return v


@pytest.fixture
def setting():
    g = torch.Generator().manual_seed(0)
    train = 3 * torch.randn(6, 1, 4, 4, generator=g, dtype=F64)
    x0 = torch.randn(10, 1, 4, 4, generator=g, dtype=F64)
    targets = torch.arange(10) % 6
    return train, x0, attractor(train, targets), targets


def test_spec_steps_and_validation():
    assert SamplerSpec("m", solver="midpoint", nfe=100).n_steps == 50
    assert SamplerSpec("e", nfe=250).n_steps == 250
    assert SamplerSpec("fm").kts.is_identity
    with pytest.raises(ValueError, match="nfe"):
        SamplerSpec("m", solver="midpoint", nfe=25)
    with pytest.raises(ValueError, match="solver"):
        SamplerSpec("x", solver="leapfrog")
    with pytest.raises(ValueError, match="beta0"):
        SamplerSpec("x", beta0=0.1)  # eta(1) = 1 - 0.1 * 19.09 < 0
    with pytest.raises(ValueError, match="no threshold"):
        SamplerSpec("fm").landing_rule
    assert SamplerSpec("ea", beta0=0.05, threshold=3.0).landing_rule.threshold == 3.0


def test_fm_on_the_attractor_memorises_everything_and_kpe_is_exact(setting):
    train, x0, v, targets = setting
    ev = run_config(v, x0, SamplerSpec("fm", nfe=20), train, n_boot=50)
    assert torch.allclose(ev.samples, train[targets], atol=1e-12)
    assert ev.memorization.value == 1.0
    kpe = 0.5 * (train[targets] - x0).flatten(1).pow(2).sum(1)
    assert torch.allclose(ev.kpe, kpe, rtol=1e-12)
    assert torch.allclose(ev.kpe_early + ev.kpe_late, ev.kpe, rtol=1e-13)
    assert torch.allclose(ev.kpe_early, 0.6 * kpe, rtol=1e-12)  # constant speed, 12 of 20 steps early
    assert ev.nfe == 20 and ev.damped is None


def test_landing_leaves_a_known_residual(setting):
    train, x0, v, targets = setting
    # Euler with gain eta_i: x_{i+1} - a = (x_i - a)(1 - eta_i dt / (1 - t_i)); the product is the residual
    spec = SamplerSpec("land", beta0=0.05, nfe=10)
    ev = run_config(v, x0, spec, train, n_boot=50)
    grid = torch.linspace(0, 1, 11, dtype=F64)
    factor = 1.0
    for i in range(10):
        t, dt = float(grid[i]), float(grid[i + 1] - grid[i])
        factor *= 1 - spec.kts(t) * dt / (1 - t)
    a = train[targets]
    assert 0.01 < factor < 1  # FM has factor 0 (the last step lands on a); the landing stops short
    assert torch.allclose(ev.samples, a + factor * (x0 - a), atol=1e-12)


def test_paired_change_is_the_mean_difference(setting):
    train, x0, v, targets = setting
    fm = run_config(v, x0, SamplerSpec("fm", nfe=10), train, n_boot=50)
    land = run_config(v, x0, SamplerSpec("land", beta0=0.05, nfe=10), train, n_boot=50)
    d = paired_fmem_change(fm.memorization, land.memorization, n_boot=200)
    expect = float((land.memorization.memorized.double() - fm.memorization.memorized.double()).mean())
    assert d.value == pytest.approx(expect, abs=1e-15)
    assert d.ci[0] <= d.value <= d.ci[1]
    row = summary_row(land, base=fm, n_boot=200)
    assert row["dfmem_pct"] == pytest.approx(100 * expect)
    assert row["fmem_pct"] == pytest.approx(100 * land.memorization.value)
    with pytest.raises(ValueError, match="paired"):
        other = memorization_fraction(x0[:3], train, n_boot=10)
        paired_fmem_change(fm.memorization, other)


def test_energy_aware_spec_runs_and_reports_damped(setting):
    train, x0, v, targets = setting
    never = run_config(v, x0, SamplerSpec("ea", beta0=0.05, threshold=float("inf"), nfe=10), train, n_boot=20)
    fm = run_config(v, x0, SamplerSpec("fm", nfe=10), train, n_boot=20)
    assert torch.equal(never.samples, fm.samples) and not bool(never.damped.any())
    always = run_config(v, x0, SamplerSpec("ea", beta0=0.05, threshold=0.0, nfe=10), train, n_boot=20)
    fixed = run_config(v, x0, SamplerSpec("land", beta0=0.05, nfe=10), train, n_boot=20)
    assert bool(always.damped.all()) and torch.allclose(always.samples, fixed.samples, atol=1e-12)
    assert summary_row(always)["damped_pct"] == 100.0


def brute_front(x, y):
    pts = list(zip(x, y))
    return np.array([not any((q[0] <= p[0] and q[1] <= p[1] and q != p) for q in pts) for p in pts])


def test_pareto_mask_matches_the_definition():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 6, 15).astype(float), rng.integers(0, 6, 15).astype(float)
        assert np.array_equal(pareto_mask(x, y), brute_front(x.tolist(), y.tolist()))
    assert pareto_mask([1.0, np.nan, 0.5], [1.0, 0.0, 2.0]).tolist() == [True, False, True]
    with pytest.raises(ValueError):
        pareto_mask([1.0, 2.0], [1.0])


def test_unit_range():
    x = torch.tensor([-0.6, -0.2, 0.3, 0.7])
    assert torch.allclose(to_unit_range(x, 0.4), torch.tensor([0.0, 0.2, 0.7, 1.0]))


@pytest.mark.parametrize("m", [5, 40, 90])
def test_low_rank_frechet_equals_the_full_formula(m):
    rng = np.random.default_rng(m)
    d = 60
    ref_feats = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) / 4
    fake = rng.normal(size=(m, d)) * 1.3 + 0.5
    ref = feature_statistics(torch.from_numpy(ref_feats))
    fs = feature_statistics(torch.from_numpy(fake))
    full = frechet_distance(ref.mu, ref.sigma, fs.mu, fs.sigma)
    assert frechet_to_reference(ref, fake) == pytest.approx(full, rel=1e-6)  # eigh rounding of S1^(1/2)
    assert abs(frechet_to_reference(ref, ref_feats)) < 1e-6 * float(np.trace(ref.sigma))  # a set against itself (rounding ~ sqrt(eps))
    with pytest.raises(ValueError):
        frechet_to_reference(ref, fake[:, :10])
