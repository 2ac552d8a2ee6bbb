"""The KTS benchmark helpers against closed-form oracles (kpe_lib.experiments.celeba_kts)."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from kpe_lib import KTS, ConstantGain, RenormalisedGain, phase_budgets
from kpe_lib.energy_aware import late_power_threshold, mean_late_power
from kpe_lib.experiments import celeba_kts as study
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
    assert spec.describe()["gain"] == {"alpha0": 0.01, "beta0": 0.01, "tau_split": 0.4, "launch": "constant",
                                       "landing": "exponential", "k": 3.0}
    assert spec.control is None and spec.budget == pytest.approx(1 + 0.01 * 0.4 - 0.01 * 0.6 * (np.expm1(3) / 3 - 1))
    with pytest.raises(ValueError, match="gain must be a KTS, a ConstantGain or a RenormalisedGain"):
        SamplerSpec("b", (0.01, 0.01))
    with pytest.raises(ValueError, match="RenormalisedGain of a KTS"):
        SamplerSpec("b", RenormalisedGain(ConstantGain(0.9)))
    with pytest.raises(ValueError, match="needs a KTS gain"):
        SamplerSpec("b", ConstantGain(0.9), threshold=1.0)


def test_budget_controls_are_configurations_with_the_kts_budget():
    spec = SamplerSpec("balanced", KTS(0.01, 0.01), nfe=10)
    const, renorm = study.control_specs(spec)
    assert (const.name, renorm.name) == ("balanced | constant budget", "balanced | renormalised")
    assert const.control == "constant budget" and renorm.control == "renormalised"
    assert const.gain.eta == pytest.approx(spec.budget) and const.budget == pytest.approx(spec.budget)
    assert renorm.budget == pytest.approx(1.0, abs=1e-12) and renorm.kts is spec.gain and const.kts is None
    assert const.tau_split == renorm.tau_split == 0.6 and {const.group, renorm.group} == {"control"}
    assert (const.nfe, const.solver) == (10, "euler")
    main = study.main_specs({"balanced": [0.01, 0.01], "landing only": [0.0, 0.02]}, nfe=10, controls=True)
    assert [s.name for s in main] == ["balanced", "balanced | constant budget", "balanced | renormalised",
                                      "landing only", "landing only | constant budget", "landing only | renormalised"]
    for bad in (SamplerSpec("fm"), const, SamplerSpec("ea", KTS(beta0=0.05), threshold=1.0)):
        with pytest.raises(ValueError, match="no budget controls"):
            study.control_specs(bad)


def test_a_constant_field_moves_each_run_by_its_grid_budget():
    # oracle: with v == c the Euler state ends at x0 + T_N c, T_N = sum_i eta(t_i) dt (Mathematics §3.5)
    c = torch.full((1, 1, 2, 2), 0.7, dtype=F64)
    x0 = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    train = torch.randn(4, 1, 2, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    kts = SamplerSpec("landing only", KTS(beta0=0.02), nfe=20)
    for spec in (kts, *study.control_specs(kts)):
        ev = run_config(lambda x, t: c.expand_as(x), x0, spec, train, n_boot=10)
        row = summary_row(ev, n_boot=10)
        assert torch.allclose(ev.samples, x0 + row["budget_grid"] * c, atol=1e-12)
        assert row["budget_grid"] == pytest.approx(spec.budget, abs=0.02)
        assert row["eta1"] == pytest.approx(float(spec.gain(1.0)))
    assert summary_row(ev, n_boot=10)["alpha0"] == 0.0  # the renormalised control reports its KTS's parameters


# --- the chapter's runs, tables and figures (kpe_lib.experiments.celeba_kts.runs / tables / figures) ---


class AttractorModule(nn.Module):
    """The attractor field as an ``nn.Module`` (what ``sampling_velocity`` expects of a trained network)."""

    def __init__(self, train: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(torch.ones((), dtype=F64))  # one parameter, unused by the field
        self.field = attractor(train, targets)

    def forward(self, x, t):
        return self.field(x, t)


def test_spec_builders_name_the_main_table_runs():
    main = study.main_specs({"balanced": [0.01, 0.01], "landing only": [0.0, 0.02]}, nfe=10)
    assert [(s.name, s.kts.alpha0, s.kts.beta0, s.nfe, s.group) for s in main] == [
        ("balanced", 0.01, 0.01, 10, "main"), ("landing only", 0.0, 0.02, 10, "main")]
    taus = study.tau_specs([0.2, 0.6, 0.8], nfe=10)
    assert [s.name for s in taus] == ["tau=0.2", "balanced", "tau=0.8"]
    assert [s.tau_split for s in taus] == [0.2, 0.6, 0.8] and {s.group for s in taus} == {"tau_split"}
    forms = study.form_specs(nfe=10)
    assert len(forms) == 9 and forms["linear", "exponential"].name == "balanced"
    assert forms["linear", "exponential"].gain == KTS(0.01, 0.01)
    assert forms["constant", "linear"].name == "constant/linear"
    assert all((s.kts.launch, s.kts.landing) == pair for pair, s in forms.items())
    # equal damping: every pair has balanced KTS's launch time, landing time and so its budget
    assert all(phase_budgets(s.gain) == pytest.approx(phase_budgets(KTS(0.01, 0.01)), rel=1e-12)
               for s in forms.values())
    assert forms["constant", "linear"].gain.alpha0 == pytest.approx(0.005)
    assert forms["constant", "linear"].gain.beta0 == pytest.approx(0.01 * 2 * (np.expm1(3) / 3 - 1))
    two = study.form_specs(nfe=10, cells=[["linear", "exponential"], ["linear", "constant"]])
    assert list(two) == [("linear", "exponential"), ("linear", "constant")]
    cfg = study.unet_config(8, (1, 2), (1,), 1, 0.1)
    assert cfg == {"kind": "unet", "in_channels": 1, "width": 8, "channel_mult": [1, 2], "attn_levels": [1],
                   "num_res_blocks": 1, "dropout": 0.1}


def test_run_configs_skips_existing_and_repeated_names(setting):
    train, x0, v, _ = setting
    a, b = SamplerSpec("a", nfe=5), SamplerSpec("b", KTS(beta0=0.02), nfe=5)
    out = study.run_configs(v, x0, [a, b, a], train, skip={"b": None}, n_boot=20, seed=0)
    assert list(out) == ["a"]
    assert torch.equal(out["a"].samples, run_config(v, x0, a, train, n_boot=20).samples)


def test_train_checkpoints_are_points_on_one_run(tmp_path):
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    runs = study.train_checkpoints({"kind": "mlp", "dim": 2, "hidden": 8, "depth": 2}, x, [2, 4], batch_size=4,
                                   lr=1e-3, ema_decay=None, seed=0, cache_dir=tmp_path, name="t")
    assert list(runs) == [2, 4] and runs[4].steps_done == 4
    assert runs[4].losses[:2] == runs[2].losses  # the 4-step run continued the 2-step snapshot


def test_sampling_velocity_counts_parameters_and_sets_eval(setting):
    train, _, _, targets = setting
    module = AttractorModule(train, targets).train()
    velocity, n_params = study.sampling_velocity(SimpleNamespace(sampling_model=module))
    assert velocity is module and n_params == 1 and not module.training


def test_fmem_over_training_reuses_the_final_run(setting):
    train, x0, _, targets = setting
    early, last = AttractorModule(train, ((targets + 1) % 6)[:4]), AttractorModule(train, targets)
    runs = {5: SimpleNamespace(sampling_model=early), 10: SimpleNamespace(sampling_model=last)}
    spec = SamplerSpec("FM", nfe=5)
    final = run_config(last, x0, spec, train, n_boot=20)
    evals = study.fmem_over_training(runs, [5, 10], x0[:4], spec, train, final, n_boot=20, seed=0)
    assert list(evals) == [5, 10]
    assert torch.equal(evals[5].samples, run_config(early, x0[:4], spec, train, n_boot=20).samples)
    assert torch.equal(evals[10].samples, final.samples[:4]) and evals[10].memorization.value == 1.0
    assert study.fmem_over_training({10: runs[10]}, [10], x0, spec, train, final, n_boot=20, seed=0)[10] is final


def test_solver_grid_pairs_fm_and_kts_per_cell(setting):
    train, x0, v, _ = setting
    fm = run_config(v, x0, SamplerSpec("FM", nfe=4), train, n_boot=20)
    kts = run_config(v, x0, SamplerSpec("balanced", KTS(0.01, 0.01), nfe=4), train, n_boot=20)
    grid = study.run_solver_grid(v, x0, fm, kts, train, nfes=[2, 4], main_nfe=4, n_boot=20, seed=0)
    assert list(grid.evals) == [f"{s}/{n}/{g}" for s in ("euler", "midpoint") for n in (2, 4)
                                for g in ("uniform", "cosine")]
    main = grid.evals["euler/4/uniform"]  # the main table's runs (subset of all 10 samples: a copy of them)
    assert torch.equal(main["FM"].samples, fm.samples) and torch.equal(main["KTS"].samples, kts.samples)
    assert main["KTS"].spec.name == "balanced" and main["KTS"].memorization.value == kts.memorization.value
    assert grid.evals["midpoint/2/cosine"]["KTS"].spec.name == "KTS midpoint/2/cosine"
    for row, pair in zip(grid.rows, grid.evals.values()):
        assert row["F_mem FM %"] == 100.0  # both solvers follow the straight path exactly, on any grid
        mem = pair["KTS"].memorization.memorized.double() - pair["FM"].memorization.memorized.double()
        assert row["change (points)"] == pytest.approx(100 * float(mem.mean()))
        assert row["CI lo"] <= row["change (points)"] <= row["CI hi"]
        assert pair["FM"].nfe == row["nfe"]


def test_energy_aware_runs_damp_exactly_the_paths_above_the_threshold(setting):
    train, x0, v, _ = setting
    fm = run_config(v, x0, SamplerSpec("FM", nfe=10), train, n_boot=20)
    ea = study.run_energy_aware(v, x0, fm, train, fixed_landings=[0.05, 0.02], decided=[[0.05, 0.5]],
                                continuous=[[0.05, 0.5]], decide_at=0.8, nfe=10, skip={"landing 0.02": None},
                                n_boot=20, seed=0)
    assert ea.names == ["landing 0.05", "landing 0.02", "EA b=0.05 q=0.5", "EA b=0.05 q=0.5 continuous"]
    assert list(ea.evals) == ["landing 0.05", "EA b=0.05 q=0.5", "EA b=0.05 q=0.5 continuous"]
    assert ea.decided == ["EA b=0.05 q=0.5"]
    thr = ea.thresholds["EA b=0.05 q=0.5"]
    assert thr == late_power_threshold(fm, 0.5, until=0.8)
    assert ea.thresholds["EA b=0.05 q=0.5 continuous"] == late_power_threshold(fm, 0.5)
    assert torch.equal(ea.evals["EA b=0.05 q=0.5"].damped, mean_late_power(fm, until=0.8) > thr)
    assert int(ea.evals["EA b=0.05 q=0.5"].damped.sum()) == 5  # the top half of 10 distinct powers


def fake_eval(memorized, kpe, kpe_late):
    mem = torch.tensor(memorized)
    return SimpleNamespace(memorization=SimpleNamespace(memorized=mem), kpe=torch.tensor(kpe),
                           kpe_late=torch.tensor(kpe_late), samples=torch.zeros(len(memorized), 1))


def test_energy_split_ratios():
    split = study.energy_split(fake_eval([True, False, True, False], [4.0, 1.0, 2.0, 3.0], [2.0, 1.0, 4.0, 1.0]))
    assert split.grouped and split.n_memorised == 2
    assert split.late_ratio == 3.0 and split.total_ratio == 1.5  # (2 + 4) / (1 + 1), (4 + 2) / (1 + 3)
    none = study.energy_split(fake_eval([True, True], [1.0, 2.0], [1.0, 1.0]))
    assert not none.grouped and np.isnan(none.late_ratio) and np.isnan(none.total_ratio)


@pytest.fixture
def bench(setting, monkeypatch):
    """A FidBench whose 'Inception' is the flattened image (16 features), so FIDs are exact and cheap."""
    from kpe_lib.experiments.celeba_kts import tables

    calls = []

    def fake_fid(images01, reference, batch_size=50, device="cpu"):
        calls.append(images01.shape[0])
        feats = images01.flatten(1).double()
        return reference.fid(feats), feats

    monkeypatch.setattr(tables, "fid_of_images", fake_fid)
    monkeypatch.setattr(tables, "inception_protocol", lambda: {"feature_network": "stub"})
    rng = np.random.default_rng(0)
    ref = FrechetReference.from_stats(feature_statistics(torch.from_numpy(rng.uniform(size=(40, 16)))))
    return study.FidBench(ref, 40, 0.25, nfe=10), calls


def test_fid_bench_adds_fids_once_and_states_its_protocol(setting, bench):
    train, x0, v, _ = setting
    fids, calls = bench
    ev = run_config(v, x0, SamplerSpec("FM", nfe=5), train, n_boot=20)
    fid = fids.add(ev)
    assert torch.equal(ev.features, to_unit_range(ev.samples, 0.25).flatten(1)) and fid == fids.reference.fid(ev.features)
    fids.add_all({"FM": ev}, ["FM"])
    assert calls == [10]  # a configuration that has a FID keeps it
    real = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=F64)
    full, first = fids.real_floor(real, 5)
    assert full == fids.reference.fid(real.flatten(1)) and first == fids.reference.fid(real.flatten(1)[:5])
    assert fids.tag(7) == ("FID: TF-Inception pool_3, 40 test-split reference images vs 7 generated, Euler NFE 10, "
                           "uniform grid, no EMA")
    proto = fids.protocol(10, 6)
    assert proto["feature_network"] == "stub" and proto["n_generated"] == {
        "main table": 10, "ablations and the FID-F_mem plane": 6} and proto["nfe"] == 10 and proto["ema"] is False


def test_summary_table_adds_paired_fid_changes_where_features_exist(setting, bench):
    train, x0, v, _ = setting
    fids, _ = bench
    evals = {"FM": run_config(v, x0, SamplerSpec("FM", nfe=10), train, n_boot=20),
             "land": run_config(v, x0, SamplerSpec("land", KTS(beta0=0.05), nfe=10), train, n_boot=20)}
    bare = study.summary_table(["FM", "land"], evals, fids.reference, n_boot=30)
    assert list(bare.index) == ["FM", "land"] and "dfid" not in bare.columns and np.isnan(bare.loc["FM", "dfmem_pct"])
    fids.add_all(evals, ["FM", "land"])
    df = study.summary_table(["FM", "land"], evals, fids.reference, n_boot=30)
    d = paired_fid_change(fids.reference, evals["FM"].features, evals["land"].features, n_boot=30)
    assert df.loc["land", "dfid"] == pytest.approx(d.value, rel=1e-12, abs=1e-12)
    assert df.loc["land", "dfid_ci_lo"] == pytest.approx(d.ci[0], rel=1e-12, abs=1e-12)
    assert df.loc["land", "dfmem_pct"] == bare.loc["land", "dfmem_pct"]
    shown = study.select_columns(df, ["fid", "missing", "fmem_pct"])
    assert list(shown.columns) == ["fid", "fmem_pct"] and shown.loc["land", "fid"] == round(df.loc["land", "fid"], 2)


def test_steps_and_damping_tables():
    mem = SimpleNamespace(value=0.25, ci95=(0.1, 0.5))
    ev = SimpleNamespace(memorization=mem, kpe=torch.tensor([1.0, 3.0]), kpe_late=torch.tensor([0.5, 1.5]))
    runs = {10: SimpleNamespace(losses=[2.0] * 10 + [1.0] * 50)}
    row = study.steps_table(runs, {10: ev}).loc[10]
    assert row["loss (last 50)"] == 1.0 and row["F_mem %"] == 25.0 and row["95% CI"] == "[10.0, 50.0]"
    assert row["KPE (mean)"] == 2.0 and row["late KPE (mean)"] == 1.0
    memorised = torch.tensor([True, True, False, False])
    evals = {"fixed": SimpleNamespace(damped=None),
             "ea": SimpleNamespace(damped=torch.tensor([True, False, True, False])),
             "off": SimpleNamespace(damped=torch.tensor([False] * 4))}
    rows = study.damping_rows(evals, ["fixed", "ea", "off"], memorised)
    assert [r["config"] for r in rows] == ["ea", "off"]
    assert rows[0] == {"config": "ea", "damped %": 50.0, "FM-memorised among damped %": 50.0,
                       "FM-memorised that were damped %": 50.0}
    assert rows[1]["damped %"] == 0.0 and np.isnan(rows[1]["FM-memorised among damped %"])


def plane_eval(fid, fmem, group="g"):
    return SimpleNamespace(fid=fid, spec=SimpleNamespace(group=group),
                           memorization=SimpleNamespace(value=fmem, stderr=0.01))


def test_plane_table_keeps_configurations_with_a_fid():
    evals = {"a": plane_eval(10.0, 0.5), "b": plane_eval(None, 0.1), "c": plane_eval(12.0, 0.2),
             "d": plane_eval(13.0, 0.3, "h")}
    plane = study.plane_table(evals)
    assert list(plane.index) == ["a", "c", "d"] and list(plane["group"]) == ["g", "g", "h"]
    assert plane["pareto"].tolist() == [True, True, False]  # d is worse than c in both
    assert plane.loc["c", "fmem_pct"] == 20.0 and plane.loc["c", "fmem_se"] == 1.0


def metric_eval(fid, fmem, damped=None, spec=None):
    return SimpleNamespace(fid=fid, memorization=SimpleNamespace(value=fmem, ci95=(fmem - 0.1, fmem + 0.1)),
                           kpe=torch.tensor([2.0, 4.0]), kpe_early=torch.tensor([1.0, 1.0]),
                           kpe_late=torch.tensor([1.0, 3.0]), damped=damped, samples=torch.zeros(2, 1),
                           spec=spec or SamplerSpec("FM"))


def test_chapter_metrics_convert_percent_to_fractions():
    main = ["balanced", "launch only", "landing only"]
    specs = {"FM": SamplerSpec("FM"), **{s.name: s for s in study.main_specs(
        {"balanced": [0.01, 0.01], "launch only": [0.02, 0.0], "landing only": [0.0, 0.02]}, nfe=10, controls=True)}}
    evals = {n: metric_eval(10.0 + i, 0.5 - 0.1 * i, spec=specs[n]) for i, n in enumerate(["FM", *main])}
    evals["balanced | constant budget"] = metric_eval(None, 0.45, spec=specs["balanced | constant budget"])
    abl = {**evals, "EA": metric_eval(None, 0.2, damped=torch.tensor([True, False, False, False]))}
    main_df = pd.DataFrame({"dfmem_pct": [-10.0, -20.0, -30.0], "dfmem_ci_lo_pct": [-20.0] * 3,
                            "dfmem_ci_hi_pct": [0.0] * 3, "dfid": [1.0, 2.0, 3.0], "dfid_ci_lo": [0.0] * 3,
                            "dfid_ci_hi": [4.0] * 3}, index=main)
    rows = [{"solver": "euler", "nfe": 4, "grid": "uniform", "F_mem FM %": 50.0, "F_mem KTS %": 25.0,
             "change (points)": -25.0, "CI lo": -50.0, "CI hi": 0.0}]
    plane = pd.DataFrame({"pareto": [True, False]}, index=["FM", "balanced"])
    m = study.chapter_metrics(evals, abl, main_df, main_names=main, n_ablation=2, taus=[0.6], tau_names=["balanced"],
                              form_names={("linear", "exponential"): "balanced"}, solver_rows=rows, ea_names=["EA"],
                              steps_evals={10: evals["FM"]}, plane=plane, fid_real=3.0, fid_real_abl=4.0,
                              kids={"FM": {"kid": 0.1, "kid_ci95": [0.0, 0.2]},
                                    "balanced | constant budget": {"kid": 0.3, "kid_ci95": [0.2, 0.4]}},
                              tests={"fmem": {}}, fid_train_floor=9.0,
                              auroc={"late": SimpleNamespace(auroc=0.8, ci_low=0.7, ci_high=0.9, n_pos=1, n_neg=1,
                                                             n_boot=10)},
                              testbed={"sigma": 0.07, "fmem_fm": 0.4, "fmem_kts": 0.3})
    assert m["fid_fm"] == 10.0 and m["fmem_kts"] == 0.4 and m["fmem_landing"] == pytest.approx(0.2)
    assert m["n_samples"] == 2 and m["fid_train_floor"] == 9.0
    assert m["time_budget_kts"] == pytest.approx(specs["balanced"].budget) and m["time_budget_launch"] > 1
    assert m["fmem_kts_budget_constant"] == 0.45 and "fmem_kts_budget_renormalised" not in m
    assert m["kid_kts_budget_constant"] == 0.3 and m["kid_kts_budget_constant_ci95"] == [0.2, 0.4]
    assert m["late_kpe_auroc_trained"] == 0.8 and m["late_kpe_auroc_trained_ci95"] == [0.7, 0.9]
    assert (m["testbed_sigma"], m["testbed_fmem_fm"], m["testbed_fmem_kts"]) == (0.07, 0.4, 0.3)
    assert m["dfmem_vs_fm"] == {"balanced": -0.1, "launch only": -0.2, "landing only": -0.3}
    assert m["dfmem_ci95_vs_fm"]["balanced"] == [-0.2, 0.0] and m["dfid_ci95_vs_fm"]["landing only"] == [0.0, 4.0]
    assert m["solver_grid"] == {"euler/4/uniform": {"fmem_fm": 0.5, "fmem_kts": 0.25, "change": -0.25,
                                                    "change_ci95": [-0.5, 0.0]}}
    assert m["energy_aware"]["EA"]["damped"] == 0.25 and m["energy_aware"]["EA"]["kpe_late"] == 2.0
    assert m["main"]["FM"] == study.config_metrics(evals["FM"]) == {
        "fid": 10.0, "fmem": 0.5, "fmem_ci95": [0.4, 0.6], "kpe": 3.0, "kpe_early": 1.0, "kpe_late": 2.0,
        "time_budget": 1.0, "eta1": 1.0}
    assert m["tau_sweep"] == {"0.6": {"fid": 11.0, "fmem": 0.4, "time_budget": specs["balanced"].budget}}
    assert m["forms"]["linear/exponential"]["fid"] == 11.0 and m["forms"]["linear/exponential"]["beta0"] == 0.01
    assert m["pareto_front"] == ["FM"] and "verdicts" not in m and m["tests"] == {"fmem": {}}
    assert m["kid_fm"] == 0.1 and m["kid_fm_ci95"] == [0.0, 0.2] and "kid_kts" not in m and m["kid_ablation"] == {}
    assert m["fmem_vs_steps"] == {"10": 0.5} and m["ablation_n_samples"] == 2 and m["fid_real_baseline"] == 3.0
    proto = study.chapter_protocol(n_train=8, index=0, train_mean=0.4, model_config={"kind": "unet"}, n_params=5,
                                   training={"steps": [10]}, n_samples=8, n_ablation=6, noise_seed=1, nfe=10,
                                   n_solver=4, solver_nfes=(4, 8), n_boot=100, fid={"nfe": 10}, decide_at=0.8,
                                   ea=[[0.05, 0.5]], ea_continuous=[])
    assert proto["sampling"]["solver_ablation_nfes"] == [4, 8] and proto["sampling"]["noise_seed"] == 1
    assert proto["fid"] == {"nfe": 10} and proto["energy_aware"]["decide_at"] == 0.8 and proto["n_params"] == 5


def test_figures_draw_from_computed_values(setting):
    import matplotlib.pyplot as plt

    train, x0, v, _ = setting
    fm = run_config(v, x0, SamplerSpec("FM", nfe=10), train, n_boot=20)
    kts = run_config(v, x0, SamplerSpec("balanced", KTS(0.01, 0.01), nfe=10), train, n_boot=20)
    evals = {"FM": fm, "balanced": kts}
    unit = to_unit_range(train, 0.5)
    figs = [study.training_images_figure(unit),
            study.fmem_over_training_figure([5, 10], {5: fm, 10: fm}, np.linspace(1, 0.5, 10), n_train=6),
            study.gains_figure([SamplerSpec("FM"), SamplerSpec("balanced", KTS(0.01, 0.01))]),
            study.neighbors_figure(evals, ["FM", "balanced"], 4, 0.5, unit),
            study.energy_split_figure(fm, kts, study.energy_split(fm)),
            study.solver_figure({"euler/10/uniform": {"FM": fm, "KTS": kts}}),
            study.late_power_figure(fm, [1.0], 0.8),
            study.plane_figure(study.plane_table({"FM": plane_eval(10.0, 0.5), "b": plane_eval(9.0, 0.6)}), 10,
                               "tag", fid_real=5.0)]
    assert figs[3].axes[0].get_title().startswith("FM: F_mem 100.0% over all 10 samples")
    assert figs[4].axes[1].get_title() == "balanced KTS, same samples"
    forms = study.form_specs(nfe=10)
    names = {pair: s.name for pair, s in forms.items()}
    forms_df = pd.DataFrame({"dfmem_pct": np.arange(9.0)}, index=list(names.values()))
    form_evals = {"FM": SimpleNamespace(fid=1.0, samples=torch.zeros(3, 1)),
                  **{n: SimpleNamespace(fid=None, samples=None) for n in names.values()}}
    figs.append(study.forms_figure(forms_df, names, form_evals))
    assert "3 samples" in figs[-1].axes[0].get_title()
    for fig in figs:
        assert fig.axes
        plt.close(fig)


def test_chapter_tests_back_every_scoreboard_row():
    from kpe_lib.book.scoreboard import ROWS, judge_rows
    from kpe_lib.book.verdicts import evidence
    from kpe_lib.metrics import kid_with_ci, mcnemar_exact, paired_kid_change

    g = torch.Generator().manual_seed(0)
    real = torch.randn(12, 6, generator=g, dtype=torch.float64)
    ref = FrechetReference.from_stats(feature_statistics(real))
    mem = {"FM": [1, 1, 1, 1, 1, 0, 1, 0], "balanced": [0, 0, 0, 1, 0, 0, 0, 0],
           "launch only": [1, 1, 1, 1, 0, 0, 1, 0], "landing only": [0, 0, 0, 0, 0, 0, 0, 0],
           "balanced | constant budget": [1, 1, 0, 1, 0, 0, 1, 0], "landing only | constant budget": [0] * 8}
    evals = {n: SimpleNamespace(memorization=SimpleNamespace(memorized=torch.tensor(flags, dtype=torch.bool)),
                                features=torch.randn(8, 6, generator=g, dtype=torch.float64) + i)
             for i, (n, flags) in enumerate(mem.items())}
    abl = {"t0.2": SimpleNamespace(features=evals["FM"].features[:6]),
           "balanced": SimpleNamespace(features=evals["balanced"].features[:6]),
           "t0.8": SimpleNamespace(features=None)}
    main = ["balanced", "launch only", "landing only"]
    tests = study.chapter_tests(evals, abl, ref, real, main_names=main, taus=[0.2, 0.6, 0.8],
                                tau_names=["t0.2", "balanced", "t0.8"], evidence=evidence, n_boot=50, seed=3)
    mc = mcnemar_exact(mem["FM"], mem["balanced"])
    d = paired_fmem_change(evals["FM"].memorization, evals["balanced"].memorization, n_boot=50, seed=3)
    assert tests["fmem"]["balanced"]["p"] == mc.pvalue and tests["fmem"]["balanced"]["n"] == 8
    assert tests["fmem"]["balanced"]["ci95"] == [float(d.ci[0]), float(d.ci[1])]
    f = paired_fid_change(ref, evals["FM"].features, evals["landing only"].features, n_boot=50, seed=3)
    assert tests["fid"]["landing only"]["ci95"] == pytest.approx(list(f.ci))
    k = paired_kid_change(real, evals["FM"].features, evals["launch only"].features, n_boot=50, seed=3)
    assert tests["kid"]["launch only"]["p"] == k.pvalue
    assert set(tests["fid"]) == {*main, "balanced | constant budget", "landing only | constant budget", "tau_0.2"}
    assert tests["fid"]["tau_0.2"]["n"] == 6  # no features at 0.8
    beyond = mcnemar_exact(mem["balanced | constant budget"], mem["balanced"])  # control -> KTS, paired
    assert tests["fmem_vs_control"]["balanced | constant budget"]["p"] == beyond.pvalue
    assert set(tests["fmem_vs_control"]) == {"balanced | constant budget", "landing only | constant budget"}
    assert "balanced | constant budget" in tests["fid_vs_control"] and "kid" not in tests["fid_vs_control"]
    kids = study.kid_metrics(real, evals, ["FM", "balanced"], n_boot=50, seed=3)
    assert kids["FM"]["kid"] == pytest.approx(kid_with_ci(real, evals["FM"].features, n_boot=50, seed=3).value)
    metrics = {"fmem_fm": 0.75, "fmem_kts": 0.125, "fmem_launch": 0.625, "fmem_landing": 0.0,
               "fid_fm": 1.0, "fid_kts": 2.0, "fid_launch": 3.0, "fid_landing": 4.0, "kid_fm": 0.1, "kid_kts": 0.2,
               "kid_launch": 0.3, "kid_landing": 0.4, "tau_sweep": {"0.2": {"fid": 5.0}, "0.6": {"fid": 2.0}},
               "fmem_kts_budget_constant": 0.5, "fmem_landing_budget_constant": 0.0,
               "testbed": {"main": {n: {"fmem": float(np.mean(mem[n]))} for n in ("FM", "balanced", "landing only")}},
               "tests": {**tests, "testbed": {"fmem": tests["fmem"]}}}
    rows = [r for r in ROWS if r.chapter == "04_celeba_kts"]
    judged = dict(zip([r.metric for r in rows], judge_rows(rows, {"04_celeba_kts": (metrics, {})})))
    untested = [m for m, j in judged.items() if j.verdict in ("untested", "not run")]
    assert untested == ["FID, tau_split = 0.4 -> 0.6", "FID, tau_split = 0.8 -> 0.6"]  # no value / no test


def test_each_paired_fid_bootstrap_runs_once_for_the_tables_and_the_tests(monkeypatch):
    from kpe_lib.book.verdicts import evidence

    g = torch.Generator().manual_seed(1)
    real = torch.randn(12, 6, generator=g, dtype=torch.float64)
    ref = FrechetReference.from_stats(feature_statistics(real))
    flags = {"FM": [1, 1, 0, 1, 0, 1, 1, 0], "balanced": [0, 1, 0, 0, 0, 1, 0, 0],
             "launch only": [1, 0, 0, 1, 0, 1, 1, 0], "landing only": [0, 0, 0, 0, 0, 1, 0, 0]}
    evals = {n: SimpleNamespace(memorization=memorization_fraction(torch.randn(8, 1, 2, 2, generator=g),
                                                                    torch.randn(5, 1, 2, 2, generator=g), n_boot=10),
                                features=torch.randn(8, 6, generator=g, dtype=torch.float64) + 0.3 * i)
             for i, n in enumerate(flags)}
    for n, f in flags.items():  # summary_row needs the full record; the flags decide the paired F_mem change
        evals[n].memorization.memorized[:] = torch.tensor(f, dtype=torch.bool)
        evals[n].spec, evals[n].damped = SamplerSpec(n, nfe=10), None
        evals[n].kpe = evals[n].kpe_early = evals[n].kpe_late = torch.ones(8)
        evals[n].fid, evals[n].samples, evals[n].grid = 1.0, torch.zeros(8, 1, 2, 2), torch.linspace(0, 1, 11)
    calls = []
    real_change = FrechetReference.paired_change

    def counted(self, base, other, **kw):
        calls.append((id(base), id(other)))
        return real_change(self, base, other, **kw)

    monkeypatch.setattr(FrechetReference, "paired_change", counted)
    main = ["balanced", "launch only", "landing only"]
    fresh_table = study.summary_table(["FM", *main], evals, ref, n_boot=40, seed=2)
    fresh = study.chapter_tests(evals, evals, ref, real, main_names=main, taus=[0.6], tau_names=["balanced"],
                                evidence=evidence, n_boot=40, seed=2)
    assert len(calls) == 6  # without a shared record: the table and the tests both run every pair
    calls.clear()
    changes = study.PairedFidChanges(ref, n_boot=40, seed=2)
    shared_table = study.summary_table(["FM", *main], evals, ref, n_boot=40, seed=2, changes=changes)
    again = study.summary_table(["FM", *main], evals, ref, n_boot=40, seed=2, changes=changes)  # e.g. N_ABL == B
    shared = study.chapter_tests(evals, evals, ref, real, main_names=main, taus=[0.6], tau_names=["balanced"],
                                 evidence=evidence, n_boot=40, seed=2, changes=changes)
    assert len(calls) == 3 and changes.computed == 3  # one bootstrap per (FM, configuration) pair
    pd.testing.assert_frame_equal(shared_table, fresh_table)
    pd.testing.assert_frame_equal(again, fresh_table)
    assert shared["fid"] == fresh["fid"]
    for n in main:  # the table's interval and the test's are one bootstrap
        assert shared["fid"][n]["ci95"] == [shared_table.loc[n, "dfid_ci_lo"], shared_table.loc[n, "dfid_ci_hi"]]
    with pytest.raises(ValueError, match="n_boot=40, seed=2; asked for n_boot=50"):
        study.summary_table(["FM", *main], evals, ref, n_boot=50, seed=2, changes=changes)
    with pytest.raises(ValueError, match="another FID reference"):
        study.summary_table(["FM", *main], evals, FrechetReference.from_stats(feature_statistics(real[:10])),
                            n_boot=40, seed=2, changes=changes)
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        study.PairedFidChanges(ref, n_boot=1)


def test_configurations_do_not_depend_on_the_sample_batch(tiny_unet):
    # celeba_sample_batch = B and B / 3 on the same noise, with a real (tiny) network: plain FM, a KTS gain and
    # both energy-aware landings give the same samples, energies and switches up to float rounding
    unet = tiny_unet
    g = torch.Generator().manual_seed(3)
    x0, train = torch.randn(6, 1, 8, 8, generator=g), torch.randn(5, 1, 8, 8, generator=g)
    with torch.no_grad():
        fm = run_config(unet, x0, SamplerSpec("FM", nfe=10), train, n_boot=20)
        threshold = late_power_threshold(fm, 0.5)
        specs = [SamplerSpec("FM", nfe=10), SamplerSpec("kts", KTS(0.02, 0.02), nfe=10, solver="midpoint"),
                 SamplerSpec("ea", KTS(beta0=0.05), threshold=threshold, nfe=10),
                 SamplerSpec("ea-once", KTS(beta0=0.05), threshold=late_power_threshold(fm, 0.5, until=0.8),
                             decide_at=0.8, nfe=10)]
        for spec in specs:
            whole = run_config(unet, x0, spec, train, n_boot=20, batch_size=6)
            thirds = run_config(unet, x0, spec, train, n_boot=20, batch_size=2)
            torch.testing.assert_close(thirds.samples, whole.samples, rtol=1e-5, atol=1e-6)
            for name in ("kpe", "kpe_early", "kpe_late"):
                torch.testing.assert_close(getattr(thirds, name), getattr(whole, name), rtol=1e-6, atol=0)
            torch.testing.assert_close(thirds.energy_raw, whole.energy_raw, rtol=1e-5, atol=1e-8)
            assert thirds.energy.shape == whole.energy.shape == (spec.n_steps, 6) and thirds.nfe == whole.nfe
            assert torch.equal(thirds.memorization.memorized, whole.memorization.memorized)
            if spec.is_energy_aware:
                assert torch.equal(thirds.damped, whole.damped) and thirds.damped.shape == (6,)
        assert 0 < int(whole.damped.sum()) < 6  # the last rule damps some paths, not all
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        run_config(unet, x0, specs[0], train, batch_size=0)


def reading_tests(p_kts, p_const, p_renorm, p_beyond):
    def rec(p):
        return {"p": p}
    return {"fmem": {"b": rec(p_kts), "b | constant budget": rec(p_const), "b | renormalised": rec(p_renorm)},
            "fmem_vs_control": {"b | constant budget": rec(p_beyond)}}


@pytest.mark.parametrize("ps, changes, reading", [
    ((0.5, 0.01, 0.01, 0.01), (-0.1, -0.1, -0.1), "no effect"),
    ((0.001, 0.4, 0.3, 0.01), (-0.2, -0.02, -0.05), "phase structure"),     # KTS beats its constant gain
    ((0.001, 0.3, 0.002, 0.5), (-0.2, -0.03, -0.15), "phase structure"),    # the effect survives budget 1
    ((0.001, 0.002, 0.6, 0.7), (-0.2, -0.18, -0.01), "time budget"),        # the constant gain does it all
    ((0.001, 0.2, 0.2, 0.2), (-0.2, -0.1, -0.1), "undecided"),
    ((0.001, 0.3, 0.002, 0.5), (-0.2, -0.03, +0.15), "undecided"),          # budget 1 reverses the effect
])
def test_budget_reading_follows_the_controls(ps, changes, reading):
    ch = dict(zip(["b", "b | constant budget", "b | renormalised"], changes))
    r = study.budget_reading(reading_tests(*ps), ch, "b")
    assert r.reading == reading and "constant gain of the same budget" in r.why


def test_testbed_sweep_copies_at_sigma_zero_and_not_for_wide_atoms():
    # two far atoms: sigma = 0 is the empirical closed form (every sample a copy), a wide atom lands between
    train = torch.stack([torch.full((1, 2, 2), -3.0), torch.full((1, 2, 2), 3.0)])
    x0 = torch.randn(40, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    sweep = study.sigma_sweep(train, x0, [0.0, 6.0], nfe=40, n_boot=20)
    assert list(sweep) == [0.0, 6.0] and sweep[0.0].memorization.value == 1.0
    assert sweep[6.0].memorization.value < 0.2 and sweep[0.0].spec.group == "testbed"
    assert study.pick_sigma(sweep, 0.9) == 0.0 and study.pick_sigma(sweep, 0.0) == 6.0
    field = study.testbed_velocity(train, 0.5)
    assert torch.allclose(field(x0[:3], torch.tensor(1.0)), x0[:3])  # finite at t = 1, where v = x
    for bad in ([], [0.1, 0.1], [-0.1], [float("nan")]):
        with pytest.raises(ValueError, match="sigmas must be distinct finite widths"):
            study.sigma_sweep(train, x0, bad, nfe=4)
    with pytest.raises(ValueError, match="target must be a fraction"):
        study.pick_sigma(sweep, 37.0)
    with pytest.raises(ValueError, match="sweep is empty"):
        study.pick_sigma({}, 0.3)


def test_new_figures_draw_from_computed_values(setting):
    import matplotlib.pyplot as plt

    train, x0, v, _ = setting
    fm = run_config(v, x0, SamplerSpec("FM", nfe=10), train, n_boot=20)
    fm.fid = 50.0
    figs = [study.regime_figure([5, 10], {5: fm, 10: fm}, np.linspace(1, 0.5, 10), 6, 0.5, fid_train_floor=40.0,
                                fid_real_floor=30.0, n_show=4),
            study.testbed_figure({0.0: fm, 0.1: fm}, 0.1, 37.34, 0.5, n_show=4)]
    specs = [SamplerSpec("FM"), *study.main_specs({"balanced": [0.01, 0.01]}, nfe=10, controls=True)]
    evals = {s.name: run_config(v, x0, s, train, n_boot=20) for s in specs}
    df = study.summary_table(list(evals), evals, FrechetReference.from_stats(
        feature_statistics(torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=F64))), n_boot=20)
    figs.append(study.budget_figure(df, ["balanced"]))
    assert len(figs[-1].axes) == 1  # no FIDs: the F_mem panel alone
    tau = df.loc[["balanced"]].assign(tau_split_value=[0.6])
    figs.append(study.tau_budget_figure(tau))
    assert any(ax.get_title().startswith("step 5: F_mem 100%, FID 50") for ax in figs[0].axes)
    assert "sigma = 0.1" in figs[1].axes[1].get_title()
    for fig in figs:
        plt.close(fig)
