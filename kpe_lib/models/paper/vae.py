"""The Stable Diffusion VAE decoder: SiT latents (B, 4, 32, 32) -> images (B, 3, 256, 256) in [0, 1] (Mathematics §6).

SiT-XL/2 generates in the latent space of the Stable Diffusion autoencoder (``stabilityai/sd-vae-ft-ema`` or
``-mse``): latents are the encoder's output times the scaling factor 0.18215, so decoding divides by it first.
Only the decoder half is built here (the encoder is never needed to sample), written for this project from
the published architecture, with the parameter names of the diffusers ``AutoencoderKL`` layout so that the
released ``diffusion_pytorch_model.safetensors`` / ``.bin`` loads strictly:

- ``post_quant_conv``: 1x1 convolution on the latents;
- ``decoder.conv_in``: 3x3 convolution to the widest channel count;
- ``decoder.mid_block.resnets.{0,1}`` and ``decoder.mid_block.attentions.0`` (single-head self-attention over
  all positions: ``group_norm, to_q, to_k, to_v, to_out.0``; the older names ``query, key, value,
  proj_attn`` of checkpoints saved by early diffusers versions are renamed on load);
- ``decoder.up_blocks.N.resnets.M`` (layers_per_block + 1 residual blocks each) and
  ``decoder.up_blocks.N.upsamplers.0.conv`` (nearest x2 then 3x3 convolution; all but the last block);
- ``decoder.conv_norm_out`` (GroupNorm), SiLU, ``decoder.conv_out`` (3x3 convolution to RGB).

The decoder outputs images in [-1, 1]; :meth:`VAEDecoder.decode` maps them to [0, 1] and clips. Encoder keys
(``encoder.*``, ``quant_conv.*``) in a full autoencoder file are skipped; every decoder key must match.
The original CompVis/LDM key layout (``decoder.mid.block_1`` ...) is not read: use the diffusers folder.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kpe_lib.models.paper._checkpoint import load_strict, read_state_dict

__all__ = ["VAEConfig", "VAE_CONFIGS", "VAEDecoder", "load_vae_decoder", "WEIGHT_FILES"]

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


@dataclass(frozen=True)
class VAEConfig:
    """Decoder architecture (the fields of a diffusers ``AutoencoderKL`` config.json that the decoder uses).

    Attributes:
        latent_channels: channels of the latents (4).
        out_channels: image channels (3).
        block_out_channels: channel counts of the resolution levels, highest resolution first (the decoder
            walks them in reverse); ``len - 1`` upsamplings of 2.
        layers_per_block: residual blocks per level in the encoder; the decoder has one more per level.
        norm_num_groups: GroupNorm groups (divides every channel count).
        scaling_factor: latents = encoder output x this; decoding divides by it.
        name: label for messages.
    """

    latent_channels: int = 4
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    name: str = "sd-vae"

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if not self.block_out_channels or min(self.block_out_channels) < 1:
            raise ValueError(f"VAEConfig.block_out_channels must be a non-empty tuple of positive ints; got "
                             f"{self.block_out_channels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"VAEConfig.norm_num_groups ({self.norm_num_groups}) must divide every entry of "
                             f"block_out_channels {self.block_out_channels}")
        if self.layers_per_block < 1 or self.latent_channels < 1 or self.out_channels < 1:
            raise ValueError("VAEConfig.layers_per_block, latent_channels and out_channels must be >= 1")
        if not self.scaling_factor > 0:
            raise ValueError(f"VAEConfig.scaling_factor must be > 0; got {self.scaling_factor}")

    @property
    def upscale(self) -> int:
        """Image side / latent side."""
        return 2 ** (len(self.block_out_channels) - 1)


VAE_CONFIGS: dict[str, VAEConfig] = {
    "sd-vae": VAEConfig(),
    "tiny": VAEConfig(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, name="sd-vae-tiny"),
}
"""The Stable Diffusion VAE (8x: 32 x 32 latents -> 256 x 256 images) and a tiny one (4x) for tests."""


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class _Resnet(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class _Attention(nn.Module):
    """Single-head self-attention over the H x W positions, residual."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.group_norm = _norm(channels, groups)
        self.to_q, self.to_k, self.to_v = (nn.Linear(channels, channels) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(channels, channels), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.group_norm(x).reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C)
        out = F.scaled_dot_product_attention(self.to_q(seq)[:, None], self.to_k(seq)[:, None],
                                             self.to_v(seq)[:, None])[:, 0]
        out = self.to_out[1](self.to_out[0](out))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_Resnet(channels, channels, groups) for _ in range(2)])
        self.attentions = nn.ModuleList([_Attention(channels, groups)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class _Upsample(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cout: int, layers: int, groups: int, upsample: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList([_Resnet(cin if i == 0 else cout, cout, groups) for i in range(layers)])
        self.upsamplers = nn.ModuleList([_Upsample(cout)]) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for resnet in self.resnets:
            x = resnet(x)
        return x if self.upsamplers is None else self.upsamplers[0](x)


class _Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig) -> None:
        super().__init__()
        widths = list(reversed(cfg.block_out_channels))
        g = cfg.norm_num_groups
        self.conv_in = nn.Conv2d(cfg.latent_channels, widths[0], 3, padding=1)
        self.mid_block = _MidBlock(widths[0], g)
        self.up_blocks = nn.ModuleList([
            _UpBlock(widths[max(i - 1, 0)], widths[i], cfg.layers_per_block + 1, g, upsample=i < len(widths) - 1)
            for i in range(len(widths))])
        self.conv_norm_out = _norm(widths[-1], g)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[-1], cfg.out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class VAEDecoder(nn.Module):
    """The decoder half of the Stable Diffusion autoencoder (KL-f8).

    Args:
        config: a :class:`VAEConfig` or a name in ``VAE_CONFIGS`` ("sd-vae", "tiny").

    Example:
        >>> vae = VAEDecoder("tiny").eval()
        >>> vae.decode(torch.randn(2, 4, 8, 8)).shape
        torch.Size([2, 3, 32, 32])
    """

    def __init__(self, config: VAEConfig | str = "sd-vae") -> None:
        super().__init__()
        if isinstance(config, str):
            if config not in VAE_CONFIGS:
                raise ValueError(f"config must be a VAEConfig or one of {sorted(VAE_CONFIGS)}; got {config!r}")
            config = VAE_CONFIGS[config]
        self.config = config
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, 1)
        self.decoder = _Decoder(config)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (B, C, h, w) -> images in [-1, 1] (unclipped), (B, 3, h * upscale, w * upscale)."""
        return self.decoder(self.post_quant_conv(z))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Scaled latents (what SiT generates) -> images in [0, 1].

        Args:
            latents: (B, latent_channels, h, w), i.e. encoder output x ``scaling_factor``.
            batch_size: latents per forward pass (bounds memory at 256 x 256).

        Returns:
            (B, out_channels, h * upscale, w * upscale) float32 images in [0, 1], on the latents' device.
        """
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"latents must have shape (B, {self.config.latent_channels}, h, w); got "
                             f"{tuple(latents.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        p = next(self.parameters())
        out = [self(latents[s:s + batch_size].to(p.device, p.dtype) / self.config.scaling_factor)
               for s in range(0, latents.shape[0], batch_size)]
        return ((torch.cat(out).float() + 1.0) / 2.0).clamp(0.0, 1.0).to(latents.device)


def _rename_old_attention(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map early-diffusers attention names to the current ones and squeeze 1x1-conv attention weights."""
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(("encoder.", "quant_conv.")):
            continue  # encoder half of a full autoencoder file
        parts = key.split(".")
        if ".attentions." in key and len(parts) >= 2 and parts[-2] in _OLD_ATTENTION_NAMES:
            key = ".".join(parts[:-2] + [_OLD_ATTENTION_NAMES[parts[-2]], parts[-1]])
        if key in own and own[key].ndim == 2 and value.ndim == 4 and value.shape[2:] == (1, 1):
            value = value[:, :, 0, 0]
        out[key] = value
    return out


def _read_config(folder: Path, name: str) -> VAEConfig:
    path = folder / "config.json"
    if not path.is_file():
        return VAE_CONFIGS["sd-vae"]
    raw = json.loads(path.read_text())
    allowed = {f.name for f in fields(VAEConfig)} - {"name"}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items() if k in allowed}
    return VAEConfig(**kwargs, name=name)


def load_vae_decoder(vae_dir: str | os.PathLike, device: str | torch.device = "cpu") -> VAEDecoder:
    """Load the decoder from a local diffusers folder (e.g. a copy of ``stabilityai/sd-vae-ft-ema``).

    Args:
        vae_dir: a folder with ``config.json`` (optional: the SD defaults otherwise) and
            ``diffusion_pytorch_model.safetensors`` or ``.bin``; or the weight file itself.
        device: where the model goes.

    Returns:
        The decoder in eval mode.

    Raises:
        FileNotFoundError: no folder / no weight file in it.
        ValueError: the weights do not match the configuration (keys listed).
    """
    p = Path(vae_dir)
    if p.is_file():
        folder, weights = p.parent, p
    elif p.is_dir():
        folder = p
        found = [p / f for f in WEIGHT_FILES if (p / f).is_file()]
        if not found:
            raise FileNotFoundError(f"no VAE weights in {str(p)!r}: expected one of {list(WEIGHT_FILES)} "
                                    "(download stabilityai/sd-vae-ft-ema from the Hugging Face hub)")
        weights = found[0]
    else:
        raise FileNotFoundError(f"VAE folder not found: {str(p)!r} (a local copy of stabilityai/sd-vae-ft-ema "
                                "with config.json and diffusion_pytorch_model.safetensors)")
    config = _read_config(folder, name=folder.name or "sd-vae")
    with torch.device("meta"):
        model = VAEDecoder(config)
    state = _rename_old_attention(read_state_dict(weights, "VAE"), model)
    load_strict(model, state, f"VAE decoder {config.block_out_channels}", source=str(weights))
    return model.to(device).eval()
