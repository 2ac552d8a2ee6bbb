"""kpe_lib.experiments.efm_memorization against hand-derived values, brute force and exact one-atom solutions (Mathematics §2-5)."""

import pytest
import torch

from kpe_lib import KTS, EmpiricalVelocity, sample, time_grid
from kpe_lib.experiments.efm_memorization import (collapsed_path, commit_time, displacement_factors,
                                  dominance_data, dominance_fit, log_normalizer, path_diagnostics,
                                  shell_points, StateRecorder, predicted_memorized)


@pytest.mark.parametrize("kind", ["uniform", "cosine"])
def test_displacement_factors_without_gain_follow_one_minus_t(kind):
    # eta = 1: e_i = e_start (1 - t_i) / (1 - t_start), so the last Euler step lands exactly on the atom
    grid = time_grid(20, kind)
    f = displacement_factors(grid, None, start=5)
    expected = (1 - grid[5:]) / (1 - grid[5])
    assert torch.allclose(f, expected, atol=1e-14)
    assert f[-1] == 0.0


def test_displacement_factors_by_hand():
    grid = time_grid(4)
    gain = lambda t: 0.5  # constant damping
    f = displacement_factors(grid, gain, start=2)  # steps at t = 0.5 and 0.75, dt = 0.25
    assert f.tolist() == pytest.approx([1.0, 1 - 0.5 * 0.25 / 0.5, (1 - 0.25) * (1 - 0.5 * 0.25 / 0.25)])


@pytest.mark.parametrize("gain", [KTS(beta0=0.05), KTS(alpha0=0.1, beta0=0.5, landing="linear", tau_split=0.4)])
def test_collapsed_path_matches_sampled_single_atom_paths(gain):
    # one training point: w = 1 everywhere, the field is exactly linear and the prediction is exact
    atom = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    efm = EmpiricalVelocity(atom)
    x0 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = time_grid(50, "cosine")
    res = sample(efm, x0, grid=grid, gain=gain, record_trajectory=True)
    start = 10
    pred = collapsed_path((atom - res.trajectory[start]).norm(dim=1), grid, gain, start)
    measured = (atom - res.trajectory[start:]).norm(dim=-1)
    assert torch.allclose(pred.distance, measured, rtol=1e-10, atol=1e-12)
    speeds = torch.stack([efm(res.trajectory[i], float(grid[i])).norm(dim=1) for i in range(start, 50)])
    assert torch.allclose(pred.speed, speeds, rtol=1e-10)
    eta = torch.tensor([gain(float(s)) for s in grid[start:-1]], dtype=torch.float64)
    # the sampler's per-step energy is 1/2 (eta ||v||)^2 under Euler
    assert torch.allclose(0.5 * pred.shaped_speed ** 2, res.energy[start:], rtol=1e-9)
    assert torch.allclose(pred.shaped_speed, eta[:, None] * pred.speed)


def test_path_diagnostics_against_brute_force_and_envelope():
    gen = torch.Generator().manual_seed(1)
    train = torch.randn(30, 2, 3, generator=gen)
    efm = EmpiricalVelocity(train)
    res = sample(efm, torch.randn(5, 2, 3, generator=gen, dtype=torch.float64), n_steps=20, record_trajectory=True)
    diag = path_diagnostics(efm, res.trajectory[[0, 7, 19]], res.grid[[0, 7, 19]])
    a = train.reshape(30, -1).double()
    for j, s in enumerate([0, 7, 19]):
        t = s / 20
        x = res.trajectory[s].reshape(5, -1)
        d2 = ((x[:, None] - t * a[None]) ** 2).sum(-1)
        w = torch.softmax(-d2 / (2 * (1 - t) ** 2), 1)
        v = (w @ a - x) / (1 - t)
        dist = (a[None] - x[:, None]).norm(dim=-1)
        assert torch.allclose(diag.speed[j], v.norm(dim=1), rtol=1e-9)
        assert torch.allclose(diag.max_weight[j], w.max(1).values, rtol=1e-9)
        assert torch.allclose(diag.upper[j], dist.max(1).values / (1 - t), rtol=1e-9)
        assert torch.equal(diag.top_atom[j], w.argmax(1))
    assert bool((diag.speed <= diag.upper * (1 + 1e-12)).all())  # the convex-combination envelope
    assert diag.t.tolist() == pytest.approx([0.0, 0.35, 0.95])


