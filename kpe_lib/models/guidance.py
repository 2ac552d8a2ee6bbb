"""Classifier-free guidance as a velocity field (Ho & Salimans 2022; used by the ImageNet / CIFAR chapters)."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from kpe_lib.models.common import expand_time


class GuidedVelocity(nn.Module):
    """``v_w(x, t, y) = v(x, t, null) + w (v(x, t, y) - v(x, t, null))``.

    ``w = 1`` is the conditional model and ``w = 0`` the unconditional one; both are computed by a
    single plain forward, so they equal the wrapped model's output exactly. Other ``w`` run one batched
    forward over ``[conditional; unconditional]`` (two model evaluations per velocity call: see
    ``evals_per_call`` when counting NFE).

    Args:
        model: a class-conditional velocity ``model(x, t, y=labels)`` where ``y=None`` means the null class
            (e.g. ``UNet(num_classes=K)``).
        scale: the guidance weight w >= 0.

    Example:
        >>> from kpe_lib.models import UNet
        >>> v = GuidedVelocity(UNet(num_classes=10, width=16), scale=1.5)
        >>> v(torch.randn(4, 1, 32, 32), 0.5, y=torch.arange(4)).shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(self, model: nn.Module | Callable[..., torch.Tensor], scale: float) -> None:
        super().__init__()
        scale = float(scale)
        if not math.isfinite(scale) or scale < 0:
            raise ValueError(f"scale (the guidance weight w) must be a finite number >= 0; got {scale}")
        self.model, self.scale = model, scale

    @property
    def evals_per_call(self) -> int:
        """Model evaluations per velocity call (1 when w is 0 or 1, else 2)."""
        return 1 if self.scale in (0.0, 1.0) else 2

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Guided velocity at ``x`` (B, ...), ``t`` scalar or (B,), labels ``y`` (B,); returns (B, ...).

        ``y=None`` gives the unconditional velocity (guidance has nothing to amplify).
        """
        if y is None or self.scale == 0.0:
            return self.model(x, t, y=None)
        if self.scale == 1.0:
            return self.model(x, t, y=y)
        b = x.shape[0]
        tb = expand_time(t, b, x.device)
        v = self.model(torch.cat([x, x]), torch.cat([tb, tb]), y=torch.cat([torch.as_tensor(y, device=x.device),
                                                                          self._null(b, x.device)]))
        v_cond, v_uncond = v[:b], v[b:]
        return v_uncond + self.scale * (v_cond - v_uncond)

    def _null(self, batch: int, device: torch.device) -> torch.Tensor:
        null = getattr(self.model, "num_classes", None)
        if null is None:
            raise ValueError("GuidedVelocity needs a class-conditional model with a `num_classes` attribute "
                             "(its null class index)")
        return torch.full((batch,), int(null), dtype=torch.long, device=device)
