"""Tests of kpe_lib.models: shapes, hand-counted parameters, attention and guidance against by-hand formulas."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from kpe_lib.models import Classifier, GuidedVelocity, TimeMLP, UNet, build_model
from kpe_lib.models.common import sinusoidal_embedding
from kpe_lib.models.unet import SelfAttention
from kpe_lib.training import ClassifierTrainConfig, train_classifier


def randomize(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> torch.nn.Module:
    """Replace the (partly zero) initial weights with random ones, so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module.eval()


# ---------------------------------------------------------------- parameter count by hand
def conv(ci: int, co: int, k: int) -> int:
    return ci * co * k * k + co


def unet_params_by_hand(c: int, w: int, mult: tuple, blocks: int, attn: tuple, classes: int | None) -> int:
    """An independent count of Mathematics §6's UNet from its description, layer by layer."""
    emb = 4 * w
    gn = lambda ch: 2 * ch  # noqa: E731
    res = lambda ci, co: gn(ci) + conv(ci, co, 3) + emb * co + co + gn(co) + conv(co, co, 3) + (conv(ci, co, 1) if ci != co else 0)  # noqa: E731
    att = lambda ch: gn(ch) + conv(ch, 3 * ch, 1) + conv(ch, ch, 1)  # noqa: E731
    total = (w * emb + emb) + (emb * emb + emb) + conv(c, w, 3)
    if classes is not None:
        total += (classes + 1) * emb
    skips, ch = [w], w
    for lvl, m in enumerate(mult):
        for _ in range(blocks):
            total += res(ch, m * w) + (att(m * w) if lvl in attn else 0)
            ch = m * w
            skips.append(ch)
        if lvl < len(mult) - 1:
            total += conv(ch, ch, 3)
            skips.append(ch)
    total += 2 * res(ch, ch) + att(ch)
    for lvl, m in reversed(list(enumerate(mult))):
        for _ in range(blocks + 1):
            total += res(ch + skips.pop(), m * w) + (att(m * w) if lvl in attn else 0)
            ch = m * w
        if lvl > 0:
            total += conv(ch, ch, 3)
    return total + gn(ch) + conv(ch, c, 3)


@pytest.mark.parametrize("width,hint_millions", [(32, 4.0), (16, 1.0)])
def test_unet_param_count_matches_hand_count_and_hints(width, hint_millions):
    net = UNet(in_channels=1, width=width)
    assert net.num_params() == unet_params_by_hand(1, width, (1, 2, 4), 2, (1, 2), None)
    # HINTS quotes 4.0M / 1.0M rounded to one decimal: ours is 4.02M / 1.01M
    assert abs(net.num_params() / 1e6 - hint_millions) < 0.05 * hint_millions
    assert f"{net.num_params() / 1e6:.2f}M params" in net.describe() and repr(net) == net.describe()


def test_unet_param_count_with_classes_and_three_channels():
    net = UNet(in_channels=3, width=16, num_classes=10, attn_levels=(2,))
    assert net.num_params() == unet_params_by_hand(3, 16, (1, 2, 4), 2, (2,), 10)


# ---------------------------------------------------------------- UNet behaviour
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("res", [8, 16, 32])
def test_unet_shapes(channels, res):
    net = UNet(in_channels=channels, width=8, groups=4, num_heads=2)
    x = torch.randn(3, channels, res, res)
    assert net(x, 0.3).shape == x.shape
    assert net(x, torch.tensor([0.0, 0.5, 0.99])).shape == x.shape
    assert UNet(in_channels=channels, out_channels=2, width=8, groups=4)(x, 0.3).shape == (3, 2, res, res)


def test_unet_rejects_bad_input():
    net = UNet(width=8, groups=4)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(torch.randn(1, 1, 10, 10), 0.5)
    with pytest.raises(ValueError, match="shape"):
        net(torch.randn(2, 1, 8, 8), torch.rand(3))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(2, 1, 8, 8), 0.5, y=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="groups"):
        UNet(width=12, groups=8)
    with pytest.raises(ValueError, match="attn_levels"):
        UNet(attn_levels=(3,))


def test_unet_samples_do_not_mix_across_the_batch():
    net = randomize(UNet(in_channels=3, width=8, groups=4, num_heads=2, num_classes=4))
    x, t, y = torch.randn(4, 3, 16, 16), torch.rand(4), torch.tensor([0, 1, 2, 4])
    full = net(x, t, y=y)
    for i in range(4):
        torch.testing.assert_close(net(x[i:i + 1], t[i:i + 1], y=y[i:i + 1]), full[i:i + 1], rtol=1e-4, atol=1e-5)