def test_path_diagnostics_rejects_t_equal_one():
    efm = EmpiricalVelocity(torch.randn(3, 2))
    res = sample(efm, torch.randn(2, 2, dtype=torch.float64), n_steps=5, record_trajectory=True)
    with pytest.raises(ValueError, match="times"):
        path_diagnostics(efm, res.trajectory[4:], res.grid[4:])


def test_state_recorder_keeps_the_euler_nodes():
    efm = EmpiricalVelocity(torch.randn(4, 3, generator=torch.Generator().manual_seed(5)))
    x0 = torch.randn(3, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    full = sample(efm, x0, n_steps=10, record_trajectory=True)
    rec = StateRecorder(efm, times=[0.9, 0.3])
    res = sample(rec, x0, n_steps=10)
    states, times = rec.stacked()
    assert times.tolist() == pytest.approx([0.3, 0.9])
    assert torch.equal(states[0], full.trajectory[3]) and torch.equal(states[1], full.trajectory[9])
    assert torch.equal(res.x, full.x)
    with pytest.raises(ValueError, match="never|not nodes"):
        StateRecorder(efm, times=[0.55]).stacked()
    with pytest.raises(ValueError, match="times"):
        StateRecorder(efm, times=[1.0])


def test_commit_time():
    mw = torch.tensor([[0.1, 0.6, 0.2], [0.4, 0.7, 0.3], [0.9, 0.8, 0.4]])
    t = torch.tensor([0.2, 0.5, 0.8])
    assert commit_time(mw, t, 0.5).tolist() == pytest.approx([0.8, 0.2, 1.0])
    with pytest.raises(ValueError, match="threshold"):
        commit_time(mw, t, 0.0)


def test_log_normalizer_with_one_atom():
    # n = 1: -log p_t(x) = C_t + ||eps||^2 / 2 exactly (w = 1)
    atom = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    efm = EmpiricalVelocity(atom)
    t = 0.7
    x, k = shell_points(atom, t, 10, (0.5, 2.0), torch.Generator().manual_seed(0))
    eps = (x - t * atom) / (1 - t)
    expected = log_normalizer(1, 3, t) + 0.5 * eps.pow(2).sum(1)
    assert torch.allclose(-efm.log_density(x, t), expected, rtol=1e-12)
    assert k.eq(0).all()


def test_dominance_fit_is_exact_for_one_atom_at_the_origin():
    # a = 0: ||v*||^2 = ||eps||^2 = 2 (-log p_t) - 2 C_t, an exact line with slope 2
    atom = torch.zeros(1, 5, dtype=torch.float64)
    efm = EmpiricalVelocity(atom)
    x, _ = shell_points(atom, 0.6, 200, (0.5, 1.5), torch.Generator().manual_seed(1))
    (fit,) = dominance_fit(efm, x, 0.6, thresholds=(0.99,))
    assert fit.n_points == 200
    assert fit.slope == pytest.approx(2.0, abs=1e-9)
    assert fit.intercept == pytest.approx(-2 * log_normalizer(1, 5, 0.6), abs=1e-7)
    assert fit.intercept_theory == pytest.approx(fit.intercept, abs=1e-7)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)


def test_dominance_fit_separated_atoms_follow_the_theory():
    # well-separated atoms, late t: every point is dominated and the slope is 2 up to the atom-term scatter
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(20, 200, generator=gen, dtype=torch.float64)
    efm = EmpiricalVelocity(train)
    x, _ = shell_points(train, 0.8, 2000, (0.5, 2.0), gen)
    data = dominance_data(efm, x, 0.8)
    fits = dominance_fit(efm, x, 0.8, thresholds=(0.0, 0.99, 1.0 + 0.0), data=data)
    assert fits[1].n_points > 1900
    assert fits[1].slope == pytest.approx(2.0, abs=0.05)
    assert fits[1].intercept == pytest.approx(fits[1].intercept_theory, rel=0.02)
    assert fits[1].r2 > 0.95
    # exact identity under dominance: ||v||^2 = 2 L - 2 C_t + ||a_k||^2 - 2 <a_k, eps> (+ O(1 - w))
    k = torch.cdist(x, 0.8 * train).argmin(1)
    eps = (x - 0.8 * train[k]) / 0.2
    rhs = 2 * data.neg_log_density - 2 * log_normalizer(20, 200, 0.8) + train[k].pow(2).sum(1) \
        - 2 * (train[k] * eps).sum(1)
    dominated = data.max_weight > 1 - 1e-9
    assert torch.allclose(data.speed_sq[dominated], rhs[dominated], rtol=1e-6)


