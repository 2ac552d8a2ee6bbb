"""kpe_lib.experiments.kpe_2d against hand-checkable values: straight paths, hand-made deciles, one-atom closed forms."""
from dataclasses import replace
from types import SimpleNamespace

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from kpe_lib import KTS, EmpiricalVelocity, sample, time_grid  # noqa: E402
from kpe_lib.data import toy_dataset  # noqa: E402
from kpe_lib.experiments import kpe_2d as study  # noqa: E402
from kpe_lib.metrics.stats import spearman_with_ci  # noqa: E402
from kpe_lib.training import TrainConfig  # noqa: E402

C = torch.tensor([3.0, 4.0])


def constant_field(x, t):
    """v = (3, 4) everywhere: straight paths of KPE 12.5, spent evenly over time."""
    return C.to(x).expand_as(x)


def generator(offset):
    return torch.Generator().manual_seed(offset)


@pytest.fixture(scope="module")
def x0():
    return torch.randn(40, 2, generator=generator(0), dtype=torch.float64)  # exact straight costs


@pytest.fixture(scope="module")
def runs(x0):
    scaled = lambda x, t: 2.0 * constant_field(x, t)
    return study.sample_sets({"a": constant_field, "b": scaled}, x0, n_steps=10)


def test_final_loss_is_the_mean_of_the_last_100():
    assert study.final_loss([1000.0] * 50 + [2.0] * 100) == 2.0


def test_straight_cost_and_noise_grid_by_hand():
    assert study.straight_cost(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)).tolist() == [12.5]
    grid = study.noise_grid(3, 2.0)
    assert grid.shape == (9, 2)
    assert grid[1].tolist() == [0.0, -2.0] and grid[3].tolist() == [-2.0, 0.0]  # row i * R + j = (xs[j], ys[i])


def test_straight_paths_satisfy_every_identity_with_transport_share_one(runs, x0):
    res = runs["a"]
    assert torch.allclose(res.kpe, torch.full_like(res.kpe, 12.5))
    assert study.kpe_identity_failures(res, x0) == []
    assert study.transport_share(res, x0) == pytest.approx(1.0)
    stats = study.kpe_statistics(runs, x0)
    assert stats["b_kpe_mean"] == pytest.approx(50.0) and stats["b_kpe_median"] == pytest.approx(50.0)
    assert study.set_mean(stats, "kpe_mean", ["a", "b"]) == pytest.approx(31.25)


def test_identity_failures_name_the_broken_identities(runs, x0):
    res = runs["a"]
    assert study.kpe_identity_failures(replace(res, kpe_late=2 * res.kpe_late), x0) == ["early + late = KPE"]
    # KPE below the straight cost: too short a path is impossible; the energies no longer sum to it either
    low = replace(res, kpe=res.kpe / 2, kpe_early=res.kpe_early / 2, kpe_late=res.kpe_late / 2)
    assert study.kpe_identity_failures(low, x0) == ["sum dt e = KPE", "KPE >= straight cost"]
    assert "non-negative" in study.kpe_identity_failures(replace(res, kpe=-res.kpe), x0)


def test_noise_maps_of_a_constant_field_are_constant():
    maps = study.kpe_noise_maps({"a": constant_field}, resolution=4, lim=3.0, n_steps=5)
    assert maps["a"].shape == (4, 4) and torch.allclose(maps["a"], torch.full((4, 4), 12.5, dtype=torch.float64))


def test_decile_groups_by_hand():
    groups = study.decile_groups(torch.arange(1.0, 11.0, dtype=torch.float64))  # q_0.1 = 1.9, q_0.9 = 9.1
    assert groups["low KPE"].nonzero().flatten().tolist() == [0]
    assert groups["high KPE"].nonzero().flatten().tolist() == [9]


def test_decile_split_of_even_spending_has_late_share_of_the_late_phase(runs):
    split = study.decile_split(runs)  # uniform grid, constant speed: E_late / E = 1 - 0.6
    assert split.late_share_high["a"] == pytest.approx(0.4) and split.late_share_low["b"] == pytest.approx(0.4)
    assert list(split.metrics()) == ["a_late_share_high", "a_late_share_low", "b_late_share_high", "b_late_share_low"]
    assert split.table.loc[("b", "high KPE"), "mean KPE"] == pytest.approx(50.0)


def test_endpoint_log_density_puts_off_board_points_below_every_other():
    board = toy_dataset("checkerboard")
    x = torch.cat([board.sample(5, generator=generator(1)), torch.tensor([[100.0, 100.0]])])
    ld, finite = study.endpoint_log_density(board, x)
    assert finite.tolist() == [True] * 5 + [False]
    assert ld[-1] == ld[:5].min() - 1.0


