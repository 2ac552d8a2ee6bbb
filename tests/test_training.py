"""Tests of kpe_lib.training: the CFM loss against its closed-form optimum, bit-exact resume, checkpoint
validation, and the configuration-keyed model cache."""
from __future__ import annotations

import os

import pytest
import torch

from kpe_lib.models import TimeMLP, UNet
from kpe_lib.training import CheckpointError, TrainConfig, cache_key, cached_model, cfm_loss, default_cache_dir, \
    train_flow_matching


# ---------------------------------------------------------------- the loss and its optimum (Mathematics §1, §4)
def efm_velocity(atoms: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Brute-force Mathematics §4 closed form: sum_i w_i (a_i - x) / (1 - t), w = softmax(-|x - t a_i|^2 / 2(1-t)^2)."""
    tt = t[:, None]
    d2 = ((x[:, None, :] - tt[:, :, None] * atoms[None]) ** 2).sum(-1)
    w = torch.softmax(-d2 / (2 * (1 - tt) ** 2), dim=1)
    return (w[:, :, None] * (atoms[None] - x[:, None, :])).sum(1) / (1 - tt)


def test_single_point_optimum_has_zero_loss():
    a = torch.tensor([[1.5, -2.0, 0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    b = 1000
    x1, x0, t = a.expand(b, 3), torch.randn(b, 3, generator=g, dtype=torch.float64), torch.rand(b, generator=g, dtype=torch.float64) * 0.99
    optimum = lambda x, t: (a - x) / (1 - t[:, None])  # noqa: E731
    assert cfm_loss(optimum, x1, x0, t).item() < 1e-20
    for delta in (0.01, 0.1, 1.0):
        assert cfm_loss(lambda x, t: optimum(x, t) + delta, x1, x0, t).item() == pytest.approx(delta**2, rel=1e-9)


def test_closed_form_minimises_the_loss_with_the_pythagorean_gap():
    """L(v* + d) - L(v*) = E|d|^2 / dim + a zero-mean cross term: check it to 5 Monte-Carlo standard errors."""
    g = torch.Generator().manual_seed(1)
    atoms = torch.tensor([[2.0, 0.0], [-1.0, 1.5], [0.0, -2.0]], dtype=torch.float64)
    b = 40_000
    x1 = atoms[torch.randint(0, 3, (b,), generator=g)]
    x0, t = torch.randn(b, 2, generator=g, dtype=torch.float64), torch.rand(b, generator=g, dtype=torch.float64) * 0.98
    vstar = lambda x, t: efm_velocity(atoms, x, t)  # noqa: E731
    base = cfm_loss(vstar, x1, x0, t, reduction="none")
    for shift in ([0.3, 0.0], [-0.2, 0.4]):
        d = torch.tensor(shift, dtype=torch.float64)
        gap = cfm_loss(lambda x, t: vstar(x, t) + d, x1, x0, t, reduction="none") - base
        expected = (d**2).sum().item() / 2
        se = gap.std().item() / b**0.5
        assert abs(gap.mean().item() - expected) < 5 * se + 1e-12
        assert gap.mean().item() > 0


def test_cfm_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        cfm_loss(lambda x, t: x, torch.zeros(4, 2), torch.zeros(4, 3), torch.zeros(4))
    with pytest.raises(ValueError, match="reduction"):
        cfm_loss(lambda x, t: x, torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4), reduction="sum")


def test_tiny_mlp_drives_the_loss_down_but_not_below_the_optimum():
    atoms = torch.tensor([[2.0, 0.0], [-2.0, 0.0]])
    data = atoms.repeat(64, 1)
    torch.manual_seed(0)
    res = train_flow_matching(TimeMLP(hidden=64, depth=3), data, config=TrainConfig(steps=300, batch_size=128, lr=1e-2,
                                                                                   ema_decay=None), progress=False)
    g = torch.Generator().manual_seed(2)
    b = 20_000
    x1, x0, t = data[torch.randint(0, 128, (b,), generator=g)], torch.randn(b, 2, generator=g), torch.rand(b, generator=g) * 0.99
    with torch.no_grad():
        best = cfm_loss(lambda x, t: efm_velocity(atoms.double(), x.double(), t.double()).float(), x1, x0, t).item()
        learned = cfm_loss(res.model, x1, x0, t).item()
    first = sum(res.losses[:20]) / 20
    assert learned < 0.7 * first, (first, learned)
    assert learned > best - 0.02, "a loss below the Bayes optimum means the target leaked"
    assert learned < best + 0.3


# ---------------------------------------------------------------- determinism and resume
def tiny_unet() -> UNet:
    torch.manual_seed(0)
    return UNet(in_channels=1, width=8, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, groups=4,
                dropout=0.1, num_classes=3)


def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


# batch 4 over 6 items crosses epoch boundaries; EMA, clipping, warm-up, label dropout and dropout all on
CFG = TrainConfig(steps=10, batch_size=4, lr=1e-3, ema_decay=0.9, grad_clip=0.5, seed=3, p_uncond=0.5,
                  warmup_steps=3, checkpoint_every=5)


def assert_same_state(a, b):
    assert a.steps_done == b.steps_done and a.losses == b.losses
    for m, n in ((a.model, b.model), (a.ema, b.ema)):
        for (name, p), q in zip(m.state_dict().items(), n.state_dict().values()):
            assert torch.equal(p, q), name


def test_resume_after_interruption_is_bit_identical(tmp_path):
    data, labels = tiny_data()
    straight = train_flow_matching(tiny_unet(), data, labels, CFG, progress=False)

    class Interrupt(Exception):
        pass

    def crash_at_7(step, loss):
        if step == 7:
            raise Interrupt

    path = tmp_path / "run.pt"
    torch.manual_seed(123)  # the caller's RNG state must not matter (nor be changed by training)
    with pytest.raises(Interrupt):
        train_flow_matching(tiny_unet(), data, labels, CFG, checkpoint=path, progress=False, callback=crash_at_7)
    resumed = train_flow_matching(tiny_unet(), data, labels, CFG, checkpoint=path, progress=False)
    assert resumed.new_steps == 5 and resumed.checkpoint == path
    assert_same_state(straight, resumed)
    assert not straight.model.training and not straight.ema.training

    # two sessions: steps=5 then steps=10 on one checkpoint
    path2 = tmp_path / "two.pt"
    first = train_flow_matching(tiny_unet(), data, labels, TrainConfig(**{**CFG.to_dict(), "steps": 5,
                                                                        "checkpoint_every": None}),
                                checkpoint=path2, progress=False)
    assert first.steps_done == 5 and len(first.losses) == 5
    second = train_flow_matching(tiny_unet(), data, labels, CFG, checkpoint=path2, progress=False)
    assert_same_state(straight, second)

    # training leaves the caller's global RNG alone
    model = tiny_unet()
    state = torch.get_rng_state()
    train_flow_matching(model, data, labels, CFG, progress=False)
    assert torch.equal(torch.get_rng_state(), state)


def test_seed_changes_the_run():
    data, labels = tiny_data()
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 3, "checkpoint_every": None})
    a = train_flow_matching(tiny_unet(), data, labels, cfg, progress=False)
    b = train_flow_matching(tiny_unet(), data, labels, cfg, progress=False)
    c = train_flow_matching(tiny_unet(), data, labels, TrainConfig(**{**cfg.to_dict(), "seed": 4}), progress=False)
    assert a.losses == b.losses and a.losses != c.losses


# ---------------------------------------------------------------- checkpoint validation
def test_config_mismatch_names_the_differing_keys(tmp_path):
    data, labels = tiny_data()
    path = tmp_path / "run.pt"
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 2})
    train_flow_matching(tiny_unet(), data, labels, cfg, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=r"train\.lr") as err:
        train_flow_matching(tiny_unet(), data, labels, TrainConfig(**{**cfg.to_dict(), "lr": 2e-3}), checkpoint=path,
                            progress=False)
    assert str(path) in str(err.value) and "train.seed" not in str(err.value)
    with pytest.raises(ValueError, match=r"data\.sha1"):
        train_flow_matching(tiny_unet(), data + 1, labels, cfg, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=r"data\.labels_sha1"):
        train_flow_matching(tiny_unet(), data, labels.flip(0), cfg, checkpoint=path, progress=False)
    other = UNet(in_channels=1, width=16, channel_mult=(1, 2), attn_levels=(1,), num_heads=2, groups=4, num_classes=3)
    with pytest.raises(ValueError, match=r"model\.width"):
        train_flow_matching(other, data, labels, cfg, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="past config.steps=1"):
        train_flow_matching(tiny_unet(), data, labels, TrainConfig(**{**cfg.to_dict(), "steps": 1}), checkpoint=path,
                            progress=False)


@pytest.mark.parametrize("content", [b"not a checkpoint at all", "truncated"])
def test_corrupt_checkpoint_names_the_file(tmp_path, content):
    data, labels = tiny_data()
    path = tmp_path / "run.pt"
    cfg = TrainConfig(**{**CFG.to_dict(), "steps": 1})
    if content == "truncated":
        train_flow_matching(tiny_unet(), data, labels, cfg, checkpoint=path, progress=False)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt") as err:
        train_flow_matching(tiny_unet(), data, labels, cfg, checkpoint=path, progress=False)
    assert str(path) in str(err.value)
    torch.save({"something": 1}, path)
    with pytest.raises(CheckpointError, match="not a"):
        train_flow_matching(tiny_unet(), data, labels, cfg, checkpoint=path, progress=False)


def test_checkpoint_writes_leave_no_temporary_files(tmp_path):
    data, labels = tiny_data()
    train_flow_matching(tiny_unet(), data, labels, TrainConfig(**{**CFG.to_dict(), "steps": 4, "checkpoint_every": 1}),
                        checkpoint=tmp_path / "run.pt", progress=False)
    assert sorted(os.listdir(tmp_path)) == ["run.pt"]


def test_divergence_is_reported_before_the_update():
    net = TimeMLP(hidden=8, depth=2)
    with torch.no_grad():
        net.net[-1].bias[0] = float("nan")
    before = [p.clone() for p in net.parameters()]
    with pytest.raises(FloatingPointError, match="step 1"):
        train_flow_matching(net, torch.randn(8, 2), config=TrainConfig(steps=3, batch_size=4), progress=False)
    for p, q in zip(before, net.parameters()):
        torch.testing.assert_close(q, p, rtol=0, atol=0, equal_nan=True)


def test_bad_inputs():
    with pytest.raises(ValueError, match="TrainConfig.ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="TrainConfig.batch_size"):
        TrainConfig(batch_size=0)
    data, labels = tiny_data()
    with pytest.raises(ValueError, match="not class-conditional"):
        train_flow_matching(TimeMLP(dim=64), data.flatten(1), labels, TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\]"):
        train_flow_matching(tiny_unet(), data, labels + 1, TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="floating-point"):
        train_flow_matching(TimeMLP(), torch.zeros(5, 2, dtype=torch.long), config=TrainConfig(steps=1), progress=False)


# ---------------------------------------------------------------- the model cache
def test_cache_hits_extends_and_matches_fresh_training(tmp_path, monkeypatch):
    import kpe_lib.training.loop as loop

    calls = []  # count loss evaluations independently of what the result reports

    def counting_loss(*args, **kwargs):
        calls.append(1)
        return cfm_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "cfm_loss", counting_loss)
    g = torch.Generator().manual_seed(0)
    data = torch.randn(32, 2, generator=g)
    mcfg = {"kind": "mlp", "hidden": 16, "depth": 2}
    cfg = lambda steps: TrainConfig(steps=steps, batch_size=8, lr=1e-2, ema_decay=0.5)  # noqa: E731
    first = cached_model(mcfg, cfg(6), data, cache_dir=tmp_path, name="toy", progress=False)
    assert first.new_steps == 6 and first.checkpoint.name == "step000000006.pt"
    assert len(calls) == 6
    mtime = first.checkpoint.stat().st_mtime_ns
    hit = cached_model(mcfg, cfg(6), data, cache_dir=tmp_path, name="toy", progress=False)
    assert hit.new_steps == 0 and len(calls) == 6 and hit.losses == first.losses
    assert first.checkpoint.stat().st_mtime_ns == mtime, "a cache hit must not rewrite the file"
    assert_same_state(first, hit)
    # continuing to 10 steps trains only 4 and equals training 10 from scratch elsewhere
    longer = cached_model(mcfg, cfg(10), data, cache_dir=tmp_path, name="toy", progress=False)
    assert longer.new_steps == 4 and len(calls) == 10 and longer.losses[:6] == first.losses
    fresh = cached_model(mcfg, cfg(10), data, cache_dir=tmp_path / "other", name="toy", progress=False)
    assert fresh.new_steps == 10
    assert_same_state(longer, fresh)
    # asking for fewer steps than the latest snapshot trains from the start (nothing earlier is on disk)
    shorter = cached_model(mcfg, cfg(3), data, cache_dir=tmp_path, name="toy", progress=False)
    assert shorter.new_steps == 3 and shorter.losses == first.losses[:3]
    run_dir = first.checkpoint.parent
    assert sorted(p.name for p in run_dir.iterdir()) == ["step000000003.pt", "step000000006.pt", "step000000010.pt"]
    # defaults are part of the key: spelling them out hits the same entry; other data does not
    spelled = {**mcfg, "dim": 2, "time_embed": "sinusoidal", "embed_dim": 32}
    assert cached_model(spelled, cfg(6), data, cache_dir=tmp_path, name="toy", progress=False).new_steps == 0
    assert cache_key(TimeMLP(hidden=16, depth=2).config, cfg(6), data) != cache_key(TimeMLP(hidden=16, depth=2).config,
                                                                                 cfg(6), data * 2)


def test_cache_resumes_a_partial_run(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = torch.randn(32, 2, generator=g)
    mcfg = {"kind": "mlp", "hidden": 16, "depth": 2}
    cfg = TrainConfig(steps=8, batch_size=8, lr=1e-2, ema_decay=None, checkpoint_every=3)
    key = cache_key(TimeMLP(hidden=16, depth=2).config, cfg, data)
    partial = tmp_path / f"toy-{key}" / "partial-step000000008.pt"

    class Interrupt(Exception):
        pass

    def crash(step, loss):
        if step == 4:
            raise Interrupt

    torch.manual_seed(cfg.seed)
    with pytest.raises(Interrupt):
        train_flow_matching(TimeMLP(hidden=16, depth=2), data, config=cfg, checkpoint=partial, progress=False,
                            callback=crash)
    res = cached_model(mcfg, cfg, data, cache_dir=tmp_path, name="toy", progress=False)
    assert res.new_steps == 5 and not partial.exists()
    fresh = cached_model(mcfg, cfg, data, cache_dir=tmp_path / "fresh", name="toy", progress=False)
    assert res.losses == fresh.losses
    for p, q in zip(res.model.parameters(), fresh.model.parameters()):
        assert torch.equal(p, q)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("KPE_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("KPE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "kpe_lib" / "models"