def test_shell_points_sample_the_bridge_marginal():
    train = torch.randn(4, 3000, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x, k = shell_points(train, 0.3, 4, (1.0, 1.0), torch.Generator().manual_seed(4))
    eps = (x - 0.3 * train[k]) / 0.7
    assert abs(float(eps.mean())) < 0.05 and abs(float(eps.var()) - 1.0) < 0.05


@pytest.mark.parametrize("kwargs, match", [
    (dict(t=1.0, n_points=3), "t must"), (dict(t=0.5, n_points=0), "n_points"),
    (dict(t=0.5, n_points=3, noise_scale=(2.0, 1.0)), "noise_scale"),
])
def test_shell_points_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        shell_points(torch.zeros(2, 3), **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="start"):
        displacement_factors(time_grid(5), None, start=5)
    with pytest.raises(ValueError, match="thresholds"):
        dominance_fit(EmpiricalVelocity(torch.zeros(2, 2)), torch.zeros(3, 2), 0.5, thresholds=(1.5,))


def test_predicted_memorized_matches_the_gap_ratio_of_orthogonal_displacements():
    # atoms at 0 and 3 e_1; a copy of atom 0 displaced by r along e_2 has d1 = r, d2 = sqrt(9 + r^2)
    train = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=torch.float64)
    r = torch.tensor([0.5, 1.0, 1.06, 1.07, 2.0], dtype=torch.float64)
    x = torch.stack([torch.zeros_like(r), r], 1)
    d = torch.cdist(x, train)
    measured = d[:, 0] / d[:, 1] < 1 / 3
    predicted = predicted_memorized(r / 0.5, torch.full_like(r, 3.0), factor=0.5)
    assert torch.equal(predicted, measured)
    assert predicted.tolist() == [True, True, True, False, False]  # 3 / sqrt(8) = 1.0607


# ---- the chapter's stages (kpe_lib.experiments.efm_memorization.study, .dominance, .results, .figures) ----

import math
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from kpe_lib.data import ImageData  # noqa: E402
from kpe_lib.experiments import efm_memorization as study  # noqa: E402
from kpe_lib.metrics import DetectorResult, memorization_fraction  # noqa: E402


def _images(x: torch.Tensor, mean: float = 0.0, names: list | None = None) -> ImageData:
    return ImageData(images=x.float(), labels=None, mean=mean, scale="[0,1]-mean", names=names, class_names=None,
                     source="", split="train")


@pytest.fixture(scope="module")
def tiny():
    """A tiny chapter: 6 well-separated faces in d = 4 (collapsed long before t = 0.6), 8 paths, 20 Euler steps, the sweep and detectors."""
    gen = torch.Generator().manual_seed(0)
    train = 10 * torch.randn(6, 1, 2, 2, generator=gen, dtype=torch.float64)
    efm = EmpiricalVelocity(train)
    grid = time_grid(20)
    x0 = torch.randn(8, 1, 2, 2, generator=gen, dtype=torch.float64)
    steps = study.record_steps(grid, [0.6, 0.2], 4)
    landing = KTS(beta0=0.05)
    paths = study.run_paths(efm, x0, grid, landing, steps)
    mem = memorization_fraction(paths.plain.x, train, n_boot=20, seed=0)
    check = study.collapse_check(paths, mem.nearest_index, train, grid, landing, steps, 0.6)
    configs = study.kts_configs([0.0, 0.02, 0.05], [0.2], 0.05, 0.05, [0.02], 0.01)
    atom_gap = torch.cdist(train.flatten(1), train.flatten(1)).fill_diagonal_(math.inf).min(1).values
    sweep = study.kts_sweep(efm, x0, grid, configs, train, train, reuse={KTS(): paths.plain, landing: paths.landing},
                            tau_steps=steps.tau_steps, x_tau=paths.x_tau, atom=mem.nearest_index,
                            atom_gap=atom_gap, tau0=0.6, n_boot=20, seed=0)
    return SimpleNamespace(train=train, efm=efm, grid=grid, x0=x0, steps=steps, landing=landing, paths=paths,
                           mem=mem, check=check, configs=configs, atom_gap=atom_gap, sweep=sweep)


