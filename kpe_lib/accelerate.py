"""Optional speed-ups for paper-scale sampling: bf16 autocast and ``torch.compile`` (off by default).

Both wrap a velocity field and keep the Mathematics §1 convention ``v(x, t, **extras)``; the sampler, its gain and its
energy accumulation (float64) are untouched, so only the model's arithmetic changes. The returned velocity is
cast back to the state's dtype, so KPE sums stay in full precision.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

Velocity = Callable[..., torch.Tensor]

#: CPU flags (``/proc/cpuinfo``) of native bfloat16 arithmetic; without them bf16 autocast is emulated and was
#: 12x slower than float32 for a UNet training step on an AMD EPYC.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes in bfloat16 natively (one of :data:`BF16_CPU_FLAGS`; False where unknown).

    Example:
        >>> cpu_has_bf16("flags : fpu sse avx512f avx512_bf16"), cpu_has_bf16("flags : fpu sse avx2")
        (True, False)
    """
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    flags = {word for line in cpuinfo.splitlines() if line.startswith("flags") for word in line.split()}
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_bf16(flag: bool | str, device: str | torch.device = "cpu") -> bool:
    """A ``*_bf16`` parameter as a bool: True / False as given; ``"auto"`` is True where ``device`` computes
    bfloat16 natively (a CUDA device that supports it, a CPU with :data:`BF16_CPU_FLAGS`), else False.

    Raises:
        ValueError: any other value.
    """
    if isinstance(flag, bool):
        return flag
    if flag != "auto":
        raise ValueError(f"bf16 must be true, false or 'auto', got {flag!r}")
    dev = torch.device(device)
    if dev.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return dev.type == "cpu" and cpu_has_bf16()


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
