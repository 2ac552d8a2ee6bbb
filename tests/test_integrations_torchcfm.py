"""kpe_lib on models trained with torchcfm: torchcfm's own 2D example, its torch_wrapper and its UNet."""
import pytest
import torch

torchcfm = pytest.importorskip("torchcfm")
from torchcfm.utils import torch_wrapper  # noqa: E402
from torchdiffeq import odeint  # noqa: E402

from kpe_lib import TimeFirst, sample, time_grid  # noqa: E402
from kpe_lib.experiments.bring_your_own_model import source_samples, train_torchcfm_2d  # noqa: E402
from kpe_lib.integrations.torchcfm import ConcatTime, torchcfm_velocity  # noqa: E402

STEPS = 250  # Adam steps of torchcfm's 2D example: seconds, enough for OT-CFM to be visibly straighter


@pytest.fixture(scope="module")
def trained():
    return {name: train_torchcfm_2d(name, steps=STEPS, seed=0) for name in ("I-CFM", "OT-CFM")}


def test_euler_samples_equal_torchdiffeq_on_the_same_grid(trained):
    model = trained["OT-CFM"].model
    x0, grid = source_samples(512, seed=1), time_grid(50)
    with torch.no_grad():
        ours = sample(TimeFirst(torch_wrapper(model)), x0, grid=grid)   # torchcfm's own wrapper, as it is
        theirs = odeint(torch_wrapper(model), x0, grid.float(), method="euler")[-1]
        direct = sample(torchcfm_velocity(model), x0, grid=grid)       # the MLP itself, cat([x, t])
        model64 = model.double()
        ours64 = sample(TimeFirst(torch_wrapper(model64)), x0.double(), grid=grid)
        theirs64 = odeint(torch_wrapper(model64), x0.double(), grid, method="euler")[-1]
        model.float()
    diff, diff64 = float((ours.x - theirs).abs().max()), float((ours64.x - theirs64).abs().max())
    print(f"max |kpe_lib - torchdiffeq euler|: float32 grid {diff:.3g}, float64 {diff64:.3g}")
    assert diff < 2e-5 and diff64 < 1e-12
    assert torch.equal(direct.x, ours.x) and torch.equal(direct.kpe, ours.kpe)


def test_ot_cfm_is_closer_to_the_straight_line_bound_than_i_cfm(trained):
    x0 = source_samples(1000, seed=2)
    ratio = {}
    for name, run in trained.items():
        with torch.no_grad():
            res = sample(torchcfm_velocity(run.model), x0, n_steps=100, diagnostics=True)
        d = res.diagnostics
        assert bool((d.straightness >= 1 - 1e-9).all())  # Euler obeys the bound exactly
        ratio[name] = float(res.kpe.mean() / d.chord_energy.mean())
    print(f"mean KPE / mean straight-line bound after {STEPS} steps: {ratio}")
    assert ratio["OT-CFM"] < 1.1 and ratio["I-CFM"] > ratio["OT-CFM"] + 0.2


def test_torchcfm_unet_is_called_time_first_with_zero_dim_time():
    from torchcfm.models.unet import UNetModel

    torch.manual_seed(0)
    unet = UNetModel(dim=(1, 8, 8), num_channels=32, num_res_blocks=1, channel_mult=(1,),
                     attention_resolutions="4").eval()
    x0, grid = torch.randn(3, 1, 8, 8), time_grid(6)
    with torch.no_grad():
        ours = sample(torchcfm_velocity(unet), x0, grid=grid)
        theirs = odeint(unet, x0, grid.float(), method="euler")[-1]
    assert float((ours.x - theirs).abs().max()) < 1e-5


def test_time_varying_false_is_refused_and_flat_states_required():
    from torchcfm.models import MLP

    with pytest.raises(ValueError, match="time_varying=False"):
        torchcfm_velocity(MLP(dim=2, time_varying=False))
    with pytest.raises(ValueError, match=r"flat states x of shape \(B, d\)"):
        ConcatTime(MLP(dim=2, time_varying=True))(torch.zeros(2, 1, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="name must be one of"):
        train_torchcfm_2d("SB-CFM", steps=1)
