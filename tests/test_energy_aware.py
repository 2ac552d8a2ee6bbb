"""The energy-aware soft landing against hand-computed oracles (kpe_lib.energy_aware)."""
import math

import pytest
import torch

from kpe_lib import KTS, sample, time_grid
from kpe_lib.energy_aware import (EnergyAwareLanding, EnergyMonitor, late_power_threshold, mean_late_power,
                                  sample_energy_aware)

F64 = torch.float64


def per_sample_constant(c: torch.Tensor):
    """v_i(x, t) = c_i: the power of sample i is 1/2 ||c_i||^2 at every time."""
    return lambda x, t: c.to(x.dtype).clone()


def by_hand_eta(t: float, beta0: float, tau: float = 0.6, k: float = 3.0) -> float:
    """Default exponential landing, written out (Mathematics §3)."""
    return 1.0 if t < tau else 1.0 - beta0 * (math.exp(k * (t - tau) / (1 - tau)) - 1.0)


def test_constant_fields_damp_exactly_the_high_power_paths():
    c = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [4.0, 4.0]], dtype=F64)  # powers 0.5, 4.5, 2, 16
    x0 = torch.zeros(4, 2, dtype=F64)
    landing = EnergyAwareLanding(threshold=3.0, kts=KTS(beta0=0.03))
    out = sample_energy_aware(per_sample_constant(c), x0, landing, n_steps=50)
    assert out.damped.tolist() == [False, True, False, True]
    assert torch.allclose(out.mean_late_power, 0.5 * c.pow(2).sum(1), rtol=1e-14)
    # Euler: x(1) = x0 + c * sum_j eta(t_j) dt for damped paths, x0 + c for the others
    grid = time_grid(50).tolist()
    travel = sum(by_hand_eta(grid[j], 0.03) * (grid[j + 1] - grid[j]) for j in range(50))
    expect = c * torch.where(out.damped, torch.tensor(travel, dtype=F64), torch.tensor(1.0, dtype=F64))[:, None]
    assert torch.allclose(out.result.x, expect, atol=1e-14)
    assert travel < 0.99  # the landing really shortened the damped paths
    # KPE of a damped path: 1/2 ||c||^2 sum_j eta_j^2 dt_j; raw KPE is untouched
    kpe_damped = sum(by_hand_eta(grid[j], 0.03) ** 2 * (grid[j + 1] - grid[j]) for j in range(50))
    power = 0.5 * c.pow(2).sum(1)
    factor = torch.where(out.damped, torch.tensor(kpe_damped, dtype=F64), torch.tensor(1.0, dtype=F64))
    assert torch.allclose(out.result.kpe, power * factor, rtol=1e-12)
    assert torch.allclose(out.result.kpe_raw, power, rtol=1e-12)


@pytest.mark.parametrize("solver", ["euler", "midpoint"])
@pytest.mark.parametrize("kind", ["uniform", "cosine"])
def test_damped_paths_match_fixed_kts_and_others_match_plain(solver, kind):
    torch.manual_seed(0)
    a = torch.randn(6, 3, dtype=F64)

    def field(x, t):  # a smooth state-dependent field
        return a - x * t.view(-1, 1)

    x0 = torch.randn(6, 3, dtype=F64)
    kwargs = dict(n_steps=20, solver=solver, grid_kind=kind)
    plain = sample(field, x0, **kwargs)
    fixed = sample(field, x0, gain=KTS(beta0=0.04), **kwargs)
    thr = float(mean_late_power(plain).median())
    out = sample_energy_aware(field, x0, EnergyAwareLanding(threshold=thr, kts=KTS(beta0=0.04)), **kwargs)
    on, touched = out.damped, out.ever_damped
    assert 0 < int(on.sum()) < 6 and bool((touched | ~on).all())
    # paths are independent: one whose switch never came on follows the plain path exactly
    assert bool((~touched).any())
    assert torch.equal(out.result.x[~touched], plain.x[~touched])
    never = EnergyAwareLanding(threshold=math.inf, kts=KTS(beta0=0.04))
    always = EnergyAwareLanding(threshold=0.0, kts=KTS(beta0=0.04))
    assert torch.equal(sample_energy_aware(field, x0, never, **kwargs).result.x, plain.x)
    assert torch.allclose(sample_energy_aware(field, x0, always, **kwargs).result.x, fixed.x, atol=1e-14)


