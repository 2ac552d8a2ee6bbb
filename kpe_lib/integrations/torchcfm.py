"""Models trained with torchcfm (Tong et al.) as kpe_lib velocities (Mathematics §1.3).

torchcfm uses kpe_lib's time direction (t = 0 source/noise, t = 1 data) and its conditional flow matchers train
``v(x_t, t) ~ u_t``, so its models are kpe_lib velocities up to the calling convention:

- ``torchcfm.models.MLP(dim, time_varying=True)`` is called on ``torch.cat([x, t[:, None]], -1)``:
  :class:`ConcatTime` (or :func:`torchcfm_velocity`) wraps it;
- ``torchcfm.models.unet.UNetModel`` (``UNetModelWrapper``) and ``torchcfm.utils.torch_wrapper`` are called
  as ``model(t, x)``: :class:`kpe_lib.TimeFirst`, which passes a 0-d ``t`` as torchdiffeq does.

Example:
    >>> from torchcfm.models import MLP                    # doctest: +SKIP
    >>> model = MLP(dim=2, time_varying=True)               # doctest: +SKIP
    >>> res = sample(torchcfm_velocity(model), torch.randn(512, 2), n_steps=100, diagnostics=True)  # doctest: +SKIP
    >>> res.diagnostics.straightness.mean()                 # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from kpe_lib.adapters import TimeFirst, as_velocity_tensor

__all__ = ["ConcatTime", "torchcfm_velocity"]


class ConcatTime(nn.Module):
    """Wrap ``model(cat([x, t]))`` (torchcfm's ``MLP(time_varying=True)``) as ``v(x, t)``; x (B, d), t (B,) or 0-d."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        if x.ndim != 2:
            raise ValueError(f"ConcatTime needs flat states x of shape (B, d), got {tuple(x.shape)}")
        tt = t.to(x.dtype).reshape(-1).expand(x.shape[0])[:, None]
        return as_velocity_tensor(self.model(torch.cat([x, tt], -1), **extras), "ConcatTime")


def torchcfm_velocity(model: nn.Module) -> nn.Module:
    """A kpe_lib velocity ``v(x, t, **extras)`` from a torchcfm model.

    Args:
        model: a ``torchcfm.models.MLP`` trained with ``time_varying=True`` (wrapped in :class:`ConcatTime`), or
            any model called time first, ``model(t, x, **extras)``: ``UNetModelWrapper``, ``torch_wrapper``
            (wrapped in :class:`kpe_lib.TimeFirst`, 0-d t).

    Raises:
        ValueError: an ``MLP`` built with ``time_varying=False`` (it never saw t: not a flow-matching velocity).
    """
    if type(model).__name__ == "MLP" and hasattr(model, "time_varying"):
        if not model.time_varying:
            raise ValueError("this torchcfm MLP was built with time_varying=False: it takes no time input, so it "
                             "is not a velocity v(x, t); build it with MLP(dim, time_varying=True)")
        return ConcatTime(model)
    return TimeFirst(model)
