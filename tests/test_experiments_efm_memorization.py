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
