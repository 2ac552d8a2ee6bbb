"""Adapters that bring other velocity conventions to ``v(x, t, **extras)`` (Mathematics §1).

- ``TimeFirst``: models called as ``model(t, x)`` (torchdiffeq, torchcfm style).
- ``ReversedTime``: models trained with t = 1 as noise and t = 0 as data.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


class TimeFirst(nn.Module):
    """Wrap ``model(t, x, **extras)`` as ``v(x, t, **extras)``.

    Args:
        model: callable taking time first.
        scalar_time: pass ``t`` as a 0-d tensor (torchdiffeq style) instead of (B,). The sampler's ``t`` is
            the same for the whole batch, so nothing is lost.
    """

    def __init__(self, model: Callable[..., torch.Tensor], scalar_time: bool = False) -> None:
        super().__init__()
        self.model = model
        self.scalar_time = scalar_time

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        if self.scalar_time and t.ndim == 1:
            t = t[0]
        return self.model(t, x, **extras)


class ReversedTime(nn.Module):
    """Wrap a model trained with the opposite time direction (s = 1 - t: s = 1 noise, s = 0 data).

    Along the same path ``dx/dt = -dx/ds``, so ``v(x, t) = -u(x, 1 - t)`` where ``u`` is the wrapped model's
    velocity in its own time ``s``.

    Args:
        model: ``u(x, s, **extras)``; combine with ``TimeFirst`` for ``u(s, x)`` models.
    """

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        return -self.model(x, 1.0 - t, **extras)