def test_rms_is_per_coordinate():
    assert study.rms(6.0, 4) == 3.0


def test_record_steps_by_hand():
    plan = study.record_steps(time_grid(10), [0.6, 0.25 + 0.05], 4)
    assert plan.tau_steps == {0.6: 6, 0.3: 3}
    assert plan.steps == [0, 3, 4, 6, 8, 9]
    assert plan.times == pytest.approx([0.0, 0.3, 0.4, 0.6, 0.8, 0.9])
    with pytest.raises(ValueError, match="grid node"):
        study.record_steps(time_grid(10), [0.55], 4)


def test_load_data_centres_and_measures_gaps(monkeypatch):
    faces = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 1.0]]).reshape(3, 1, 1, 2)
    calls = []

    def fake_celeba(root, split, n, index, mean=None):
        calls.append((n, index, mean))
        return _images(faces if index == 0 else faces + 10, 0.25, [f"{index}-{i}" for i in range(3)])

    monkeypatch.setattr(study.study, "load_celeba", fake_celeba)
    monkeypatch.setattr(study.study, "load_cifar10", lambda root, split, n, center: _images(torch.zeros(n, 3, 1, 1)))
    data = study.load_data(None, 3, 3, 2)
    assert calls == [(3, 0, None), (3, 1, 0.25)]        # held-out faces come after and share the mean
    assert data.train.dtype == torch.float64 and (data.n_train, data.dim) == (3, 2)
    assert data.atom_gap.tolist() == pytest.approx([1.0, 3.0, 1.0])
    assert data.sq_norm.tolist() == [0.0, 9.0, 1.0]
    assert "CelebA: 3 training faces + 3 held-out, 2 pixels" in data.summary()
    assert "CIFAR-10: 2 training images, 3 coordinates" in data.summary()


def test_run_paths_matches_direct_sampling(tiny):
    full = sample(tiny.efm, tiny.x0, grid=tiny.grid, record_trajectory=True)
    assert torch.equal(tiny.paths.plain.x, full.x)
    assert torch.equal(tiny.paths.landing.x, sample(tiny.efm, tiny.x0, grid=tiny.grid, gain=tiny.landing).x)
    assert torch.equal(tiny.paths.x_tau[0.6], full.trajectory[12])
    speed = tiny.efm(full.trajectory[4], 0.2).flatten(1).norm(dim=1)      # steps[1] = 4, t = 0.2
    assert torch.allclose(tiny.paths.diag["EFM"].speed[1], speed, rtol=1e-12)
    assert tiny.paths.diag["landing"].t.tolist() == pytest.approx(tiny.steps.times)


def test_collapse_check_on_separated_faces(tiny):
    c = tiny.check
    assert c.j_tau == tiny.steps.steps.index(12)
    assert bool(c.one_hot.all()) and float(c.rel_err.max()) < 1e-9     # collapsed by t = 0.6
    d = (tiny.train[c.atom].flatten(1) - tiny.paths.landing.x.flatten(1)).norm(dim=1)
    assert torch.allclose(c.prediction.distance[-1], d, rtol=1e-9)
    assert set(c.commit) == {"EFM", "landing"} and c.commit["EFM"].shape == (8,)
    assert c.speed_ratio["EFM"] > 0 and "one-hot at tau_split = 0.6: 100.0% of paths" in c.summary()


def test_kts_configs_names_and_terminal_gain():
    configs = study.kts_configs([0.0, 0.02], [0.2, 0.8], 0.05, 0.1, [0.02, 0.05], 0.01)
    families = [f for _, f, _ in configs]
    assert families == ["plain", "beta0 sweep", "tau_split", "tau_split", "landing form", "landing form",
                        "landing form", "launch", "launch", "balanced"]
    assert configs[0][2] == KTS() and configs[2][2] == KTS(beta0=0.05, tau_split=0.2)
    for name, family, gain in configs:
        if family == "landing form":
            assert gain(1.0) == pytest.approx(0.1, abs=1e-12), name      # every form ends at eta(1) = eta_end
    assert study.landing_form_scale(3.0)["exponential"] == pytest.approx(math.e ** 3 - 1)


