"""Adapters that bring other velocity conventions to ``v(x, t, **extras)`` (Mathematics §1.3).

- ``TimeFirst``: models called as ``model(t, x)`` (torchdiffeq's ``odeint`` functions, torchcfm's
  ``torch_wrapper`` and ``UNetModelWrapper``); ``t`` reaches them as a 0-d tensor, as torchdiffeq passes it.
- ``ReversedTime``: models trained with t = 1 as noise and t = 0 as data.

Models in facebookresearch/flow_matching's ``ModelWrapper`` convention, ``forward(x, t, **extras)``, need no
adapter: pass them to ``sample`` as they are (``time_shape="scalar"`` gives them the 0-d ``t`` that package's
ODE solver passes). Diffusers transformers (time from 1 = noise, a timestep of sigma x 1000, an output object)
have their own integration, :mod:`kpe_lib.integrations.diffusers`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn


def as_velocity_tensor(out: Any, who: str) -> torch.Tensor:
    """``out`` itself when it is a tensor; otherwise a TypeError that says how to get the tensor out."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        hint = "its first item: wrap the model as lambda *a, **k: model(*a, **k)[0]"
    elif hasattr(out, "sample"):
        hint = "a model output object (diffusers): wrap the model as lambda *a, **k: model(*a, **k).sample"
    else:
        hint = "a tensor shaped like x"
    raise TypeError(f"{who}: the wrapped model returned {type(out).__name__}, not a tensor; the velocity is {hint}")


class TimeFirst(nn.Module):
    """Wrap ``model(t, x, **extras)`` as ``v(x, t, **extras)``.

    Args:
        model: callable taking time first.
        scalar_time: pass ``t`` as a 0-d tensor (the default: torchdiffeq passes a 0-d t, and torchcfm's
            ``torch_wrapper`` does ``t.repeat(x.shape[0])``, which needs one) or as the sampler's (B,) tensor
            (``False``). The sampler's ``t`` is the same for the whole batch, so nothing is lost.

    Example:
        >>> v = TimeFirst(lambda t, x: x * t)          # a torchdiffeq-style f(t, x)
        >>> v(torch.ones(3, 2), torch.full((3,), 0.5))[0]
        tensor([0.5000, 0.5000])
    """

    def __init__(self, model: Callable[..., torch.Tensor], scalar_time: bool = True) -> None:
        super().__init__()
        self.model = model
        self.scalar_time = scalar_time

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        if self.scalar_time and t.ndim == 1:
            t = t[0]
        return as_velocity_tensor(self.model(t, x, **extras), "TimeFirst")


class ReversedTime(nn.Module):
    """Wrap a model trained with the opposite time direction (s = 1 - t: s = 1 noise, s = 0 data).

    Along the same path ``dx/dt = -dx/ds``, so ``v(x, t) = -u(x, 1 - t)`` where ``u`` is the wrapped model's
    velocity in its own time ``s``.

    Args:
        model: ``u(x, s, **extras)``; combine with ``TimeFirst`` for ``u(s, x)`` models. For diffusers
            transformers (whose second positional argument is ``encoder_hidden_states``) use
            :func:`kpe_lib.integrations.diffusers.flow_match_velocity` instead.
    """

    def __init__(self, model: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        return -as_velocity_tensor(self.model(x, 1.0 - t, **extras), "ReversedTime")
