"""The fast single-device paths are off by default and leave the default computation as it was; each option
does what it says: bf16 autocast, device-side noise, deferred loss read-back, device-side statistics, batched
sampling. (The multi-process tests are in test_distributed.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from kpe_lib import KTS, sample
from kpe_lib.distributed import concat_results, dist_info, map_sharded, sample_sharded, shard_range
from kpe_lib.metrics import kid_with_ci, paired_kid_change
from kpe_lib.metrics.device_stats import (feature_statistics_device, paired_fid_change_device, resample_indices,
                                          stats_device)
from kpe_lib.metrics.fid import FrechetReference, feature_statistics
from kpe_lib.models import TimeMLP, build_model
from kpe_lib.training import TrainConfig, cache_key, train_flow_matching
from kpe_lib.training.loop import model_config_of


def tiny_mlp(seed: int = 0) -> TimeMLP:
    torch.manual_seed(seed)
    return TimeMLP(dim=2, hidden=32, depth=3)


def points(n: int = 40) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(7))


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [v.detach().clone() for v in model.state_dict().values()]


# ------------------------------------------------------------------ cache keys and records stay as they were
def test_new_options_at_their_defaults_leave_keys_and_records_unchanged():
    torch.manual_seed(0)
    data = torch.randn(40, 2)
    torch.manual_seed(3)
    model = build_model({"kind": "mlp"})
    cfg = TrainConfig(steps=7, batch_size=16, lr=1e-3, seed=3)
    # the key this configuration had before the options existed (computed with the earlier code)
    assert cache_key(model_config_of(model), cfg, data) == "be9bff7b1a124e35"
    assert sorted(cfg.to_dict()) == ["batch_size", "checkpoint_every", "ema_decay", "grad_clip", "lr", "p_uncond",
                                     "seed", "steps", "warmup_steps"]
    assert cache_key(model_config_of(model), TrainConfig(steps=7, batch_size=16, lr=1e-3, seed=3, sync_every=50),
                     data) == "be9bff7b1a124e35"  # read-back interval: how, not what
    for option in ({"bf16": True}, {"compile": True}, {"device_noise": True}):
        other = TrainConfig(steps=7, batch_size=16, lr=1e-3, seed=3, **option)
        assert cache_key(model_config_of(model), other, data) != "be9bff7b1a124e35", option
        assert other.identity()[next(iter(option))] is True


def test_options_are_checked_by_name():
    with pytest.raises(ValueError, match="TrainConfig.bf16"):
        TrainConfig(bf16="yes")
    with pytest.raises(ValueError, match="TrainConfig.sync_every"):
        TrainConfig(sync_every=0)


# ------------------------------------------------------------------------------------------- training paths
def test_deferred_loss_readback_gives_bit_identical_weights_and_losses():
    base = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=9, batch_size=8, lr=1e-3),
                               progress=False)
    seen: list[tuple[int, float]] = []
    lazy = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=9, batch_size=8, lr=1e-3, sync_every=4),
                               progress=False, callback=lambda s, v: seen.append((s, v)))
    assert lazy.losses == base.losses and [s for s, _ in seen] == list(range(1, 10))
    assert all(torch.equal(a, b) for a, b in zip(weights(base.model), weights(lazy.model)))


def test_deferred_readback_names_the_step_of_a_non_finite_loss():
    huge = torch.full((8, 2), 1e20)  # (v - (x1 - x0))^2 overflows float32
    with pytest.raises(FloatingPointError, match="at step 1"):
        train_flow_matching(tiny_mlp(), huge, config=TrainConfig(steps=3, batch_size=4, sync_every=3), progress=False)


def test_bf16_autocast_trains_close_to_float32():
    cfg = dict(steps=5, batch_size=16, lr=1e-3, seed=1)
    ref = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(**cfg), progress=False)
    fast = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(**cfg, bf16=True), progress=False)
    assert all(p.dtype == torch.float32 for p in fast.model.parameters())
    assert np.allclose(fast.losses, ref.losses, rtol=3e-2)
    assert fast.losses != ref.losses  # it really ran in reduced precision


def test_device_noise_resumes_bit_identically(tmp_path):
    cfg = dict(batch_size=8, lr=1e-3, device_noise=True, checkpoint_every=2)
    straight = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=6, **cfg), progress=False)
    ck = tmp_path / "run.pt"
    train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=3, **cfg), checkpoint=ck, progress=False)
    resumed = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=6, **cfg), checkpoint=ck,
                                  progress=False)
    assert resumed.new_steps == 3 and resumed.losses == straight.losses
    assert all(torch.equal(a, b) for a, b in zip(weights(straight.model), weights(resumed.model)))
    plain = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=6, batch_size=8, lr=1e-3),
                                progress=False)
    assert plain.losses != straight.losses  # another random stream


# ------------------------------------------------------------------------------------- statistics on a device
def _features(seed: int, n: int, d: int, shift: float = 0.0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + shift


@pytest.mark.parametrize("m", [30, 80])  # m <= D and m > D: both Gram forms of the trace term
def test_device_fid_bootstrap_equals_the_numpy_one(m):
    ref = FrechetReference.from_stats(feature_statistics(_features(0, 200, 40)))
    a = _features(1, m, 40)
    b = a + 0.2 * _features(2, m, 40)
    slow = ref.paired_change(a, b, n_boot=25, seed=3)
    fast = paired_fid_change_device(ref, a, b, n_boot=25, seed=3, device="cpu", rep_batch=7)
    # the centred set has a zero eigenvalue whose rounding (~1e-16) enters as its square root (~1e-8)
    assert fast.change == pytest.approx(slow.change, rel=1e-6, abs=1e-7)
    assert np.allclose(fast.ci, slow.ci, rtol=1e-6, atol=1e-7) and fast.pvalue == slow.pvalue
    assert fast.stderr == pytest.approx(slow.stderr, rel=1e-5)


def test_resample_indices_are_the_numpy_paths():
    rng = np.random.default_rng(5)
    expected = [rng.integers(0, 9, size=9) for _ in range(4)]
    assert np.array_equal(resample_indices(9, 4, seed=5), np.stack(expected))


def test_device_kid_and_covariance_equal_the_cpu_ones():
    x, y, z = _features(0, 60, 6), _features(1, 50, 6, 0.3), _features(2, 50, 6, 0.5)
    a, b = kid_with_ci(x, y, n_boot=30), kid_with_ci(x, y, n_boot=30, device="cpu")
    assert a == b
    assert paired_kid_change(x, y, z, n_boot=30) == paired_kid_change(x, y, z, n_boot=30, device="cpu")
    s, t = feature_statistics(y), feature_statistics_device(y, "cpu")
    assert np.allclose(s.mu, t.mu) and np.allclose(s.sigma, t.sigma, atol=1e-12) and s.n == t.n
    assert stats_device("cpu") is None and stats_device(None) is None and stats_device("cuda:1") == "cuda:1"


# --------------------------------------------------------------------------------------- batched sampling
def test_batched_sampling_equals_one_batch_and_one_process_is_a_no_op():
    model = tiny_mlp().eval()
    x0 = torch.randn(11, 2, generator=torch.Generator().manual_seed(4))
    kw = dict(n_steps=12, gain=KTS(alpha0=0.05, beta0=0.02))
    whole = sample(model, x0, **kw)
    batched = sample_sharded(model, x0, batch_size=4, **kw)
    for name in ("x", "kpe", "kpe_raw", "kpe_early", "kpe_late", "energy", "energy_raw"):
        assert torch.allclose(getattr(batched, name), getattr(whole, name), rtol=1e-5, atol=1e-6), name
    assert batched.nfe == whole.nfe and batched.energy.shape == whole.energy.shape
    same = sample_sharded(model, x0, **kw)
    assert torch.equal(same.x, whole.x) and torch.equal(same.kpe, whole.kpe)
    with pytest.raises(ValueError, match="diagnostics"):
        sample_sharded(model, x0, batch_size=4, diagnostics=True, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        sample_sharded(model, x0, batch_size=0, **kw)
    doubled = map_sharded(lambda b: 2 * b, x0, batch_size=3)
    assert torch.equal(doubled, 2 * x0)
    assert dist_info().world_size == 1
    assert [shard_range(7, r, 3) for r in range(3)] == [(0, 2), (2, 4), (4, 7)]


def test_batched_sampling_cuts_per_sample_model_keywords_with_their_rows():
    """Labels y (n,) travel with their rows: each batch sees its own samples' classes (oracle: a velocity
    that is the label itself, so x_1 = x_0 + y exactly and KPE = 1/2 y^2 per coordinate)."""
    def by_label(x, t, y):
        return y.to(x.dtype)[:, None].expand_as(x)

    x0 = torch.zeros(7, 3)
    y = torch.arange(7)
    res = sample_sharded(by_label, x0, batch_size=3, n_steps=4, y=y)
    assert torch.allclose(res.x, y.float()[:, None].expand(7, 3))
    assert torch.allclose(res.kpe, 1.5 * y.double() ** 2)
    grid = sample_sharded(by_label, x0, batch_size=3, grid=torch.linspace(0, 1, 7), y=y)  # not cut: sample's own
    assert torch.allclose(grid.x, res.x)


def test_concat_results_joins_batches_of_one_run_in_order():
    model = tiny_mlp().eval()
    x0 = torch.randn(7, 2, generator=torch.Generator().manual_seed(5))
    kw = dict(n_steps=6, gain=KTS(alpha0=0.05, beta0=0.02), tau_split=0.5)
    parts = [sample(model, x0[s:s + 3], **kw) for s in (0, 3, 6)]
    joined = concat_results(parts)
    assert torch.equal(joined.x, torch.cat([p.x for p in parts])) and joined.x.shape == (7, 2)
    assert torch.equal(joined.energy_raw, torch.cat([p.energy_raw for p in parts], dim=1))
    assert joined.energy.shape == (6, 7) and joined.tau_split == 0.5 and joined.nfe == parts[0].nfe
    with pytest.raises(ValueError, match="at least one"):
        concat_results([])
    with pytest.raises(ValueError, match="time grids differ"):
        concat_results([parts[0], sample(model, x0[:2], n_steps=5)])


# ------------------------------------------------------------------------------ the fused closed form
@pytest.mark.parametrize("chunk", [64, 7])  # one chunk, and streaming over several
@pytest.mark.parametrize("per_row_t", [False, True])
def test_fused_closed_form_equals_the_default_one(chunk, per_row_t):
    from kpe_lib import EmpiricalVelocity

    g = torch.Generator().manual_seed(0)
    train, x = torch.randn(50, 12, generator=g), torch.randn(9, 12, generator=g)
    t = torch.rand(9, generator=g) * 0.9 if per_row_t else 0.7
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        slow = EmpiricalVelocity(train, dtype=dtype, chunk_size=chunk)
        fast = EmpiricalVelocity(train, dtype=dtype, chunk_size=chunk, fused=True)
        assert torch.allclose(fast(x.to(dtype), t), slow(x.to(dtype), t), rtol=tol, atol=tol)
    with pytest.raises(ValueError, match="fused"):
        EmpiricalVelocity(train, fused=1)