def test_kts_sweep_rows(tiny):
    table, per = tiny.sweep.table, tiny.sweep.per_sample
    assert list(table.index) == [n for n, _, _ in tiny.configs]
    assert tiny.sweep.runs[KTS()] is tiny.paths.plain                  # reused, not resampled
    plain = table.loc["EFM (eta = 1)"]
    assert plain["F_mem"] == 1.0 and plain["F (left at t=1)"] == 0.0 and plain["eta(t_N-1)"] == 1.0
    assert plain["held-out dist (RMS)"] < 1e-6 and float(tiny.sweep.heldout_real.max()) < 1e-6  # held-out = train
    assert torch.equal(per["launch alpha0=0.02"]["memorized"], per["EFM (eta = 1)"]["memorized"])
    land = table.loc["landing beta0=0.05"]
    f = float(displacement_factors(tiny.grid, KTS(beta0=0.05), start=12)[-1])
    assert land["F (left at t=1)"] == f and 0.0 <= land["F_mem predicted"] <= 1.0
    assert math.isnan(table.loc["landing beta0=0.05, tau_split=0.2", "F_mem predicted"])  # starts before collapse
    shown = study.sweep_display(table)
    assert "family" not in shown and shown.loc["EFM (eta = 1)", "F_mem"] == 100.0


def test_detectors_separate_perfect_scores_and_skip_small_classes():
    y = torch.tensor([True] * 6 + [False] * 6)
    score = y.double() + 0.01 * torch.arange(12)
    mem_mix = SimpleNamespace(memorized=y)
    res_mix = SimpleNamespace(kpe=score, kpe_late=score, kpe_early=-score)
    few = {"memorized": torch.tensor([True] * 2 + [False] * 10), "late": score}
    pops = study.detector_populations(few, torch.zeros(12), mem_mix, res_mix)
    assert [p for p, _ in pops] == ["EFM + landing", "mixture field"] and "gap" in pops[0][1]
    det = study.detector_aurocs(pops, n_boot=20, seed=0)
    assert list(det) == [("mixture field", "late"), ("mixture field", "kpe"), ("mixture field", "early")]
    assert det[("mixture field", "late")].auroc == 1.0 and det[("mixture field", "early")].auroc == 0.0
    table = study.detector_table(det)
    assert table.loc[("mixture field", "total KPE"), "copies"] == 6 and table["AUROC"].tolist() == [1.0, 1.0, 0.0]


def test_energy_density_study_is_exact_for_one_atom_and_keeps_the_draw_order():
    atom = torch.zeros(1, 5, dtype=torch.float64)
    efm = EmpiricalVelocity(atom)
    dens = study.energy_density_study(efm, atom, [0.3, 0.6], 40, (0.5, 1.5), (0.0, 0.99),
                                      torch.Generator().manual_seed(7))
    assert dens.table["slope"].tolist() == pytest.approx([2.0] * 4, abs=1e-9)
    assert dens.table["points typical set"].tolist() == [40] * 4
    gen = torch.Generator().manual_seed(7)
    x, _ = shell_points(atom, 0.3, 40, (0.5, 1.5), gen)                # first draw of the first time
    assert torch.equal(dens.scatter[0.3].neg_log_density, dominance_data(efm, x, 0.3).neg_log_density)
    assert list(study.density_display(dens.table).index.names) == ["t", "threshold"]


