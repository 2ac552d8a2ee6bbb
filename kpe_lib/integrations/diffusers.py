"""Diffusers' flow-matching pipelines (SD3, FLUX, SANA) with kpe_lib's sampler: KPE, KTS, diagnostics.

Diffusers runs time the other way (Mathematics §1.1): ``x_sigma = (1 - sigma) x_data + sigma noise`` from
sigma = 1 (noise) to sigma = 0 (data), the transformer predicts ``dx/dsigma = noise - x_data`` and is called with a
timestep of ``sigma x 1000`` (SD3; FLUX pipelines pass sigma itself). In kpe_lib's time ``t = 1 - sigma``:

- the grid is ``t_i = 1 - sigma_i`` over the scheduler's N + 1 sigmas (its shift included, terminal 0 included):
  :func:`flow_match_grid`;
- the velocity is ``v(x, t) = -transformer(x, timestep=sigma x scale)``: :class:`FlowMatchVelocity`, with
  classifier-free guidance on a batch ``[negative; positive]`` as the pipelines build it;
- KTS's gain eta(t) is applied in that mirrored time, so a launch acts near the noise (sigma near 1) and a landing
  near the data;
- with eta = 1, Euler on that grid is the scheduler's own loop (``FlowMatchEulerDiscreteScheduler.step``), and the
  state stays float32 even for bf16 latents (the scheduler rounds it back to the latents' dtype every step).

Example (an SD3 pipeline ``pipe`` already built, prompts encoded with ``pipe.encode_prompt``)::

    res = sample_flow_match(pipe.transformer, pipe.scheduler, latents, num_inference_steps=28,
                            cond=dict(encoder_hidden_states=pe, pooled_projections=ppe),
                            uncond=dict(encoder_hidden_states=npe, pooled_projections=nppe),
                            guidance_scale=7.0, gain=KTS(beta0=0.02), diagnostics=True)
    res.kpe, res.diagnostics.guidance_share, res.x   # latents for pipe.vae.decode(...)
"""
from __future__ import annotations

import bisect
from typing import Any, Mapping

import torch
from torch import nn

from kpe_lib.adapters import as_velocity_tensor
from kpe_lib.grids import validate_grid
from kpe_lib.sampling import SampleResult, sample

__all__ = ["sigmas_to_grid", "flow_match_grid", "FlowMatchVelocity", "sample_flow_match"]

_SNAP = 1e-6  # a first sigma within this of 1 (float32 rounding of a shift) is taken as exactly 1


def sigmas_to_grid(sigmas: Any) -> torch.Tensor:
    """kpe_lib's time grid ``t = 1 - sigma`` (N + 1,), float64, from a scheduler's sigmas (N + 1,).

    Args:
        sigmas: ``scheduler.sigmas`` after ``scheduler.set_timesteps(N)``: N + 1 values decreasing from 1 (noise)
            to 0 (data), the terminal 0 included.

    Raises:
        ValueError: values that do not decrease from 1 to 0, naming how to build them from the scheduler
            (``scheduler.timesteps`` has no terminal node and is scaled by 1000; an increasing array is
            already flipped).
    """
    s = torch.as_tensor(sigmas).detach().to("cpu", torch.float64).reshape(-1)
    how = ("pass scheduler.sigmas after scheduler.set_timesteps(N) (N + 1 values from 1 to 0, the terminal 0 "
           "included), or use flow_match_grid(scheduler, N)")
    if s.numel() < 2:
        raise ValueError(f"sigmas must hold N + 1 >= 2 values, got {s.numel()}; {how}")
    if float(s.max()) > 1.0 + _SNAP:
        raise ValueError(f"sigmas must lie in [0, 1], got a maximum of {float(s.max()):.6g}: these look like "
                         f"scheduler.timesteps (sigma x 1000, without the terminal node); {how}")
    if not bool((s[1:] < s[:-1]).all()):
        flipped = " (they increase: kpe_lib's grid t = 1 - sigma is built here, pass the sigmas unflipped)" \
            if bool((s[1:] > s[:-1]).all()) else ""
        raise ValueError(f"sigmas must decrease strictly from 1 (noise) to 0 (data){flipped}; {how}")
    if abs(float(s[0]) - 1.0) > _SNAP or float(s[-1]) != 0.0:
        raise ValueError(f"sigmas must run from 1 to 0, got [{float(s[0]):.6g}, ..., {float(s[-1]):.6g}]; "
                         f"{'the terminal 0 is missing: ' if float(s[-1]) > 0 else ''}{how}")
    grid = 1.0 - s
    grid[0] = 0.0
    return validate_grid(grid)


