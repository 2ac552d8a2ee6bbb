"""Path diagnostics, the energy normalisation, the time convention, callbacks and precision, against analytic
oracles (Mathematics §2)."""
import math

import pytest
import torch

from kpe_lib import KTS, sample, time_grid
from kpe_lib.diagnostics import PathDiagnostics, StepInfo, cumulative_energy

SOLVERS = ["euler", "midpoint", "heun", "rk4"]


def constant(c):
    return lambda x, t: c.expand_as(x).to(x.dtype)


def linear_speed(c):  # v = 2 t c: a straight path x0 -> x0 + c at linearly growing speed
    return lambda x, t: 2.0 * t.view(-1, *[1] * (x.ndim - 1)).to(x.dtype) * c.expand_as(x).to(x.dtype)


@pytest.mark.parametrize("solver", SOLVERS)
def test_constant_velocity_is_perfectly_straight(solver):
    c = torch.tensor([3.0, -4.0], dtype=torch.float64)
    res = sample(constant(c), torch.randn(6, 2, dtype=torch.float64), n_steps=9, grid_kind="cosine",
                 solver=solver, diagnostics=True)
    d = res.diagnostics
    assert isinstance(d, PathDiagnostics)
    assert torch.allclose(d.straightness, torch.ones(6, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.chord_energy, torch.full((6,), 12.5, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.path_length, torch.full((6,), 5.0, dtype=torch.float64), rtol=1e-12)
    assert d.acceleration.shape == (8, 6) and float(d.acceleration.abs().max()) < 1e-9
    assert d.guidance_energy is None and d.guidance_share is None


def test_linear_speed_has_straightness_four_thirds_and_constant_acceleration():
    # v = 2 t c: x1 - x0 = c, KPE = 1/2 int 4 t^2 |c|^2 = 2/3 |c|^2, bound 1/2 |c|^2, |dv/dt| = 2 |c|
    c = torch.tensor([1.0, 2.0, 2.0], dtype=torch.float64)  # |c| = 3
    res = sample(linear_speed(c), torch.zeros(2, 3, dtype=torch.float64), n_steps=5, solver="rk4",
                 diagnostics=True)
    d = res.diagnostics
    assert torch.allclose(res.kpe, torch.full((2,), 6.0, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.straightness, torch.full((2,), 4 / 3, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.path_length, torch.full((2,), 3.0, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.acceleration, torch.full((4, 2), 6.0, dtype=torch.float64), rtol=1e-12)
    assert torch.allclose(d.acceleration_times, torch.tensor([0.1, 0.3, 0.5, 0.7], dtype=torch.float64))


def test_euler_sums_obey_the_straight_line_bound_and_cauchy_schwarz_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    field = lambda x, t: 3 * net(torch.cat([x, t[:, None]], 1))
    res = sample(field, torch.randn(64, 2, dtype=torch.float64), n_steps=13, diagnostics=True,
                 record_trajectory=True)
    d = res.diagnostics
    assert bool((d.straightness >= 1 - 1e-12).all()) and float(d.straightness.max()) > 1.001
    assert bool((d.path_length ** 2 <= 2 * res.kpe * (1 + 1e-12)).all())
    polyline = (res.trajectory[1:] - res.trajectory[:-1]).norm(dim=2).sum(0)  # Euler: the polyline's length
    assert torch.allclose(d.path_length, polyline, rtol=1e-12)
    v = torch.stack([field(res.trajectory[i], torch.full((64,), float(res.grid[i]), dtype=torch.float64))
                     for i in range(13)])
    accel = (v[1:] - v[:-1]).norm(dim=2) / (res.grid[1:-1] - res.grid[:-2])[:, None]
    assert torch.allclose(d.acceleration, accel, rtol=1e-10)


def test_kts_straightness_is_the_speed_variation_of_the_gain():
    # constant c under a gain: path x0 + c int eta, KPE = 1/2 |c|^2 int eta^2 -> straightness int eta^2 / (int eta)^2
    gain, grid = KTS(alpha0=0.2, beta0=0.03), time_grid(40)
    c = torch.tensor([1.0, 1.0], dtype=torch.float64)
    res = sample(constant(c), torch.zeros(1, 2, dtype=torch.float64), grid=grid, gain=gain, diagnostics=True)
    eta = torch.tensor([gain(float(t)) for t in grid[:-1]], dtype=torch.float64)
    dt = grid[1:] - grid[:-1]
    expect = float((dt * eta ** 2).sum() / (dt * eta).sum() ** 2)
    assert float(res.diagnostics.straightness[0]) == pytest.approx(expect, rel=1e-12)
    assert expect > 1.01
    assert float(res.diagnostics.path_length[0]) == pytest.approx(math.sqrt(2) * float((dt * eta).sum()), rel=1e-12)


def test_energy_norm_mean_divides_every_energy_by_the_dimension():
    x0 = torch.zeros(3, 2, 4, 4, dtype=torch.float64)  # d = 32
    total = sample(lambda x, t: torch.ones_like(x), x0, n_steps=4, diagnostics=True)
    mean = sample(lambda x, t: torch.ones_like(x), x0, n_steps=4, diagnostics=True, energy_norm="mean")
    assert total.energy_norm == "sum" and mean.energy_norm == "mean"
    assert torch.allclose(total.kpe, torch.full((3,), 16.0, dtype=torch.float64))
    assert torch.allclose(mean.kpe, torch.full((3,), 0.5, dtype=torch.float64))
    for name in ("kpe_raw", "kpe_early", "kpe_late", "energy", "energy_raw"):
        assert torch.allclose(getattr(mean, name) * 32, getattr(total, name))
    assert torch.allclose(mean.diagnostics.chord_energy * 32, total.diagnostics.chord_energy)
    assert torch.equal(mean.diagnostics.straightness, total.diagnostics.straightness)
    assert torch.equal(mean.diagnostics.path_length, total.diagnostics.path_length)  # a length: never normalised
    with pytest.raises(ValueError, match="energy_norm must be one of"):
        sample(lambda x, t: x, x0, n_steps=2, energy_norm="per_pixel")


@pytest.mark.parametrize("solver", SOLVERS)
def test_cumulative_energy_ends_at_the_kpe(solver):
    res = sample(lambda x, t: torch.sin(x) + t[:, None], torch.randn(5, 2, dtype=torch.float64), n_steps=7,
                 solver=solver, gain=KTS(alpha0=0.1, beta0=0.02))
    cum = res.cumulative_energy()
    assert cum.shape == (8, 5) and torch.equal(cum[0], torch.zeros(5, dtype=torch.float64))
    assert torch.allclose(cum[-1], res.kpe, rtol=1e-13)
    assert torch.allclose(cumulative_energy(res, raw=True)[-1], res.kpe_raw, rtol=1e-13)
    assert bool((cum[1:] >= cum[:-1]).all())
    with pytest.raises(ValueError, match="track_energy"):
        sample(lambda x, t: x, torch.ones(2, 2), n_steps=2, track_energy=False).cumulative_energy()


class ConstantGuided:
    """A guided field with constant parts: v = v_null + w (v_y - v_null), guidance (w - 1)(v_y - v_null)."""

    def __init__(self, v_y, v_null, w):
        self.v_y, self.v_null, self.w, self.calls = v_y, v_null, w, 0

    def __call__(self, x, t):
        return self.velocity_and_guidance(x, t)[0]

    def velocity_and_guidance(self, x, t):
        self.calls += 1
        v = self.v_null + self.w * (self.v_y - self.v_null)
        return v.expand_as(x).clone(), ((self.w - 1) * (self.v_y - self.v_null)).expand_as(x).clone()


def test_guidance_energy_and_share_without_extra_calls():
    v_y, v_null = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    field = ConstantGuided(v_y, v_null, w=3.0)  # v = (3, -2), g = (2, -2)
    res = sample(field, torch.zeros(4, 2, dtype=torch.float64), n_steps=10, solver="heun", diagnostics=True)
    assert field.calls == res.nfe == 20
    assert torch.allclose(res.kpe, torch.full((4,), 6.5, dtype=torch.float64))
    assert torch.allclose(res.diagnostics.guidance_energy, torch.full((4,), 4.0, dtype=torch.float64))
    assert torch.allclose(res.diagnostics.guidance_share, torch.full((4,), 4.0 / 6.5, dtype=torch.float64))
    # the conditional part v_y = v - g = (1, 0): energy 1/2; the cross term <v_y, g> = 2 closes the sum
    assert torch.allclose(res.diagnostics.conditional_energy, torch.full((4,), 0.5, dtype=torch.float64))
    assert torch.allclose(res.diagnostics.cross_energy(res.kpe), torch.full((4,), 2.0, dtype=torch.float64))
    frame = res.to_dataframe()
    assert list(frame.columns) == ["kpe", "kpe_raw", "kpe_early", "kpe_late", "chord_energy", "straightness",
                                   "path_length", "max_acceleration", "guidance_energy", "guidance_share",
                                   "conditional_energy"]
    assert len(frame) == 4 and frame.attrs["energy_norm"] == "sum" and frame.attrs["nfe"] == 20
    assert frame["guidance_share"].tolist() == pytest.approx([4.0 / 6.5] * 4)
    plain = sample(field, torch.zeros(4, 2, dtype=torch.float64), n_steps=10)  # no diagnostics: plain calls
    assert plain.diagnostics is None and list(plain.to_dataframe().columns) == ["kpe", "kpe_raw", "kpe_early",
                                                                               "kpe_late"]


def test_callback_sees_every_step_and_changes_nothing():
    seen = []
    field = lambda x, t: -x + t[:, None]
    x0 = torch.randn(3, 2, dtype=torch.float64)
    ref = sample(field, x0, n_steps=6, solver="midpoint")
    res = sample(field, x0, n_steps=6, solver="midpoint", callback=seen.append, record_trajectory=True)
    assert torch.equal(ref.x, res.x) and torch.equal(ref.kpe, res.kpe)
    assert [s.index for s in seen] == list(range(6)) and all(isinstance(s, StepInfo) for s in seen)
    assert [s.t for s in seen] == pytest.approx(res.grid[:-1].tolist())
    assert seen[2].times == pytest.approx([2 / 6, 2.5 / 6]) and len(seen[2].velocities) == 2
    assert all(torch.equal(s.x, res.trajectory[s.index + 1]) for s in seen)
    with pytest.raises(ValueError, match="callback must be a callable"):
        sample(field, x0, n_steps=2, callback=3)


def test_time_shape_scalar_passes_a_zero_dim_time():
    shapes = []

    def field(x, t):
        shapes.append(tuple(t.shape))
        return torch.ones_like(x)

    sample(field, torch.zeros(5, 2), n_steps=3)
    sample(field, torch.zeros(5, 2), n_steps=3, time_shape="scalar")
    assert shapes == [(5,)] * 3 + [()] * 3
    with pytest.raises(ValueError, match="time_shape must be one of"):
        sample(field, torch.zeros(5, 2), n_steps=3, time_shape="vector")


def test_half_precision_state_and_time_stay_float32():
    seen = []
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 2))

    def field(x, t):
        seen.append((x.dtype, t.dtype, float(t[0])))
        w = net.to(x.dtype)
        return w(torch.cat([x, t[:, None].to(x.dtype)], 1))

    x0 = torch.randn(256, 2)
    grid = time_grid(50)
    exact = sample(field, x0.double(), grid=grid).x  # float64 reference (net cast to float64)
    half = sample(field, x0.bfloat16(), grid=grid)
    assert half.x.dtype == torch.float32 and {s[:2] for s in seen[-50:]} == {(torch.bfloat16, torch.float32)}
    assert seen[-1][2] == pytest.approx(0.98, abs=1e-7)  # bf16 would round 0.98 to 0.98046875
    # a bf16 state loses about 2^-9 per update; the float32 state only the model's own bf16 rounding
    naive = x0.bfloat16()
    with torch.no_grad():
        for i in range(50):
            t = torch.full((256,), float(grid[i]), dtype=torch.bfloat16)
            naive = naive + float(grid[i + 1] - grid[i]) * field(naive, t)
    err_state32 = float((half.x.double() - exact).abs().mean())
    err_bf16 = float((naive.double() - exact).abs().mean())
    assert err_state32 < 0.7 * err_bf16, (err_state32, err_bf16)
    net.float()


def test_diagnostics_need_energy_tracking():
    with pytest.raises(ValueError, match="track_energy"):
        sample(lambda x, t: x, torch.zeros(2, 2), n_steps=2, diagnostics=True, track_energy=False)


class LabelField(torch.nn.Module):
    """A class-conditional constant field e[y] (row num_classes is the null class), for GuidedVelocity."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.5, -0.5]], dtype=torch.float64)

    def forward(self, x, t, y=None):
        y = torch.full((x.shape[0],), 3) if y is None else y
        return self.e[y] + 0 * x


@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_guided_velocity_reports_its_guidance_part(w):
    from kpe_lib.models import GuidedVelocity

    field, labels = GuidedVelocity(LabelField(), w), torch.tensor([0, 1, 2, 0])
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    plain = sample(field, x0, n_steps=5, y=labels)
    res = sample(field, x0, n_steps=5, y=labels, diagnostics=True)
    assert torch.equal(plain.x, res.x) and torch.equal(plain.kpe, res.kpe)
    e = LabelField().e
    expect = 0.5 * (w - 1) ** 2 * (e[labels] - e[3]).pow(2).sum(1)
    assert torch.allclose(res.diagnostics.guidance_energy, expect)
    assert torch.allclose(res.diagnostics.conditional_energy, 0.5 * e[labels].pow(2).sum(1))


class CountingLabelField(LabelField):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        return super().forward(x, t, y)


@pytest.mark.parametrize("w", [1.0, 2.5])
def test_sample_guided_splits_the_energy_at_no_extra_calls(w):
    from kpe_lib.models.guidance import sample_guided

    labels, x0 = torch.tensor([0, 1, 2, 0, 1]), torch.zeros(5, 2, dtype=torch.float64)
    plain_model, split_model = CountingLabelField(), CountingLabelField()
    plain = sample_guided(plain_model, x0, labels, scale=w, n_steps=4, batch_size=2)
    run = sample_guided(split_model, x0, labels, scale=w, n_steps=4, batch_size=2, diagnostics=True)
    assert plain.guidance_energy is None and plain.conditional_energy is None
    assert torch.equal(plain.kpe, run.kpe) and split_model.calls == plain_model.calls
    e = LabelField().e
    v_y, g = e[labels], (w - 1) * (e[labels] - e[3])
    assert torch.allclose(run.conditional_energy, 0.5 * v_y.pow(2).sum(1))
    assert torch.allclose(run.guidance_energy, 0.5 * g.pow(2).sum(1))
    assert torch.allclose(run.kpe, run.conditional_energy + run.guidance_energy + (v_y * g).sum(1))


def test_sample_guided_diagnostics_needs_a_splitting_guide():
    from kpe_lib.models.guidance import sample_guided

    with pytest.raises(ValueError, match="velocity_and_guidance"):
        sample_guided(LabelField(), torch.zeros(2, 2), torch.tensor([0, 1]), scale=2.0,
                      guide=lambda m, w: (lambda x, t, y=None: m(x, t, y=y)), diagnostics=True)