def test_cifar_study_copies_and_draws_its_own_noise():
    images = 2 * torch.randn(5, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    grid = time_grid(10)
    cif = study.cifar_study(images, grid, KTS(beta0=0.05), [0.0, 0.5], 6, torch.Generator().manual_seed(1),
                            device="cpu", n_boot=20, seed=0)
    x0 = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(cif.plain.x, sample(EmpiricalVelocity(images.double()), x0, grid=grid).x)
    assert cif.mem.value == 1.0 and cif.commit.shape == (6,) and cif.diag.speed.shape == (2, 6)
    gap = torch.cdist(images.double().flatten(1), images.double().flatten(1)).fill_diagonal_(math.inf).min(1).values
    assert torch.allclose(cif.gap, gap)


def test_dataset_row_by_hand():
    data = torch.tensor([[3.0, 4.0], [0.0, 0.0]], dtype=torch.float64)      # mean ||a||^2 = 12.5, d = 2
    m = SimpleNamespace(value=0.5, ci95=(0.25, 0.75))
    res = SimpleNamespace(kpe=torch.tensor([6.0, 8.0]), x=torch.zeros(2, 2))
    row = study.dataset_row("toy", data, torch.linspace(0, 1, 11, dtype=torch.float64), m, m, res,
                            torch.tensor([2.0, 4.0]), 0.05)
    assert row["1/2(mean||a||^2 + d)"] == 7.0 and row["mean KPE"] == 7.0 and row["samples"] == 2
    assert row["F_mem EFM (%)"] == "50.0 [25.0, 75.0]" and row["F_mem landing beta0=0.05 (%)"] == "50.0 [25.0, 75.0]"
    assert row["commit time median [10%, 90%]"] == "0.50 [0.10, 0.90]"
    assert row["median gap (RMS)"] == round(2.0 / math.sqrt(2), 3)


def _fake_results():
    sweep = pd.DataFrame({"F_mem": [1.0, 0.5], "F_mem predicted": [1.0, float("nan")], "KPE": [3.0, 2.0],
                          "KPE early": [1.0, 1.0], "KPE late": [2.0, 1.0], "held-out dist (RMS)": [0.1, 0.2]},
                         index=pd.Index(["EFM (eta = 1)", "landing beta0=0.02"], name="configuration"))
    theory = pd.DataFrame({"t": [0.1, 0.1, 0.5], "threshold": [0.0, 0.99, 0.0], "slope": [1.9, 2.0, 2.0],
                           "R2": [0.8, 0.99, 0.9], "median max w": [0.4, 1.0, 0.9]})
    det = {("mixture field", "late"): DetectorResult(0.9, 0.85, 0.95, 5, 5, 100, 0.01),
           ("mixture field", "kpe"): DetectorResult(0.7, 0.6, 0.8, 5, 5, 100, 0.01),
           ("EFM + landing", "gap"): DetectorResult(0.6, 0.5, 0.7, 5, 5, 100, 0.01)}
    return sweep, theory, det


def test_reading_values_read_the_tables():
    sweep, theory, det = _fake_results()
    r = study.reading_values(sweep=sweep, theory=theory, detectors=det, best_name="landing beta0=0.02",
                             lowest_name="landing beta0=0.02", balanced_name="EFM (eta = 1)", real_ho=0.1,
                             tolerance=0.05, theory_r2_min=0.99, pred_gap=0.0, t_low=0.1, threshold_low=0.0)
    assert r["efm_fmem_best"] == 50.0 and r["efm_fmem_balanced"] == 100.0 and r["efm_tolerance"] == 5.0
    assert (r["efm_slope_low"], r["efm_r2_low"], r["efm_w_low"]) == (1.9, 0.8, 0.4)
    assert r["efm_auroc_late"] == 0.9 and r["efm_auroc_gap"] == 0.6 and math.isnan(r["efm_auroc_late_kts"])


def test_chapter_metrics_and_protocol():
    sweep, theory, det = _fake_results()
    mem = SimpleNamespace(value=1.0, ci95=(1.0, 1.0))
    cifar = SimpleNamespace(mem=mem, mem_landing=SimpleNamespace(value=0.25), commit=torch.tensor([0.2, 0.4]))
    m = study.chapter_metrics(mem_plain=mem, mem_mix=SimpleNamespace(value=0.5), cifar=cifar, sweep=sweep,
                              detectors=det, best_name="landing beta0=0.02",
                              lowest_name="landing beta0=0.02", balanced_name="EFM (eta = 1)", land02=None,
                              launch_names=["EFM (eta = 1)"], dominated=theory, theory_r2_min=0.99,
                              rel_icpt=pd.Series([0.01, -0.02]), commit_median=0.3, kpe_mean=3.0, kpe_ratio=1.0,
                              pred_gap=0.0, heldout_rms_real=0.1, tolerance=0.05)
    assert m["fmem_kts_best"] == 0.5 and m["fmem_landing_002"] is None and m["fmem_launch"] == {"EFM (eta = 1)": 1.0}
    assert m["theory_slope_range"] == [1.9, 2.0] and m["theory_intercept_rel_err_max"] == 0.02
    assert m["sweep"]["landing beta0=0.02"]["F_mem_predicted"] is None and m["late_kpe_auroc_efm_landing"] is None
    assert m["cifar_commit_time_median"] == pytest.approx(0.2) and "verdicts" not in m and "tests" not in m
    assert m["fmem_kts_best_rule"] == "lowest F_mem with held-out distance <= 1.05 x real faces'"
    params = {k: 0 for k in ("efm_n_samples", "efm_cifar_n_samples", "efm_beta0_sweep", "efm_tau_sweep",
                             "efm_landing_beta0", "efm_eta_end", "efm_launch_alpha0", "efm_balanced", "efm_mix_rho",
                             "efm_mix_cov_floor", "efm_theory_times", "efm_theory_points",
                             "efm_theory_noise_scale", "efm_dominance", "efm_n_boot")}
    data = SimpleNamespace(n_train=3, faces=SimpleNamespace(mean=0.5), heldout=[0, 1],
                           cifar=SimpleNamespace(images=torch.zeros(4, 3, 1, 1)))
    p = study.chapter_protocol(data, params, n_steps=100, k_rate=3.0, tau_split=0.6, seed=0)
    assert p["n_steps"] == 100 and p["kts"]["tau_split"] == 0.6 and p["cifar10"].startswith("first 4 train images")
    assert "mean 0.5000 subtracted" in p["celeba"] and "next 2 images" in p["celeba"]


def test_figures_draw(tiny):
    faces = _images(tiny.train)
    figs = [study.path_figure(tiny.paths, tiny.steps, tiny.check, tiny.landing, 0.6),
            study.sweep_figure(tiny.sweep.table, grid=tiny.grid, tau_step=12, d_start=tiny.check.d_start,
                               face_gap=tiny.atom_gap[tiny.check.atom],
                               exponential_scale=study.landing_form_scale()["exponential"], real_heldout_rms=0.0,
                               paper_points=[(0.0, 0.37), (0.02, 0.19)], n_samples=8),
            study.copies_figure(tiny.sweep.per_sample, tiny.configs, faces, tiny.train, [0.0, 0.02, 0.05], 0.05)]
    y = torch.tensor([True, False] * 4)
    res = tiny.paths.plain
    pops = [("mixture field", {"memorized": y, "late": res.kpe_late, "kpe": res.kpe})]
    det = {("mixture field", "late"): DetectorResult(0.5, 0.4, 0.6, 4, 4, 100, 0.1)}
    figs.append(study.detector_figure(res, y, det, pops, 0.6))
    atom = torch.zeros(1, 3, dtype=torch.float64)
    dens = study.energy_density_study(EmpiricalVelocity(atom), atom, [0.3], 10, (0.5, 1.5), (0.0, 0.99),
                                      torch.Generator().manual_seed(0))
    figs.append(study.density_figure(dens.scatter, 1, 3, 0.0, 0.99))
    assert [len(f.axes) for f in figs] == [3, 3, 8, 2, 2]
    for f in figs:
        plt.close(f)


# ---------------------------------------------------------------- the tests behind the scoreboard rows
import numpy as np  # noqa: E402

from kpe_lib.book.scoreboard import ROWS, chapter_table  # noqa: E402
from kpe_lib.book.verdicts import evidence  # noqa: E402
from kpe_lib.metrics import bootstrap_ci, mcnemar_exact  # noqa: E402

CHAPTER_ROWS = [r for r in ROWS if r.chapter == "02_efm_memorization"]


def test_fmem_change_is_the_paired_mcnemar_and_bootstrap_of_the_flag_difference():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(40, generator=gen) < 0.9
    b = a & (torch.rand(40, generator=gen) < 0.6)          # B copies a subset of A's copies
    c = study.fmem_change(a, b, n_boot=200, seed=7)
    ref = mcnemar_exact(a.numpy(), b.numpy())
    boot = bootstrap_ci(np.mean, b.numpy().astype(float) - a.numpy().astype(float), n_boot=200, seed=7)
    assert c["p"] == ref.pvalue and c["ci95"] == list(boot.ci) and c["n"] == 40
    assert c["n01"] == 0 and c["n10"] == int((a & ~b).sum()) and c["change"] == pytest.approx(
        float(b.float().mean() - a.float().mean()))
    assert c["ci95"][1] < 0 and c["p"] < 0.05
    same = study.fmem_change(a, a, n_boot=50, seed=0)      # identical flags: no discordant pair, zero interval
    assert same["p"] == 1.0 and same["ci95"] == [0.0, 0.0]


def test_fmem_change_does_not_touch_the_global_random_state():
    torch.manual_seed(3)
    np.random.seed(3)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    study.fmem_change([True, False, True], [False, False, True], n_boot=30, seed=0)
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])


