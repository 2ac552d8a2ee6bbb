"""The KTS benchmark helpers against closed-form oracles (kpe_lib.experiments.celeba_kts)."""
import numpy as np
import pytest
import torch

from kpe_lib import KTS
from kpe_lib.experiments.celeba_kts import (SamplerSpec, paired_fid_change, paired_fmem_change, pareto_mask, run_config, subset,
                                   summary_row, to_unit_range)
from kpe_lib.metrics import FrechetReference, feature_statistics, frechet_distance, memorization_fraction

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
        SamplerSpec("x", KTS(beta0=0.1))  # eta(1) = 1 - 0.1 * 19.09 < 0
    with pytest.raises(ValueError, match="no threshold"):
        SamplerSpec("fm").landing_rule
    assert SamplerSpec("ea", KTS(beta0=0.05), threshold=3.0).landing_rule.threshold == 3.0
    assert SamplerSpec("ea", KTS(beta0=0.05), threshold=3.0, decide_at=0.8).landing_rule.decide_at == 0.8
    with pytest.raises(ValueError, match="decide_at"):
        SamplerSpec("x", KTS(beta0=0.05), decide_at=0.8)


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
    spec = SamplerSpec("land", KTS(beta0=0.05), nfe=10)
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
    land = run_config(v, x0, SamplerSpec("land", KTS(beta0=0.05), nfe=10), train, n_boot=50)
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
    never = run_config(v, x0, SamplerSpec("ea", KTS(beta0=0.05), threshold=float("inf"), nfe=10), train, n_boot=20)
    fm = run_config(v, x0, SamplerSpec("fm", nfe=10), train, n_boot=20)
    assert torch.equal(never.samples, fm.samples) and not bool(never.damped.any())
    always = run_config(v, x0, SamplerSpec("ea", KTS(beta0=0.05), threshold=0.0, nfe=10), train, n_boot=20)
    fixed = run_config(v, x0, SamplerSpec("land", KTS(beta0=0.05), nfe=10), train, n_boot=20)
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
def test_frechet_reference_equals_the_full_formula(m):
    rng = np.random.default_rng(m)
    d = 60  # m < D and m > D
    ref_feats = rng.normal(size=(200, d)) @ rng.normal(size=(d, d)) / 4
    fake = rng.normal(size=(m, d)) * 1.3 + 0.5
    ref = feature_statistics(torch.from_numpy(ref_feats))
    fs = feature_statistics(torch.from_numpy(fake))
    r = FrechetReference.from_stats(ref)
    assert r.fid(fake) == pytest.approx(frechet_distance(ref.mu, ref.sigma, fs.mu, fs.sigma), rel=1e-6)
    assert r.fid(fake) == pytest.approx(frechet_distance(ref.mu, ref.sigma, fs.mu, fs.sigma, method="sqrtm"), rel=1e-6)
    assert abs(r.fid(ref_feats)) < 1e-6 * float(np.trace(ref.sigma))  # a set against itself (rounding ~ sqrt(eps))
    idx = rng.integers(0, m, m)  # a resample is the FID of the repeated rows
    assert r.fid(fake, idx) == pytest.approx(r.fid(fake[idx]), rel=1e-9)
    with pytest.raises(ValueError, match=r"features must be \(m, 60\)"):
        r.fid(fake[:, :10])


def test_fid_reference_and_paired_fid_bootstrap():
    rng = np.random.default_rng(1)
    d = 30
    ref = feature_statistics(torch.from_numpy(rng.normal(size=(300, d)) @ rng.normal(size=(d, d)) / 5))
    r = FrechetReference.from_stats(ref)
    a = rng.normal(size=(25, d))
    b = a * 1.5 + 0.3  # paired: the same rows, transformed
    fa = frechet_distance(ref.mu, ref.sigma, *(lambda s: (s.mu, s.sigma))(feature_statistics(torch.from_numpy(a))))
    assert r.fid(a) == pytest.approx(fa, rel=1e-6)
    d_ab = paired_fid_change(r, a, b, n_boot=50, seed=3)
    assert d_ab.value == pytest.approx(r.fid(b) - r.fid(a), rel=1e-12)
    assert d_ab.stderr > 0 and d_ab.ci[0] < d_ab.ci[1] and d_ab.value > 0  # b is further from the reference
    same = paired_fid_change(r, a, a, n_boot=20)
    assert same.value == 0.0 and same.ci == (0.0, 0.0)  # identical sets: every replicate differs by exactly 0
    with pytest.raises(ValueError, match="paired"):
        paired_fid_change(r, a, b[:10])


def test_subset_equals_running_the_first_samples(setting):
    train, x0, v, targets = setting
    spec = SamplerSpec("land", KTS(beta0=0.02), nfe=10)
    full = run_config(v, x0, spec, train, n_boot=30)
    part = subset(full, 4, train, n_boot=30)
    alone = run_config(attractor(train, targets[:4]), x0[:4], spec, train, n_boot=30)
    assert torch.allclose(part.samples, alone.samples, atol=1e-12)
    assert torch.allclose(part.kpe, alone.kpe, rtol=1e-12) and part.energy.shape == (10, 4)
    assert part.memorization.value == alone.memorization.value
    with pytest.raises(ValueError):
        subset(full, 11, train)


def test_subset_with_a_reference_slices_features_and_recomputes_fid(setting):
    train, x0, v, _ = setting
    full = run_config(v, x0, SamplerSpec("fm", nfe=10), train, n_boot=30)
    rng = np.random.default_rng(0)
    ref = FrechetReference.from_stats(feature_statistics(torch.from_numpy(rng.normal(size=(40, 6)))))
    full.features = torch.from_numpy(rng.normal(size=(x0.shape[0], 6)))
    full.fid = ref.fid(full.features)
    part = subset(full, 4, train, reference=ref, n_boot=30)
    assert torch.equal(part.features, full.features[:4])
    assert part.fid == ref.fid(full.features[:4]) and part.fid != full.fid
    bare = subset(full, 4, train, n_boot=30)  # without a reference nothing stale is carried over
    assert bare.features is None and bare.fid is None


def test_spec_holds_one_kts_gain():
    gain = KTS(0.01, 0.01, tau_split=0.4, launch="constant")
    spec = SamplerSpec("b", gain, solver="midpoint", nfe=50)
    assert spec.kts is gain and spec.tau_split == 0.4 and spec.n_steps == 25
    assert spec.describe()["kts"] == {"alpha0": 0.01, "beta0": 0.01, "tau_split": 0.4, "launch": "constant",
                                      "landing": "exponential", "k": 3.0}
    with pytest.raises(ValueError, match="kts must be a KTS gain"):
        SamplerSpec("b", (0.01, 0.01))
