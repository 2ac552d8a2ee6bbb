"""SiT: the class-conditional latent flow transformer of the paper's ImageNet-256 experiments (SPEC 6).

SiT (Ma et al., "SiT: Exploring Flow and Diffusion-based Generative Models with Scalable Interpolant
Transformers", 2024) is the DiT backbone (Peebles & Xie 2023) trained as a velocity model on the linear
interpolant in the 4 x 32 x 32 latent space of the Stable Diffusion VAE. This module is written for this
project from the published architecture description; its parameter names follow the official release so
``SiT-XL-2-256x256.pt`` loads strictly:

- ``x_embedder.proj``: patchify convolution (kernel = stride = patch size) -> tokens;
- ``pos_embed`` (1, T, D): fixed 2D sine-cosine position embedding (stored in the checkpoint);
- ``t_embedder.mlp.{0,2}``: MLP on a 256-wide sinusoidal embedding of t;
- ``y_embedder.embedding_table`` (num_classes + 1, D): class embedding, the last row is the null class used
  for classifier-free guidance;
- ``blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2, adaLN_modulation.1}``: adaLN-Zero blocks;
- ``final_layer.{norm_final, linear, adaLN_modulation.1}``: modulated projection back to patches.

Time convention (checked against the official code, ``transport/path.py`` and ``transport/transport.py``):
the SiT *paper* writes ``x_t = alpha_t x_* + sigma_t eps`` with t = 0 data, but the released code and
weights use the linear path ``x_t = t * x1 + (1 - t) * x0`` with ``x0 = eps ~ N(0, I)`` (noise) and ``x1``
the data latent, regress the velocity ``x1 - x0``, feed the raw ``t`` in [0, 1] (not scaled by 1000) to the
time embedding, and sample by integrating the model output from t = 0 to t = 1. That is exactly this
project's convention (SPEC 1: t = 0 noise, t = 1 data, velocity towards the data), so the official weights
need **no** time reversal and **no** sign change: ``SiTVelocity(..., time_convention="sit")`` (the default)
passes ``t`` and the output through unchanged. For checkpoints trained with the paper's notation (t = 0 data),
``time_convention="data_at_zero"`` wraps the network in ``kpe_lib.adapters.ReversedTime``
(``v(x, t) = -u(x, 1 - t)``).

``learn_sigma=True`` (the released 256 x 256 model): the network outputs 2 x in_channels = 8 channels; the first
4 are the velocity, the rest are an unused leftover of the DiT recipe. ``SiT.forward`` returns the velocity only
(as the official ``forward``); ``SiT.forward_full`` returns all channels.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kpe_lib.adapters import ReversedTime
from kpe_lib.models.common import expand_time, sinusoidal_embedding
from kpe_lib.models.paper._checkpoint import load_strict, read_state_dict

__all__ = ["SiTConfig", "SIT_CONFIGS", "SiT", "SiTVelocity", "load_sit", "sincos_pos_embed_2d"]

TIME_CONVENTIONS = ("sit", "data_at_zero")


@dataclass(frozen=True)
class SiTConfig:
    """Architecture of a SiT model.

    Attributes:
        input_size: latent side (32 for 256 x 256 images through the 8x VAE).
        patch_size: patch side p; the transformer sees (input_size / p)^2 tokens.
        in_channels: latent channels (4).
        hidden_size: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (D divisible by it).
        mlp_ratio: MLP hidden width / D.
        num_classes: K classes; the label table has K + 1 rows (row K = null class).
        learn_sigma: the network outputs 2 x in_channels channels (the released 256 x 256 weights do).
        name: a label for messages and result files.
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    learn_sigma: bool = True
    name: str = "SiT-XL/2"

    def __post_init__(self) -> None:
        for field in ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SiTConfig.{field} must be an integer >= 1; got {value!r}")
        if self.input_size % self.patch_size:
            raise ValueError(f"SiTConfig.input_size ({self.input_size}) must be divisible by patch_size "
                             f"({self.patch_size})")
        if self.hidden_size % self.num_heads or self.hidden_size % 4:
            raise ValueError(f"SiTConfig.hidden_size ({self.hidden_size}) must be divisible by num_heads "
                             f"({self.num_heads}) and by 4 (2D sin-cos position embedding)")
        if not self.mlp_ratio > 0:
            raise ValueError(f"SiTConfig.mlp_ratio must be > 0; got {self.mlp_ratio}")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels


SIT_CONFIGS: dict[str, SiTConfig] = {
    "SiT-XL/2": SiTConfig(),
    "SiT-B/2": SiTConfig(hidden_size=768, depth=12, num_heads=12, name="SiT-B/2"),
    "tiny": SiTConfig(input_size=8, patch_size=2, hidden_size=32, depth=2, num_heads=2, num_classes=10,
                      name="SiT-tiny"),
}
"""Named configurations: the released SiT-XL/2 (256 x 256 ImageNet), SiT-B/2, and a tiny one for tests and
the smoke-scale wiring check (8 x 8 latents, 2 blocks of width 32, 10 classes)."""


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position embedding (MAE / DiT layout).

    Token ``r * grid + c`` (row r, column c) gets ``[e(c), e(r)]`` where ``e(p) = [sin(p w_i), cos(p w_i)]``,
    ``w_i = 10000^(-i / (dim / 4))``, i = 0 .. dim/4 - 1: the first half of the channels encodes the column,
    the second half the row.

    Returns:
        Tensor (grid * grid, dim), float32.
    """
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4; got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")

    def embed(pos: torch.Tensor) -> torch.Tensor:
        phase = pos.reshape(-1, 1) * omega[None]
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)

    return torch.cat([embed(cols), embed(rows)], dim=1).float()


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, T, D), tokens in row-major order


class _TimestepEmbedder(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        # SiT feeds the raw t in [0, 1]: scale 1, not the 1000 of the project's own UNet
        return self.mlp(sinusoidal_embedding(t, self.freq_dim, scale=1.0))


class _LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        # qkv output channels are ordered [q | k | v], each split into heads of d / heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class _Block(nn.Module):
    """adaLN-Zero transformer block: c -> (shift, scale, gate) for attention and for the MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1[:, None] * self.attn(_modulate(self.norm1(x), shift1, scale1))
        return x + gate2[:, None] * self.mlp(_modulate(self.norm2(x), shift2, scale2))