def test_fmem_changes_pairs_every_configuration_with_plain_efm_and_skips_missing_ones():
    ps = {"EFM (eta = 1)": {"memorized": torch.tensor([True, True, True, True])},
          "landing beta0=0.02": {"memorized": torch.tensor([True, False, True, False])}}
    out = study.fmem_changes(ps, {"landing only": "landing beta0=0.02", "balanced": None, "launch only": "absent"},
                             n_boot=20, seed=0)
    assert list(out) == ["landing only"] and out["landing only"]["n10"] == 2 and out["landing only"]["p"] == 0.5


def test_paper_landing_points_are_read_from_the_scoreboard_rows():
    pts = study.paper_landing_points([(r.metric, r.paper) for r in CHAPTER_ROWS])
    landing = next(r for r in CHAPTER_ROWS if r.test == "fmem_efm.landing only")
    assert pts[1][0] == 0.02 and pts[1][1] - pts[0][1] == pytest.approx(landing.paper_value / 100)
    assert study.paper_landing_points([("something else", "1 -> 2")]) == []


def _chapter_like_metrics(flags_plain, flags_cfg):
    """Metrics with the keys the chapter writes, and the tests it stores, for every row of the chapter."""
    changes = study.fmem_changes({"EFM (eta = 1)": {"memorized": flags_plain}, "cfg": {"memorized": flags_cfg}},
                                 {"balanced": "cfg", "launch only": "cfg", "landing only": "cfg"}, n_boot=100,
                                 seed=0)
    f_a, f_b = float(flags_plain.float().mean()), float(flags_cfg.float().mean())
    return {"fmem_efm": f_a, "fmem_kts_balanced": f_b, "fmem_landing_002": f_b,
            "fmem_launch": {"launch alpha0=0.02": f_b, "launch alpha0=0.05": f_b},
            "late_kpe_auroc": 0.94, "late_kpe_auroc_ci": [0.87, 0.99], "theory_r2_min": 0.995,
            "tests": {"fmem_efm": {k: evidence("exact McNemar", **c) for k, c in changes.items()},
                      "late_kpe_auroc": evidence("bootstrap CI (AUROC)", ci95=[0.87, 0.99], n=48)}}