def test_running_mean_is_the_left_sum_for_power_linear_in_time():
    # |v|^2 / 2 = p(t) = 1 + 10 t; P(t_k) = sum_{0.6 <= t_j < t_k} p(t_j) dt / (t_k - 0.6), by hand
    def field(x, t):
        speed = torch.sqrt(2 * (1 + 10 * t)).view(-1, 1)
        return speed * torch.tensor([[1.0, 0.0]], dtype=x.dtype)

    grid = time_grid(20).tolist()
    landing = EnergyAwareLanding(threshold=6.0, kts=KTS(beta0=0.02))
    mon = EnergyMonitor(field, landing)
    x = torch.zeros(3, 2, dtype=F64)
    late = [t for t in grid[:-1] if t >= 0.6]
    crossed = False
    for t in grid[:-1]:
        tt = torch.full((3,), t, dtype=F64)
        mon.velocity(x, tt)
        eta = mon.gain(t)
        if t >= 0.6:
            before = [u for u in late if u < t - 1e-12]
            expect = (sum((1 + 10 * u) * 0.05 for u in before) / (t - 0.6)) if before else 1 + 10 * t
            assert torch.allclose(mon.mean_power, torch.full((3,), expect, dtype=F64), rtol=1e-12)
            crossed = expect > 6.0
        assert torch.allclose(eta, torch.full((3,), by_hand_eta(t, 0.02) if crossed else 1.0, dtype=F64), rtol=1e-14)
    assert crossed  # the threshold was crossed on the way (P reaches 6 after t = 0.8)
    # late energy: left sum of 1 + 10 t over the late nodes before the last evaluation (0.95)
    expect = sum((1 + 10 * u) * 0.05 for u in late[:-1])
    assert torch.allclose(mon.late_energy, torch.full((3,), expect, dtype=F64), rtol=1e-12)


def test_decided_switch_matches_the_plain_run_calibration():
    torch.manual_seed(1)
    a = torch.randn(16, 3, dtype=F64)

    def field(x, t):
        return a * (1 + t.view(-1, 1)) - 0.5 * x

    x0 = torch.randn(16, 3, dtype=F64)
    plain = sample(field, x0, n_steps=20, record_trajectory=True)
    window = mean_late_power(plain, until=0.8)
    thr = late_power_threshold(plain, 0.5, until=0.8)
    srt = window.sort().values
    assert srt[7] < thr < srt[8]  # the interpolated median of 16 values
    landing = EnergyAwareLanding(threshold=thr, kts=KTS(beta0=0.05), decide_at=0.8)
    out = sample_energy_aware(field, x0, landing, n_steps=20, record_trajectory=True)
    # the decision equals the plain run's window mean: exactly the upper half is damped
    assert torch.equal(out.damped, window > thr) and int(out.damped.sum()) == 8
    traj, ref = out.result.trajectory, plain.trajectory
    assert torch.equal(traj[:17], ref[:17])  # no landing before t = 0.8 (node 16): every path is the plain one
    assert torch.equal(traj[:, ~out.damped], ref[:, ~out.damped])
    assert not torch.allclose(traj[-1, out.damped], ref[-1, out.damped])
    # and, frozen, it equals a fixed landing that starts at t = 0.8 on the damped paths
    eta = [1.0 if t < 0.8 - 1e-12 else by_hand_eta(t, 0.05) for t in time_grid(20).tolist()[:-1]]
    x, a_on = x0[out.damped].clone(), a[out.damped]
    grid = time_grid(20).tolist()
    for j in range(20):
        x = x + eta[j] * (grid[j + 1] - grid[j]) * (a_on * (1 + grid[j]) - 0.5 * x)
    assert torch.allclose(out.result.x[out.damped], x, atol=1e-12)


