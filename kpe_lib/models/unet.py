"""The DDPM-style UNet velocity field of Mathematics §6 (the CelebA / CIFAR-10 chapters).

Layout (Ho et al. 2020, as in the paper's reference code): a 3x3 input convolution; per resolution
level ``num_res_blocks`` residual blocks (plus self-attention on the levels in ``attn_levels``) and a
strided-convolution downsample; a middle of residual block, attention, residual block; the mirror image
on the way up with skip connections from every down block; GroupNorm, SiLU and a 3x3 output convolution.
Every residual block adds a projection of the 4W-wide time (and class) embedding.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kpe_lib.models.common import TIME_SCALE, Described, check_groups, expand_time, sinusoidal_embedding


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise the last layer of a residual branch, so each block starts as the identity (DDPM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, add the embedding, GN-SiLU-dropout-conv, plus a (1x1 when widths differ) skip."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.drop = nn.GroupNorm(groups, c_out), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, pre-GroupNorm."""

    def __init__(self, channels: int, num_heads: int, groups: int) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads} must divide the channel count {channels} of an attention level")
        self.heads = num_heads
        self.norm, self.qkv = nn.GroupNorm(groups, channels), nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Block(nn.Module):
    """A residual block optionally followed by self-attention (one entry of the down or up path)."""

    def __init__(self, res: ResBlock, attn: SelfAttention | None) -> None:
        super().__init__()
        self.res, self.attn = res, attn

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return self.attn(x) if self.attn is not None else x


class UNet(Described):
    """DDPM-style UNet ``v_theta(x, t, y)`` for images (B, C, H, W), Mathematics §6.

    Time: continuous t in [0, 1] is multiplied by 1000 (``TIME_SCALE``), embedded by a W-wide sinusoid,
    then Linear(W, 4W)-SiLU-Linear(4W, 4W). Class conditioning (``num_classes`` = K): a learned
    embedding table of K + 1 rows, row K being the NULL class used for classifier-free guidance, added
    to the time embedding. ``y=None`` means the null class for every sample.

    With ``in_channels=1``, ``width=32``, ``channel_mult=(1, 2, 4)``, 2 residual blocks per level and
    attention at levels (1, 2) (16x16 and 8x8 for 32x32 input) it has 4,023,233 parameters (4.02M);
    ``width=16``: 1,010,657 (1.01M). Any input with H and W divisible by ``2 ** (len(channel_mult) - 1)`` works, e.g. every
    2^k resolution >= 8 for three levels.

    Args:
        in_channels: C of the input images.
        out_channels: C of the output velocity (default: ``in_channels``).
        width: W, the base channel count.
        channel_mult: channel multiplier per resolution level, top (full resolution) first.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_levels: indices into ``channel_mult`` of the levels with self-attention.
        num_heads: attention heads.
        groups: GroupNorm groups (must divide every channel count).
        dropout: dropout rate inside the residual blocks.
        num_classes: K for class conditioning, or None for an unconditional model.

    Example:
        >>> net = UNet(in_channels=3, width=16, num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32), torch.tensor([0.1, 0.9]), y=torch.tensor([3, 10])).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, width: int = 32,
                 channel_mult: Sequence[int] = (1, 2, 4), num_res_blocks: int = 2,
                 attn_levels: Sequence[int] = (1, 2), num_heads: int = 4, groups: int = 8,
                 dropout: float = 0.1, num_classes: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        channel_mult, attn_levels = tuple(int(m) for m in channel_mult), tuple(int(a) for a in attn_levels)
        if in_channels < 1 or out_channels < 1 or width < 1 or num_res_blocks < 1 or not channel_mult:
            raise ValueError("in_channels, out_channels, width, num_res_blocks must be >= 1 and channel_mult "
                             f"non-empty; got {in_channels}, {out_channels}, {width}, {num_res_blocks}, {channel_mult}")
        if any(not 0 <= a < len(channel_mult) for a in attn_levels):
            raise ValueError(f"attn_levels are level indices in [0, {len(channel_mult) - 1}]; got {attn_levels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be None or >= 1; got {num_classes}")
        for m in channel_mult:
            check_groups(m * width, groups, f"a level with multiplier {m}")
        self.config = {"kind": "unet", "in_channels": in_channels, "out_channels": out_channels, "width": width,
                       "channel_mult": channel_mult, "num_res_blocks": num_res_blocks, "attn_levels": attn_levels,
                       "num_heads": num_heads, "groups": groups, "dropout": dropout, "num_classes": num_classes}
        self.in_channels, self.width, self.num_classes = in_channels, width, num_classes
        self.levels = len(channel_mult)
        emb = 4 * width

        self.time_mlp = nn.Sequential(nn.Linear(width, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.class_emb = nn.Embedding(num_classes + 1, emb) if num_classes is not None else None
        self.conv_in = nn.Conv2d(in_channels, width, 3, padding=1)

        def block(c_in: int, c_out: int, level: int) -> Block:
            attn = SelfAttention(c_out, num_heads, groups) if level in attn_levels else None
            return Block(ResBlock(c_in, c_out, emb, groups, dropout), attn)

        self.down, skips, ch = nn.ModuleList(), [width], width
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(block(ch, mult * width, level))
                ch = mult * width
                skips.append(ch)
            if level < self.levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb, groups, dropout), SelfAttention(ch, num_heads, groups),
                                  ResBlock(ch, ch, emb, groups, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(ch + skips.pop(), mult * width, level))
                ch = mult * width
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(groups, ch), nn.SiLU(), _zero(nn.Conv2d(ch, out_channels, 3, padding=1)))

    @property
    def null_class(self) -> int:
        """Index of the NULL (unconditional) class: ``num_classes``."""
        if self.num_classes is None:
            raise ValueError("this UNet is unconditional (num_classes=None); it has no null class")
        return self.num_classes

    def embed(self, t: float | torch.Tensor, y: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        """The 4W-wide conditioning vector per sample: time MLP output plus class embedding, (B, 4W)."""
        emb = self.time_mlp(sinusoidal_embedding(expand_time(t, batch, device), self.width, scale=TIME_SCALE))
        if self.class_emb is None:
            if y is not None:
                raise ValueError("y was given but this UNet is unconditional (num_classes=None)")
            return emb
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        y = torch.as_tensor(y, device=device)
        if y.shape != (batch,) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"y must be an integer tensor of shape ({batch},); got {tuple(y.shape)} {y.dtype}")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > self.num_classes):
            raise ValueError(f"class labels must lie in [0, {self.num_classes}] ({self.num_classes} = null class)")
        return emb + self.class_emb(y.long())

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity at ``x`` (B, C, H, W), time ``t`` (scalar or (B,)), labels ``y`` (B,) or None -> (B, C_out, H, W)."""
        factor = 2 ** (self.levels - 1)
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % factor or x.shape[3] % factor:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W) with H and W divisible by {factor}; "
                             f"got {tuple(x.shape)}")
        emb = self.embed(t, y, x.shape[0], x.device).to(x.dtype)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, Block) else layer(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), emb) if isinstance(layer, Block) else layer(h)
        return self.out(h)