def flow_match_grid(scheduler: Any, num_inference_steps: int, *, mu: float | None = None,
                    device: Any = None) -> torch.Tensor:
    """Set the scheduler's timesteps (``set_timesteps(N, mu=mu)``) and return kpe_lib's grid (N + 1,) from its sigmas.

    ``mu`` is the resolution-dependent shift of pipelines with ``use_dynamic_shifting`` (FLUX, SANA); the static
    ``shift`` of SD3 comes from the scheduler's config.
    """
    kwargs = {} if mu is None else {"mu": mu}
    scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    return sigmas_to_grid(scheduler.sigmas)


class FlowMatchVelocity(nn.Module):
    """A diffusers flow-matching transformer as ``v(x, t)`` in kpe_lib's time, with classifier-free guidance.

    ``v(x, t) = -out`` with ``out = transformer(hidden_states=x, timestep=sigma * timestep_scale, **cond)``,
    ``sigma = 1 - t``; with guidance (``uncond`` given, ``guidance_scale`` != 1) one batched call on
    ``[x; x]`` with every tensor of ``uncond`` and ``cond`` concatenated ``[uncond; cond]`` gives
    ``out = out_u + w (out_c - out_u)``, as the SD3 pipeline computes it.

    Args:
        transformer: e.g. ``SD3Transformer2DModel`` (any module taking ``hidden_states`` and ``timestep`` and
            returning an output object, a tuple or a tensor whose first item is the prediction).
        cond: keyword arguments of the conditional call (``encoder_hidden_states``, ``pooled_projections``, ...).
        uncond: those of the unconditional call (the negative prompt's embeddings), or None for no guidance.
        guidance_scale: w; guidance runs when ``uncond`` is given and w != 1.
        timestep_scale: the transformer's timestep per unit sigma (1000 for SD3 and SANA; 1 for FLUX, whose
            pipeline passes sigma).
        nodes: optional ``{t: timestep}`` of the grid's nodes (float32 values of t, see
            :func:`sample_flow_match`): there the scheduler's own float32 timesteps are passed, so the
            transformer sees exactly what the pipeline gives it; other times use ``(1 - t) * timestep_scale``.
    """

    def __init__(self, transformer: nn.Module, cond: Mapping[str, Any] | None = None,
                 uncond: Mapping[str, Any] | None = None, guidance_scale: float = 1.0,
                 timestep_scale: float = 1000.0, nodes: Mapping[float, float] | None = None) -> None:
        super().__init__()
        self.transformer, self.guidance_scale, self.timestep_scale = transformer, float(guidance_scale), timestep_scale
        self.cond, self.uncond = dict(cond or {}), (dict(uncond) if uncond is not None else None)
        if self.uncond is not None and set(self.uncond) != set(self.cond):
            raise ValueError(f"uncond must have the keywords of cond ({sorted(self.cond)}), got {sorted(self.uncond)}")
        self._keys = sorted(nodes) if nodes else []
        self._nodes = dict(nodes or {})

    @property
    def guided(self) -> bool:
        """True when a call runs the batched ``[uncond; cond]`` guidance."""
        return self.uncond is not None and self.guidance_scale != 1.0

    def timestep(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        """The transformer's timestep (batch,) float32 for kpe_lib time ``t`` (0-d or (B,))."""
        t0 = float(t.reshape(-1)[0])
        j = bisect.bisect_left(self._keys, t0)
        if j < len(self._keys) and self._keys[j] == t0:
            return torch.full((batch,), self._nodes[t0], dtype=torch.float32, device=t.device)
        return ((1.0 - t.to(torch.float64)) * self.timestep_scale).to(torch.float32).reshape(-1).expand(batch)

    def _call(self, x: torch.Tensor, timestep: torch.Tensor, kwargs: Mapping[str, Any]) -> torch.Tensor:
        out = self.transformer(hidden_states=x, timestep=timestep, **kwargs)
        if not isinstance(out, torch.Tensor):
            out = out[0] if isinstance(out, (tuple, list)) else getattr(out, "sample", out)
        return as_velocity_tensor(out, "FlowMatchVelocity")

    def velocity_and_guidance(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(velocity, guidance part ``(w - 1)(v_cond - v_uncond)``), both shaped like ``x`` (B, C, H, W)."""
        b = x.shape[0]
        ts = self.timestep(t, b)
        if not self.guided:
            out = self._call(x, ts, self.cond)
            return -out, torch.zeros_like(out)
        both = {k: torch.cat([self.uncond[k], v]) if isinstance(v, torch.Tensor) else v for k, v in self.cond.items()}
        out_u, out_c = self._call(torch.cat([x, x]), torch.cat([ts, ts]), both).chunk(2)
        diff = out_c - out_u
        return -(out_u + self.guidance_scale * diff), -(self.guidance_scale - 1.0) * diff

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.velocity_and_guidance(x, t)[0]


def sample_flow_match(transformer: nn.Module, scheduler: Any, latents: torch.Tensor, *, num_inference_steps: int,
                      cond: Mapping[str, Any] | None = None, uncond: Mapping[str, Any] | None = None,
                      guidance_scale: float = 1.0, mu: float | None = None, timestep_scale: float | None = None,
                      **sample_kwargs: Any) -> SampleResult:
    """Run a flow-matching pipeline's denoising loop with :func:`kpe_lib.sample` (Euler on the scheduler's grid).

    Args:
        transformer: the pipeline's transformer (``pipe.transformer``), in eval mode.
        scheduler: its ``FlowMatchEulerDiscreteScheduler`` (``pipe.scheduler``); ``set_timesteps`` is called.
        latents: the initial noise (B, C, H, W), e.g. ``pipe.prepare_latents(...)``; bf16 latents are integrated
            in float32 and the transformer gets them in bf16.
        num_inference_steps: N.
        cond, uncond, guidance_scale: see :class:`FlowMatchVelocity` (the encoded prompt and negative prompt).
        mu: the dynamic shift of FLUX/SANA-style schedulers (``use_dynamic_shifting``).
        timestep_scale: default ``scheduler.config.num_train_timesteps`` (SD3: 1000); 1 for FLUX.
        **sample_kwargs: passed to :func:`kpe_lib.sample`: ``gain`` (KTS, applied at t = 1 - sigma),
            ``diagnostics`` (the guidance energy comes with it), ``callback``, ``energy_norm``, ...

    Returns:
        The ``SampleResult`` (``x``: the final latents, float32 for half-precision input).
    """
    if timestep_scale is None:
        timestep_scale = float(scheduler.config.num_train_timesteps)
    grid = flow_match_grid(scheduler, num_inference_steps, mu=mu, device=latents.device)
    timesteps = scheduler.timesteps.detach().to("cpu", torch.float32)
    if timestep_scale != float(scheduler.config.num_train_timesteps):
        timesteps = scheduler.sigmas[:-1].detach().to("cpu", torch.float32) * timestep_scale
    node_t = grid[:-1].to(torch.float32).tolist()
    nodes = {t: float(ts) for t, ts in zip(node_t, timesteps.tolist())}
    velocity = FlowMatchVelocity(transformer, cond, uncond, guidance_scale, timestep_scale, nodes)
    sample_kwargs.setdefault("solver", "euler")
    return sample(velocity, latents, grid=grid, **sample_kwargs)