def test_soft_switch_and_launch():
    landing = EnergyAwareLanding(threshold=2.0, kts=KTS(0.05, 0.02), sharpness=4.0)
    s = landing.switch(torch.tensor([2.0, 2.0 * math.e, 2.0 / math.e], dtype=F64))
    expect = torch.tensor([0.5, 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(4))], dtype=F64)
    assert torch.allclose(s, expect, rtol=1e-14)
    c = torch.tensor([[2.0], [1.0]], dtype=F64)  # powers 2 (switch 1/2) and 0.5
    mon = EnergyMonitor(per_sample_constant(c), landing)
    x = torch.zeros(2, 1, dtype=F64)
    mon.velocity(x, torch.full((2,), 0.3, dtype=F64))
    assert torch.allclose(mon.gain(0.3), torch.full((2,), 1 + 0.05 * (1 - 0.3 / 0.6), dtype=F64), rtol=1e-14)
    mon.velocity(x, torch.full((2,), 0.9, dtype=F64))
    beta = 0.02 * (math.exp(3 * 0.75) - 1)
    sw = 1 / (1 + math.exp(-4 * math.log(0.25)))
    assert torch.allclose(mon.gain(0.9), torch.tensor([1 - 0.5 * beta, 1 - sw * beta], dtype=F64), rtol=1e-12)


def test_threshold_calibration_from_a_plain_run():
    c = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype=F64)  # powers 0.5, 2, 4.5, 8, 12.5
    res = sample(per_sample_constant(c), torch.zeros(5, 1, dtype=F64), n_steps=10, grid_kind="cosine")
    assert torch.allclose(mean_late_power(res), 0.5 * c[:, 0] ** 2, rtol=1e-13)
    assert late_power_threshold(res, 0.5) == pytest.approx(4.5, rel=1e-13)
    assert late_power_threshold(res, 1.0) == pytest.approx(12.5, rel=1e-13)
    # quantile q damps the paths above it: with q = 0.5 the top two of five
    out = sample_energy_aware(per_sample_constant(c), torch.zeros(5, 1, dtype=F64),
                              EnergyAwareLanding(threshold=late_power_threshold(res, 0.5)), n_steps=10)
    assert out.damped.tolist() == [False, False, False, True, True]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        EnergyAwareLanding(threshold=-1.0)
    with pytest.raises(ValueError, match="beta0"):
        EnergyAwareLanding(threshold=1.0, kts=KTS(beta0=0.0))
    with pytest.raises(ValueError, match="beta0"):
        EnergyAwareLanding(threshold=1.0, kts=KTS(beta0=0.06))  # eta(1) = 1 - 0.06 * 19.09 < 0
    with pytest.raises(ValueError, match="sharpness"):
        EnergyAwareLanding(threshold=1.0, sharpness=-2.0)
    with pytest.raises(ValueError, match="quantile"):
        late_power_threshold(sample(lambda x, t: x, torch.ones(2, 1), n_steps=4), 1.5)
    with pytest.raises(ValueError, match="decide_at"):
        EnergyAwareLanding(threshold=1.0, decide_at=0.5)  # before tau_split
    mon = EnergyMonitor(lambda x, t: x, EnergyAwareLanding(threshold=1.0))
    with pytest.raises(ValueError, match="must follow a velocity evaluation"):
        mon.gain(0.1)
    mon.velocity(torch.ones(2, 1), torch.full((2,), 0.5))
    mon.gain(0.5)
    with pytest.raises(ValueError, match="must follow a velocity evaluation"):
        mon.gain(0.5)  # one gain per evaluation
    mon.velocity(torch.ones(2, 1), torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="must not decrease"):
        mon.gain(0.1)
    with pytest.raises(ValueError, match="gain is set"):
        sample_energy_aware(lambda x, t: x, torch.ones(2, 1), EnergyAwareLanding(threshold=1.0), gain=KTS(),
                            n_steps=3)
