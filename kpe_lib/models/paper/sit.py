"""SiT: the class-conditional latent flow transformer of the paper's ImageNet-256 experiments (Mathematics §6).

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
project's convention (Mathematics §1: t = 0 noise, t = 1 data, velocity towards the data), so the official weights
need **no** time reversal and **no** sign change: ``SiTVelocity(..., time_convention="sit")`` (the default)
(in :mod:`kpe_lib.models.paper.sit_velocity`) passes ``t`` and the output through unchanged. For checkpoints trained with the paper's notation (t = 0 data),
``time_convention="data_at_zero"`` wraps the network in ``kpe_lib.adapters.ReversedTime``
(``v(x, t) = -u(x, 1 - t)``).

``learn_sigma=True`` (the released 256 x 256 model): the network outputs 2 x in_channels = 8 channels; the first
4 are the velocity, the rest are an unused leftover of the DiT recipe. ``SiT.forward`` returns the velocity only
(as the official ``forward``); ``SiT.forward_full`` returns all channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kpe_lib.models.common import expand_time, sinusoidal_embedding

__all__ = ["SiTConfig", "SIT_CONFIGS", "SiT", "sincos_pos_embed_2d"]


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
    """The SiT / DiT transformer as a class-conditional velocity field in latent space (Mathematics §1, 6).

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
