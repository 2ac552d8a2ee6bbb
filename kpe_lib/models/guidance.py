"""Classifier-free guidance (Ho & Salimans 2022) as a velocity field, and guided sampling with KPE.

Class-conditional sampling with classifier-free guidance, KTS and per-sample KPE (Mathematics §2, 3, 5).

The semantic-strength experiment of the paper (Mathematics §6, ImageNet-256 with CFG 1.5) samples a
class-conditional flow model with guidance, measures each sample's kinetic path energy and compares the
semantics of low- and high-KPE samples. This module runs that sampling in memory-bounded batches for any
class-conditional velocity and any guidance wrapper:

- the velocity that is integrated is the *guided* field ``v_w = v(x, t, null) + w (v(x, t, y) - v(x, t, null))``,
  so KPE is the energy of what the sampler actually follows (Mathematics §2), shaped by the KTS gain when one is
  given (Mathematics §3);
- ``nfe`` counts velocity calls per sample path (N per Euler run) and ``model_evals`` the network
  evaluations behind them (two per call for ``w`` other than 0 and 1).

Example:
    >>> noise = class_balanced_noise(30, (3, 16, 16), num_classes=10, seed=0)
    >>> run = sample_guided(unet, noise.x0, noise.labels, scale=1.5, n_steps=40)   # doctest: +SKIP
    >>> run.kpe.shape, run.model_evals                                             # doctest: +SKIP
    (torch.Size([30]), 80)
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import nn
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._progress import progress_enabled
from kpe_lib.models.common import expand_time
from kpe_lib.sampling import sample

__all__ = ["GuidedVelocity", "NoiseBatch", "GuidedSamples", "class_balanced_noise", "sample_guided",
           "gain_description"]

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

    def velocity_and_guidance(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(guided velocity, guidance part ``(w - 1)(v_y - v_null)``), both (B, ...), from the same model calls.

        ``sample(..., diagnostics=True)`` calls this instead of ``forward`` to record the guidance energy
        (Mathematics §2.5). The velocity equals ``forward``'s; without labels the guidance part is 0, and with
        ``w = 0`` the conditional velocity is evaluated as well (one batched call of two evaluations).
        """
        if y is None or self.scale == 1.0:
            v = self.forward(x, t, y)
            return v, torch.zeros_like(v)
        b = x.shape[0]
        tb = expand_time(t, b, x.device)
        out = self.model(torch.cat([x, x]), torch.cat([tb, tb]), y=torch.cat([torch.as_tensor(y, device=x.device),
                                                                            self._null(b, x.device)]))
        v_cond, v_uncond = out[:b], out[b:]
        if self.scale == 0.0:
            return self.model(x, t, y=None), v_uncond - v_cond
        return v_uncond + self.scale * (v_cond - v_uncond), (self.scale - 1.0) * (v_cond - v_uncond)

    def _null(self, batch: int, device: torch.device) -> torch.Tensor:
        null = getattr(self.model, "num_classes", None)
        if null is None:
            raise ValueError("GuidedVelocity needs a class-conditional model with a `num_classes` attribute "
                             "(its null class index)")
        return torch.full((batch,), int(null), dtype=torch.long, device=device)


Guide = Callable[[Any, float], Callable[..., torch.Tensor]]


@dataclass
class NoiseBatch:
    """Starting noise and the class each sample is asked to be.

    Attributes:
        x0: (B, *shape) standard normal noise.
        labels: (B,) long, ``i mod K`` for sample i, so every class gets ``B // K`` or one more samples.
        seed: the seed of the generator that drew ``x0``.
    """

    x0: torch.Tensor
    labels: torch.Tensor
    seed: int