def test_unet_class_conditioning():
    net = randomize(UNet(width=8, groups=4, num_heads=2, num_classes=3))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor(0.4)
    null = torch.full((2,), 3)
    assert torch.equal(net(x, t), net(x, t, y=null)), "y=None must mean the null class"
    outs = [net(x, t, y=torch.full((2,), k)) for k in range(4)]
    for a in range(4):
        for b in range(a + 1, 4):
            assert not torch.allclose(outs[a], outs[b]), f"classes {a} and {b} give the same velocity"
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        net(x, t, y=torch.tensor([0, 4]))


def test_unet_time_embedding_uses_scaled_time():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = sinusoidal_embedding(t, 8)
    torch.testing.assert_close(emb[:, 0], torch.cos(1000 * t))  # highest frequency is 1 per unit of 1000 t
    torch.testing.assert_close(emb[:, 4], torch.sin(1000 * t))
    net = randomize(UNet(width=8, groups=4, num_heads=2))
    x = torch.randn(1, 1, 8, 8)
    assert not torch.allclose(net(x, 0.5), net(x, 0.501)), "t must reach the network"


def test_self_attention_matches_naive_formula():
    attn = randomize(SelfAttention(8, num_heads=2, groups=4), seed=3)
    x = torch.randn(2, 8, 4, 4)
    h = attn.norm(x)
    qkv = torch.einsum("oc,bcl->bol", attn.qkv.weight[:, :, 0, 0], h.flatten(2)) + attn.qkv.bias[None, :, None]
    q, k, v = qkv.split(8, dim=1)
    out = torch.zeros(2, 8, 16)
    for head in range(2):
        sl = slice(4 * head, 4 * head + 4)
        scores = torch.einsum("bdi,bdj->bij", q[:, sl], k[:, sl]) / math.sqrt(4)
        out[:, sl] = torch.einsum("bij,bdj->bdi", scores.softmax(dim=-1), v[:, sl])
    proj = torch.einsum("oc,bcl->bol", attn.proj.weight[:, :, 0, 0], out) + attn.proj.bias[None, :, None]
    torch.testing.assert_close(attn(x), x + proj.reshape(2, 8, 4, 4), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- MLP
def test_time_mlp():
    net = TimeMLP()
    assert 100_000 <= net.num_params() <= 150_000
    x = torch.randn(7, 2)
    assert net(x, 0.2).shape == (7, 2)
    torch.testing.assert_close(net(x, torch.full((7,), 0.2)), net(x, 0.2))
    lin = TimeMLP(dim=3, hidden=16, depth=2, time_embed="linear")
    assert lin.num_params() == (3 + 1) * 16 + 16 + 16 * 3 + 3
    with pytest.raises(ValueError, match="time_embed"):
        TimeMLP(time_embed="fourier")
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        net(torch.randn(7, 3), 0.2)


# ---------------------------------------------------------------- guidance
def test_guidance_identities():
    net = randomize(UNet(width=8, groups=4, num_heads=2, num_classes=5))
    x, t, y = torch.randn(3, 1, 8, 8), torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0, 2, 4])
    v_cond, v_uncond = net(x, t, y=y), net(x, t)
    assert torch.equal(GuidedVelocity(net, 1.0)(x, t, y=y), v_cond)
    assert torch.equal(GuidedVelocity(net, 0.0)(x, t, y=y), v_uncond)
    torch.testing.assert_close(GuidedVelocity(net, 2.5)(x, t, y=y), v_uncond + 2.5 * (v_cond - v_uncond),
                               rtol=1e-4, atol=1e-5)
    # a scalar t: v_1.5 = -0.5 v_uncond + 1.5 v_cond
    torch.testing.assert_close(GuidedVelocity(net, 1.5)(x, 0.3, y=y), -0.5 * net(x, 0.3) + 1.5 * net(x, 0.3, y=y),
                               rtol=1e-4, atol=1e-5)
    assert torch.equal(GuidedVelocity(net, 3.0)(x, t), v_uncond), "no labels: nothing to guide"
    assert GuidedVelocity(net, 1.5).evals_per_call == 2 and GuidedVelocity(net, 1.0).evals_per_call == 1
    with pytest.raises(ValueError, match="scale"):
        GuidedVelocity(net, -1.0)


