"""Optional speed-ups for paper-scale sampling: bf16 autocast and ``torch.compile`` (off by default).

Both wrap a velocity field and keep the Mathematics §1 convention ``v(x, t, **extras)``; the sampler, its gain and its
energy accumulation (float64) are untouched, so only the model's arithmetic changes. The returned velocity is
cast back to the state's dtype, so KPE sums stay in full precision.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

Velocity = Callable[..., torch.Tensor]


def accelerate(velocity: Velocity, *, bf16: bool = False, compile: bool = False,
               compile_mode: str | None = None) -> Velocity:
    """Wrap ``velocity`` with bf16 autocast and/or ``torch.compile``.

    Args:
        velocity: ``v(x, t, **extras) -> Tensor`` (an ``nn.Module`` or any callable).
        bf16: run the model under ``torch.autocast(dtype=torch.bfloat16)`` on the state's device type.
        compile: compile the model with ``torch.compile`` (the first call is slow: it traces and compiles).
        compile_mode: passed to ``torch.compile(mode=...)``.

    Returns:
        A velocity with the same signature; with both flags off, ``velocity`` itself. The wrapper keeps
        ``velocity``'s ``num_classes`` (read by :class:`kpe_lib.models.GuidedVelocity` for its null class).

    Example:
        >>> fast = accelerate(model, bf16=True)          # doctest: +SKIP
        >>> res = sample(fast, x0, n_steps=250)           # doctest: +SKIP
    """
    if not callable(velocity):
        raise ValueError(f"velocity must be callable, got {type(velocity).__name__}")
    if not (bf16 or compile):
        return velocity
    fn = torch.compile(velocity, mode=compile_mode) if compile else velocity

    def wrapped(x: torch.Tensor, t: torch.Tensor, **extras: Any) -> torch.Tensor:
        if bf16:
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                out = fn(x, t, **extras)
        else:
            out = fn(x, t, **extras)
        return out.to(x.dtype)

    wrapped.__wrapped__ = velocity  # type: ignore[attr-defined]
    if hasattr(velocity, "num_classes"):  # a class-conditional model stays one for guidance
        wrapped.num_classes = velocity.num_classes  # type: ignore[attr-defined]
    return wrapped
