"""The conditional flow matching loss on the linear path (Mathematics §1)."""
from __future__ import annotations

from typing import Any, Callable

import torch


def cfm_loss(velocity: Callable[..., torch.Tensor], x1: torch.Tensor, x0: torch.Tensor, t: torch.Tensor,
             reduction: str = "mean", **extras: Any) -> torch.Tensor:
    """``|| v(x_t, t) - (x1 - x0) ||^2`` with ``x_t = (1 - t) x0 + t x1``, per coordinate.

    The squared error is averaged over coordinates (the Mathematics §1 loss divided by the dimension d, the usual
    MSE scale: a loss of 0.09 means 0.09 per pixel), then over the batch.

    Args:
        velocity: ``v(x, t, **extras)``.
        x1: data, (B, ...).
        x0: noise, (B, ...) like ``x1``.
        t: times in [0, 1], (B,).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (per sample, (B,)).
        **extras: passed to ``velocity`` (e.g. ``y=labels``).

    Returns:
        The loss, a scalar tensor or (B,).
    """
    if x0.shape != x1.shape or t.shape != x1.shape[:1]:
        raise ValueError(f"x0 and x1 must share a shape (B, ...) and t be (B,); got {tuple(x0.shape)}, "
                         f"{tuple(x1.shape)}, {tuple(t.shape)}")
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none'; got {reduction!r}")
    tt = t.reshape(-1, *([1] * (x1.ndim - 1))).to(x1.dtype)
    xt = (1 - tt) * x0 + tt * x1
    per_sample = (velocity(xt, t, **extras) - (x1 - x0)).pow(2).flatten(1).mean(dim=1)
    return per_sample.mean() if reduction == "mean" else per_sample
