"""Pieces shared by the models: time handling, the sinusoidal embedding, a describe line.

Every flow model follows the project's velocity convention (Mathematics §1): ``v(x, t, **extras)``
with ``x`` of shape (B, ...) and ``t`` a float scalar or a tensor of shape () or (B,),
t = 0 noise and t = 1 data.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

TIME_SCALE = 1000.0
"""Continuous t in [0, 1] is multiplied by this before the sinusoid, so the embedding sees
the same range of phases as a DDPM model fed integer steps 0..999 (Mathematics §1 [choice])."""


def expand_time(t: float | torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """Broadcast a time to one float32 value per sample.

    Args:
        t: a Python float, a 0-d tensor, or a tensor of shape (B,) or (1,).
        batch: B, the batch size of ``x``.
        device: where the result lives.

    Returns:
        Tensor (B,) of float32 times.
    """
    t = torch.as_tensor(t, device=device, dtype=torch.float32)
    if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
        return t.reshape(1).expand(batch)
    if t.ndim == 1 and t.shape[0] == batch:
        return t
    raise ValueError(
        f"t must be a scalar or a tensor of shape ({batch},) matching the batch; got shape {tuple(t.shape)}"
    )


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = TIME_SCALE,
                         max_period: float = 10_000.0) -> torch.Tensor:
    """Transformer-style sinusoidal embedding of a continuous time.

    Args:
        t: Tensor (B,) of times in [0, 1].
        dim: embedding width (even).
        scale: t is multiplied by this before the sinusoid (default 1000, see ``TIME_SCALE``).
        max_period: the slowest frequency's period, in units of ``scale * t``.

    Returns:
        Tensor (B, dim): ``[cos(scale t f_k), sin(scale t f_k)]`` with ``f_k`` geometric from 1 to
        ``1 / max_period``.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"time embedding dim must be an even integer >= 2; got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    phase = (scale * t.float())[:, None] * freqs[None, :]
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=1)


def check_groups(channels: int, groups: int, where: str) -> None:
    """Raise ValueError unless GroupNorm(groups) can normalise ``channels`` channels."""
    if channels % groups:
        raise ValueError(f"groups={groups} must divide every channel count; {where} has {channels} channels")


class Described(nn.Module):
    """Mixin: ``num_params()``, a one-line ``describe()`` used as ``repr``, and ``config``.

    Subclasses set ``self.config``, a plain dict ``{"kind": ..., **constructor arguments}`` from which
    ``kpe_lib.models.build_model`` rebuilds an identical architecture.
    """

    config: dict[str, Any]

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def describe(self) -> str:
        """One line: class, its configuration, and the parameter count in millions."""
        args = ", ".join(f"{k}={v}" for k, v in self.config.items() if k != "kind")
        return f"{type(self).__name__}({args}) - {self.num_params() / 1e6:.2f}M params"

    def __repr__(self) -> str:
        return self.describe()