def class_balanced_noise(n: int, shape: Sequence[int], num_classes: int, seed: int = 0,
                         dtype: torch.dtype = torch.float32) -> NoiseBatch:
    """Seeded noise ``x0 ~ N(0, I)`` of shape (n, *shape) and balanced class labels ``i mod K``.

    The first ``m`` samples of a call with ``n >= m`` equal a call with ``n = m`` (same seed), so runs of
    different sizes share their common prefix.

    Raises:
        ValueError: n < 1, num_classes < 1 or an empty/negative shape.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1; got {num_classes!r}")
    shape = tuple(int(s) for s in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape must be a non-empty tuple of positive sizes; got {shape}")
    gen = torch.Generator().manual_seed(int(seed))
    x0 = torch.randn((n, *shape), generator=gen, dtype=dtype)
    return NoiseBatch(x0=x0, labels=torch.arange(n) % num_classes, seed=int(seed))


def gain_description(gain: Any) -> dict[str, Any] | None:
    """A JSON-ready description of a gain: the KTS fields, ``{"callable": name}`` otherwise, None for none."""
    if gain is None:
        return None
    if dataclasses.is_dataclass(gain) and not isinstance(gain, type):
        return {"kind": type(gain).__name__, **dataclasses.asdict(gain)}
    return {"callable": getattr(gain, "__name__", type(gain).__name__)}


@dataclass
class GuidedSamples:
    """Samples of a guided (and possibly KTS-shaped) run with their kinetic path energies.

    Attributes:
        x: (B, ...) final states in the model's space (pixels scaled as in training, or latents).
        labels: (B,) the conditioning classes.
        kpe: (B,) energy of the shaped guided velocity ``1/2 int ||eta v_w||^2 dt`` (Mathematics §2).
        kpe_raw: (B,) energy of the unshaped guided velocity along the same path.
        kpe_early, kpe_late: (B,) split at the gain's ``tau_split`` (0.6 without a gain).
        energy: (N, B) per-step energy profile.
        grid: (N + 1,) time grid.
        nfe: velocity calls per sample path (N x solver stages).
        model_evals: network evaluations per sample path (``nfe`` x evaluations per guided call).
        scale: the guidance weight w.
        gain: description of the KTS gain (None: plain flow matching).
        solver: the solver's name.
        seconds: wall time of the run.
        guidance_energy: (B,) ``1/2 int ||eta (w - 1)(v_y - v_null)||^2 dt`` (``diagnostics=True``), else None.
        conditional_energy: (B,) ``1/2 int ||eta v_y||^2 dt`` along the same path (``diagnostics=True``), else None.
            With the cross term ``int eta^2 <v_y, (w - 1)(v_y - v_null)> dt`` they add up to ``kpe``.
    """

    x: torch.Tensor
    labels: torch.Tensor
    kpe: torch.Tensor
    kpe_raw: torch.Tensor
    kpe_early: torch.Tensor
    kpe_late: torch.Tensor
    energy: torch.Tensor
    grid: torch.Tensor
    nfe: int
    model_evals: int
    scale: float
    gain: dict[str, Any] | None
    solver: str
    seconds: float
    guidance_energy: torch.Tensor | None = None
    conditional_energy: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.x.shape[0])


def sample_guided(model: Any, x0: torch.Tensor, labels: torch.Tensor, *, scale: float, gain: Any = None,
                  n_steps: int = 50, grid_kind: str = "uniform", solver: str = "euler", batch_size: int = 256,
                  guide: Guide = GuidedVelocity, progress: bool | None = None,
                  diagnostics: bool = False) -> GuidedSamples:
    """Sample a class-conditional model with guidance weight ``scale``, in batches, tracking KPE.

    Args:
        model: the class-conditional network (e.g. ``UNet(num_classes=K)`` in eval mode, or a paper-scale
            latent transformer) that ``guide`` wraps.
        x0: (B, ...) starting noise.
        labels: (B,) integer classes.
        scale: guidance weight w >= 0 (1 = conditional model, 0 = unconditional).
        gain: KTS gain ``t -> eta`` (e.g. ``KTS(alpha0=0.05)``) or None.
        n_steps: solver steps N on the ``grid_kind`` grid.
        grid_kind: "uniform" or "cosine".
        solver: "euler", "midpoint", "heun" or "rk4".
        batch_size: samples per batch (bounds memory; results do not depend on it beyond float rounding
            of batched matrix products).
        guide: ``guide(model, scale) -> v(x, t, y=labels)``; default ``GuidedVelocity``.
        progress: a tqdm bar over batches (None: follows ``KPE_PROGRESS`` / ``CI``).
        diagnostics: also split every path's energy into its conditional and guidance parts, from the
            velocities already evaluated (no extra network calls, except at ``w = 0``, where the conditional
            velocity is evaluated as well; needs a ``guide`` with ``velocity_and_guidance``, as
            :class:`GuidedVelocity` has).

    Returns:
        GuidedSamples (energies in float64, states in ``x0``'s dtype).

    Raises:
        ValueError: labels that do not match ``x0``, or a batch size < 1.
    """
    if not isinstance(x0, torch.Tensor) or x0.ndim < 2 or not x0.is_floating_point():
        raise ValueError("x0 must be a floating-point tensor of shape (B, ...)")
    labels = torch.as_tensor(labels)
    if labels.shape != (x0.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({x0.shape[0]},); got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    velocity = guide(model, scale)
    if diagnostics and not callable(getattr(velocity, "velocity_and_guidance", None)):
        raise ValueError(f"diagnostics=True needs a guide whose velocity has a velocity_and_guidance method "
                         f"(as GuidedVelocity has); {type(velocity).__name__} has none")
    start = time.perf_counter()
    parts = []
    starts = range(0, x0.shape[0], batch_size)
    for s in tqdm(starts, desc=f"guided sampling (w={scale:g})", disable=not progress_enabled(progress),
                  leave=False):
        xb, yb = x0[s:s + batch_size], labels[s:s + batch_size].to(x0.device)
        parts.append(sample(velocity, xb, n_steps=n_steps, grid_kind=grid_kind, solver=solver, gain=gain, y=yb,
                            diagnostics=diagnostics))
    cat = lambda name, dim=0: torch.cat([getattr(p, name) for p in parts], dim=dim)  # noqa: E731
    first = parts[0]
    split = {}
    if diagnostics:
        split = {name: torch.cat([getattr(p.diagnostics, name) for p in parts]) for name in
                 ("guidance_energy", "conditional_energy")}
    return GuidedSamples(
        x=cat("x"), labels=labels.clone(), kpe=cat("kpe"), kpe_raw=cat("kpe_raw"), kpe_early=cat("kpe_early"),
        kpe_late=cat("kpe_late"), energy=cat("energy", 1), grid=first.grid, nfe=first.nfe,
        model_evals=first.nfe * int(getattr(velocity, "evals_per_call", 1)), scale=float(scale),
        gain=gain_description(gain), solver=solver, seconds=time.perf_counter() - start, **split)