def test_support_study_matches_direct_spearman_and_true_gap_is_zero(x0):
    toy = toy_dataset("eight_gaussians")
    res = sample(lambda x, t: x, x0, n_steps=8)  # x1 = (9/8)^8 x0: KPE grows with |x0|
    found = study.support_study({"g": res}, {"g": toy}, x0, generator, n_ref=200, knn_k=3, n_boot=20, seed=0)
    direct = spearman_with_ci(res.kpe.cpu(), toy.log_density(res.x.double()), n_boot=20, seed=0)
    assert found.rho("true")["g"] == direct.value and found.gap("true") == 0.0
    assert found.table.shape == (3, 4) and found.off_support["g"] == 0.0
    metrics = found.metrics()
    assert metrics["g_rho_knn"] == found.rhos[("g", "kNN (k=3)")].value and len(metrics["g_rho_kde_ci95"]) == 2


def test_compare_kts_with_identity_gain_changes_nothing(runs, x0):
    found = study.compare_kts({"a": constant_field}, runs, x0, KTS(0.0, 0.0), n_steps=10)
    metrics = found.metrics()
    assert metrics["a_kts_kpe_ratio"] == 1.0 and metrics["a_kts_late_ratio"] == 1.0
    assert metrics["a_kts_endpoint_shift"] == 0.0 and found.late_ratio_mean() == 1.0


def test_compare_kts_constant_landing_scales_late_energy_by_eta_squared(runs, x0):
    found = study.compare_kts({"a": constant_field}, runs, x0, KTS(beta0=0.5, landing="constant"), n_steps=10)
    assert found.metrics()["a_kts_late_ratio"] == pytest.approx(0.25)  # eta = 1 - 0.5 after tau


def test_terminal_spike_and_nearest_distance_by_hand():
    energy = torch.tensor([[1.0, 4.0], [2.0, 1.0], [8.0, 2.0]])  # steps at t = 0, 1/3, 2/3
    fake = SimpleNamespace(grid=time_grid(3), energy=energy)
    assert study.terminal_spike(fake, t_late=0.5).tolist() == [4.0, 0.5]
    d = study.nearest_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), torch.tensor([[0.0, 1.0], [3.0, 0.0]]))
    assert d.tolist() == [1.0, 4.0]


def test_closed_form_reading_of_one_atom_copies_it(x0):
    atom = torch.tensor([[1.0, -1.0], [1.5, -1.0]])
    efm = sample(EmpiricalVelocity(atom[:1], dtype=torch.float64), x0.double(), n_steps=20)
    reading = study.closed_form_reading(study.ClosedFormRuns(efm, sample(constant_field, x0, n_steps=4), None), atom)
    assert reading.on_points == 1.0  # the last Euler step lands on the atom
    assert reading.efm_kpe == efm.kpe.mean().item() and set(reading.metrics()) >= {"efm_on_points_fraction"}


def test_training_and_closed_form_runs_are_cached_and_repeatable(tmp_path, x0):
    config = {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 2}
    train = TrainConfig(steps=3, batch_size=16, lr=1e-3, ema_decay=None, seed=0)
    first = study.train_toy_models(["two_moons"], config, train, 64, generator, tmp_path)
    again = study.train_toy_models(["two_moons"], config, train, 64, generator, tmp_path)
    assert again.table.loc["two_moons", "new steps"] == 0 and first.metrics() == again.metrics()
    points = first.toys["two_moons"].sample(4, generator=generator(2))
    pair = study.closed_form_runs(points, x0[:6].float(), config, replace(train, batch_size=4), 5, "euler", tmp_path)
    assert pair.efm.x.dtype == torch.float64 and pair.mlp.x.dtype == torch.float32 and pair.train.steps_done == 3


def test_summary_table_reads_the_metric_keys():
    metrics = {f"s_{key}": float(i) for i, key in enumerate(study.SUMMARY_ROWS.values())}
    table = study.summary_table(metrics, ["s"])
    assert table["s"].tolist() == list(range(len(study.SUMMARY_ROWS)))


def test_figures_have_one_panel_per_set(runs, x0):
    import matplotlib.pyplot as plt

    toys = {"a": toy_dataset("two_moons"), "b": toy_dataset("rings")}
    figs = [study.samples_figure(toys, runs, ["a", "b"], generator, n_data=50),
            study.trajectories_figure(runs, ["a", "b"], max_paths=10),
            study.noise_maps_figure({"a": torch.rand(3, 3) + 0.1, "b": torch.rand(3, 3) + 0.1}, 3.0),
            study.decile_profiles_figure(runs, study.decile_split(runs).groups),
            study.kts_paths_figure(runs["a"], runs["b"], "a", max_paths=10),
            study.gain_forms_figure({"g": KTS(alpha0=0.1)}, {"h": KTS(beta0=0.03)}),
            study.closed_form_figure(runs["a"], runs["b"], torch.zeros(2, 2), max_paths=10)]
    try:
        assert [len([ax for ax in f.axes if ax.get_label() != "<colorbar>"]) for f in figs] == [2, 2, 2, 2, 3, 2, 3]
    finally:
        plt.close("all")