class _FinalLayer(nn.Module):
    def __init__(self, dim: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(dim, patch * patch * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class SiT(nn.Module):
    """The SiT / DiT transformer as a class-conditional velocity field in latent space (SPEC 1, 6).

    Args:
        config: a :class:`SiTConfig` or the name of one in ``SIT_CONFIGS`` ("SiT-XL/2", "SiT-B/2", "tiny").

    Attributes:
        config: the configuration.
        num_classes: K; label K is the null class (``y=None`` uses it).

    Example:
        >>> model = SiT("tiny").eval()
        >>> model(torch.randn(2, 4, 8, 8), 0.5, y=torch.tensor([3, 7])).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, config: SiTConfig | str = "SiT-XL/2") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in SIT_CONFIGS:
                raise ValueError(f"config must be a SiTConfig or one of {sorted(SIT_CONFIGS)}; got {config!r}")
            config = SIT_CONFIGS[config]
        self.config = config
        self.num_classes = config.num_classes
        d, p = config.hidden_size, config.patch_size
        self.x_embedder = _PatchEmbed(p, config.in_channels, d)
        self.t_embedder = _TimestepEmbedder(d)
        self.y_embedder = _LabelEmbedder(config.num_classes, d)
        grid = config.input_size // p
        self.pos_embed = nn.Parameter(sincos_pos_embed_2d(d, grid)[None], requires_grad=False)
        self.blocks = nn.ModuleList([_Block(d, config.num_heads, config.mlp_ratio) for _ in range(config.depth)])
        self.final_layer = _FinalLayer(d, p, config.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The published initialisation: Xavier-uniform linear layers and patch projection, N(0, 0.02) label
        table and time MLP, and the adaLN-Zero zeros (every modulation and the output projection start at 0,
        so a fresh model outputs exactly zero). Skipped on the meta device."""
        if self.pos_embed.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero = [blk.adaLN_modulation[1] for blk in self.blocks]
        zero += [self.final_layer.adaLN_modulation[1], self.final_layer.linear]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def num_params(self) -> int:
        """Trainable parameters (the fixed position embedding excluded)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _labels(self, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if y is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device)
        if y.shape != (batch,) or y.is_floating_point():
            raise ValueError(f"y must be an integer tensor of shape ({batch},); got {y.dtype} {tuple(y.shape)}")
        if bool((y < 0).any()) or bool((y > self.num_classes).any()):
            raise ValueError(f"y must lie in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return y.long()

    def forward_full(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """All output channels.

        Args:
            x: (B, in_channels, input_size, input_size) latents.
            t: time in [0, 1], a scalar or (B,); SiT code convention = project convention (module docstring).
            y: (B,) labels in [0, K]; None or K = null class.

        Returns:
            (B, out_channels, input_size, input_size); the first ``in_channels`` are the velocity.
        """
        cfg = self.config
        if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.in_channels, cfg.input_size, cfg.input_size):
            raise ValueError(f"x must have shape (B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}); "
                             f"got {tuple(x.shape)}")
        b = x.shape[0]
        tokens = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(expand_time(t, b, x.device)).to(tokens.dtype) + self.y_embedder(
            self._labels(y, b, x.device))
        for block in self.blocks:
            tokens = block(tokens, c)
        patches = self.final_layer(tokens, c)  # (B, T, p * p * C)
        p, g, ch = cfg.patch_size, cfg.input_size // cfg.patch_size, cfg.out_channels
        return patches.reshape(b, g, g, p, p, ch).permute(0, 5, 1, 3, 2, 4).reshape(b, ch, g * p, g * p)

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity ``v(x, t, y)`` (B, in_channels, H, W): the first ``in_channels`` output channels."""
        return self.forward_full(x, t, y)[:, :self.config.in_channels]


class SiTVelocity(nn.Module):
    """Classifier-free guided SiT velocity in the project's convention: ``v_w(x, t, y=labels)`` (SPEC 1, 5).

    ``v_w = v(x, t, null) + w (v(x, t, y) - v(x, t, null))`` with the null class = row K of the label table.
    ``w = 1`` (conditional) and ``w = 0`` (unconditional) run one plain forward, so they equal the network's
    output exactly; other ``w`` batch ``[conditional; null]`` in one forward (``evals_per_call`` = 2).

    Args:
        model: a :class:`SiT` (eval mode; ``y=None`` means the null class, ``num_classes`` its index).
        guidance_scale: w >= 0 (the paper: 1.5).
        cfg_channels: guide only the first this many latent channels and leave the rest conditional. None
            (default) guides all channels, the standard CFG. The official ``sample.py`` guides only 3 of the 4
            latent channels ("for exact reproducibility reasons", inherited from DiT): pass 3 to reproduce it.
        time_convention: "sit" (default; the released weights, t = 0 noise: identity) or "data_at_zero"
            (a network trained with t = 0 data: wrapped in ``ReversedTime``, ``v(x, t) = -u(x, 1 - t)``).
        autocast_dtype: run the network under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16`` on a
            GPU, about 2x faster for SiT-XL/2); the guided velocity is returned in ``x``'s dtype, so the
            sampler's state and KPE sums keep full precision. None (default): plain float32.

    Example:
        >>> v = SiTVelocity(SiT("tiny").eval(), guidance_scale=1.5)
        >>> v(torch.randn(2, 4, 8, 8), 0.3, y=torch.tensor([1, 2])).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, model: nn.Module, guidance_scale: float, cfg_channels: int | None = None,
                 time_convention: str = "sit", autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        w = float(guidance_scale)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0; got {guidance_scale}")
        if getattr(model, "num_classes", None) is None:
            raise ValueError("model must be class-conditional with a `num_classes` attribute (its null class index)")
        if cfg_channels is not None and (not isinstance(cfg_channels, int) or cfg_channels < 1):
            raise ValueError(f"cfg_channels must be None (all channels) or an integer >= 1; got {cfg_channels!r}")
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"time_convention must be one of {TIME_CONVENTIONS}; got {time_convention!r}")
        if autocast_dtype is not None and not (isinstance(autocast_dtype, torch.dtype)
                                               and autocast_dtype.is_floating_point):
            raise ValueError(f"autocast_dtype must be None or a floating torch.dtype; got {autocast_dtype!r}")
        self.model, self.scale, self.cfg_channels, self.time_convention = model, w, cfg_channels, time_convention
        self.autocast_dtype = autocast_dtype
        self._net = ReversedTime(model) if time_convention == "data_at_zero" else model

    @property
    def evals_per_call(self) -> int:
        """Network evaluations per velocity call (1 when w is 0 or 1, else 2)."""
        return 1 if self.scale in (0.0, 1.0) else 2

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Guided velocity at latents ``x`` (B, C, H, W), time ``t`` (scalar or (B,)), labels ``y`` (B,)."""
        if self.autocast_dtype is None:
            return self._guided(x, t, y)
        with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
            v = self._guided(x, t, y)
        return v.to(x.dtype)

    def _guided(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None or self.scale == 0.0:
            return self._net(x, t, y=None)
        if self.scale == 1.0:
            return self._net(x, t, y=y)
        b = x.shape[0]
        tb = expand_time(t, b, x.device)
        null = torch.full((b,), int(self.model.num_classes), dtype=torch.long, device=x.device)
        v = self._net(torch.cat([x, x]), torch.cat([tb, tb]), y=torch.cat([torch.as_tensor(y, device=x.device), null]))
        v_cond, v_null = v[:b], v[b:]
        guided = v_null + self.scale * (v_cond - v_null)
        if self.cfg_channels is None or self.cfg_channels >= x.shape[1]:
            return guided
        k = self.cfg_channels
        return torch.cat([guided[:, :k], v_cond[:, k:]], dim=1)


def load_sit(path: str | os.PathLike, config: SiTConfig | str = "SiT-XL/2", device: str | torch.device = "cpu"
             ) -> SiT:
    """Build a SiT and load a local checkpoint into it, strictly (names and shapes).

    Args:
        path: ``SiT-XL-2-256x256.pt`` (the official release: a plain state dict) or a training checkpoint
            holding the weights under "ema" (preferred) or "model"; ``.safetensors`` also accepted.
        config: the architecture the checkpoint was trained with.
        device: where the model goes.

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the checkpoint does not match ``config`` (missing / unexpected keys and shape mismatches
            are listed).
    """
    state = read_state_dict(path, "SiT", nested_keys=("ema", "model", "state_dict"))
    with torch.device("meta"):
        model = SiT(config)
    load_strict(model, state, model.config.name, source=str(path))
    return model.to(device).eval()