def test_every_row_of_the_chapter_reads_the_keys_the_chapter_writes():
    all_copies = torch.ones(48, dtype=torch.bool)
    table = chapter_table("02_efm_memorization", _chapter_like_metrics(all_copies, all_copies))
    assert len(table) == len(CHAPTER_ROWS) == 5
    verdict = {r.test or r.ours[0]: table.loc[r.metric, "verdict"] for r in CHAPTER_ROWS}
    # identical flags (EFM copies every sample; so does KTS that finishes the path): the run resolves the
    # paper's change (zero-width interval) but sees none
    assert [verdict[f"fmem_efm.{k}"] for k in ("balanced", "launch only", "landing only")] == ["not established"] * 3
    assert verdict["late_kpe_auroc"] == "reproduced in direction" and verdict["theory_r2_min"] == "untested"
    assert "exact McNemar p = 1" in table.loc[CHAPTER_ROWS[0].metric, "test"]
    glued = study.verdict_glue(table, [(r.metric, r.test or r.ours[0]) for r in CHAPTER_ROWS])
    assert set(glued) == {"efm_verdict_balanced", "efm_verdict_launch_only", "efm_verdict_landing_only",
                          "efm_verdict_late_kpe_auroc", "efm_verdict_theory_r2_min"}


def test_fewer_copies_on_the_same_noise_are_judged_in_direction():
    gen = torch.Generator().manual_seed(0)
    plain = torch.ones(200, dtype=torch.bool)
    fewer = torch.rand(200, generator=gen) < 0.7              # about 30 points fewer copies: significant
    table = chapter_table("02_efm_memorization", _chapter_like_metrics(plain, fewer))
    # the rows' magnitudes are never compared (a trained UNet against the closed form)
    assert set(table["verdict"].iloc[:3]) == {"reproduced in direction"}