# ---------------------------------------------------------------- classifier
def test_classifier_shapes():
    clf = Classifier(in_channels=3, num_classes=10, width=8)
    x = torch.randn(2, 3, 32, 32)
    assert clf(x).shape == (2, 10) and clf.features(x).shape == (2, 32)
    torch.testing.assert_close(clf.head(clf.features(x)), clf(x))
    with pytest.raises(ValueError, match="num_classes"):
        Classifier(num_classes=1)


def toy_bars(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 0: bright top half; class 1: bright bottom half; plus noise (flip-invariant left/right)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    x[y == 0, :, :4] += 1.0
    x[y == 1, :, 4:] += 1.0
    return x, y


def test_classifier_learns_separable_toy_problem_and_caches(tmp_path):
    x, y = toy_bars(256, seed=0)
    xv, yv = toy_bars(128, seed=1)
    cfg = ClassifierTrainConfig(width=8, steps=60, batch_size=32, lr=3e-3)
    res = train_classifier(x, y, cfg, val_images=xv, val_labels=yv, cache_dir=tmp_path, progress=False)
    assert not res.cached and res.val_accuracy >= 0.95 and res.train_accuracy >= 0.95
    assert sum(res.losses[-10:]) < sum(res.losses[:10])
    again = train_classifier(x, y, cfg, val_images=xv, val_labels=yv, cache_dir=tmp_path, progress=False)
    assert again.cached and again.path == res.path and again.val_accuracy == res.val_accuracy
    for a, b in zip(res.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    shifted = train_classifier(x, y, dataclasses.replace(cfg, shift=2), cache_dir=tmp_path, progress=False)
    assert not shifted.cached and shifted.path != res.path  # a shift is part of the key; shift 0 is not
    cosine = train_classifier(x, y, dataclasses.replace(cfg, cosine=True), cache_dir=tmp_path, progress=False)
    assert not cosine.cached and cosine.path not in (res.path, shifted.path)


def test_cosine_schedule_is_what_the_optimiser_sees(monkeypatch):
    """The half cosine: lr at step 0, lr/2 half way, about 0 at the end; the optimiser steps with exactly it."""
    from kpe_lib.training import classifier as clf_mod

    cfg = ClassifierTrainConfig(width=8, steps=8, batch_size=16, lr=4e-3, cosine=True)
    assert clf_mod.lr_at(cfg, 0) == pytest.approx(4e-3) and clf_mod.lr_at(cfg, 4) == pytest.approx(2e-3)
    assert clf_mod.lr_at(cfg, 7) < 2e-4 and clf_mod.lr_at(dataclasses.replace(cfg, cosine=False), 7) == 4e-3
    seen = []
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (seen.append(self.param_groups[0]["lr"]),
                                                                           step(self, *a, **k))[1])
    x, y = toy_bars(32, seed=0)
    train_classifier(x, y, cfg, cache=False, progress=False)
    assert seen == pytest.approx([clf_mod.lr_at(cfg, s) for s in range(8)])
    with pytest.raises(ValueError, match="cosine"):
        ClassifierTrainConfig(cosine=1)


def test_random_shift_moves_each_image_within_its_range():
    from kpe_lib.training.classifier import random_shift

    x = torch.zeros(64, 1, 9, 9)
    x[:, :, 4, 4] = 1.0                                   # one bright pixel in the middle of each image
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    where = out.flatten(1).argmax(1)
    rows, cols = where // 9, where % 9
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), x.sum((1, 2, 3)))
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # the offsets differ between images
    with pytest.raises(ValueError, match="shift"):
        ClassifierTrainConfig(shift=-1)


# ---------------------------------------------------------------- build_model
@pytest.mark.parametrize("model", [TimeMLP(hidden=32), UNet(width=8, groups=4, num_classes=2),
                                   Classifier(width=8)])
def test_build_model_round_trip(model):
    config = json.loads(json.dumps(model.config))  # as stored in a checkpoint: tuples became lists
    rebuilt = build_model(config)
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    rebuilt.load_state_dict(model.state_dict())


def test_build_model_rejects_bad_configs():
    with pytest.raises(ValueError, match="kind"):
        build_model({"kind": "transformer"})
    with pytest.raises(ValueError, match="wdth"):
        build_model({"kind": "unet", "wdth": 8})
    with pytest.raises(ValueError, match="kind"):
        build_model({"width": 8})
