"""The guided SiT velocity in this project's time convention, and loading the released SiT weights.

The released SiT code and weights already use this project's convention (Mathematics §1: t = 0 noise,
t = 1 data; see :mod:`kpe_lib.models.paper.sit`), so ``time_convention="sit"`` passes ``t`` and the output
through unchanged; ``"data_at_zero"`` wraps the network in :class:`kpe_lib.adapters.ReversedTime` for
checkpoints trained with t = 0 at the data.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from kpe_lib.adapters import ReversedTime
from kpe_lib.models.common import expand_time
from kpe_lib.models.paper._checkpoint import load_strict, read_state_dict
from kpe_lib.models.paper.sit import SiT, SiTConfig

__all__ = ["TIME_CONVENTIONS", "SiTVelocity", "load_sit"]

TIME_CONVENTIONS = ("sit", "data_at_zero")


class SiTVelocity(nn.Module):
    """Classifier-free guided SiT velocity in the project's convention: ``v_w(x, t, y=labels)`` (Mathematics §1, 5).

    ``v_w = v(x, t, null) + w (v(x, t, y) - v(x, t, null))`` with the null class = row K of the label table.
    ``w = 1`` (conditional) and ``w = 0`` (unconditional) run one plain forward, so they equal the network's
    output exactly; other ``w`` batch ``[conditional; null]`` in one forward (``evals_per_call`` = 2).

    Args:
        model: a :class:`SiT` (eval mode; ``y=None`` means the null class, ``num_classes`` its index).
        guidance_scale: w >= 0 (the paper: 1.5).
        cfg_channels: guide only the first this many latent channels and leave the rest conditional. None
            (default) guides all channels, the standard CFG. The official ``sample.py`` guides only 3 of the 4
            latent channels ("for exact reproducibility reasons", inherited from DiT): pass 3 to reproduce it.
        time_convention: "sit" (default; the released weights, t = 0 noise: identity) or "data_at_zero"
            (a network trained with t = 0 data: wrapped in ``ReversedTime``, ``v(x, t) = -u(x, 1 - t)``).
        autocast_dtype: run the network under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16`` on a
            GPU, about 2x faster for SiT-XL/2); the guided velocity is returned in ``x``'s dtype, so the
            sampler's state and KPE sums keep full precision. None (default): plain float32.

    Example:
        >>> v = SiTVelocity(SiT("tiny").eval(), guidance_scale=1.5)
        >>> v(torch.randn(2, 4, 8, 8), 0.3, y=torch.tensor([1, 2])).shape
        torch.Size([2, 4, 8, 8])
    """

    def __init__(self, model: nn.Module, guidance_scale: float, cfg_channels: int | None = None,
                 time_convention: str = "sit", autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        w = float(guidance_scale)
        if not math.isfinite(w) or w < 0:
            raise ValueError(f"guidance_scale must be a finite number >= 0; got {guidance_scale}")
        if getattr(model, "num_classes", None) is None:
            raise ValueError("model must be class-conditional with a `num_classes` attribute (its null class index)")
        if cfg_channels is not None and (not isinstance(cfg_channels, int) or cfg_channels < 1):
            raise ValueError(f"cfg_channels must be None (all channels) or an integer >= 1; got {cfg_channels!r}")
        if time_convention not in TIME_CONVENTIONS:
            raise ValueError(f"time_convention must be one of {TIME_CONVENTIONS}; got {time_convention!r}")
        if autocast_dtype is not None and not (isinstance(autocast_dtype, torch.dtype)
                                               and autocast_dtype.is_floating_point):
            raise ValueError(f"autocast_dtype must be None or a floating torch.dtype; got {autocast_dtype!r}")
        self.model, self.scale, self.cfg_channels, self.time_convention = model, w, cfg_channels, time_convention
        self.autocast_dtype = autocast_dtype
        self._net = ReversedTime(model) if time_convention == "data_at_zero" else model

    @property
    def evals_per_call(self) -> int:
        """Network evaluations per velocity call (1 when w is 0 or 1, else 2)."""
        return 1 if self.scale in (0.0, 1.0) else 2

    def forward(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Guided velocity at latents ``x`` (B, C, H, W), time ``t`` (scalar or (B,)), labels ``y`` (B,)."""
        if self.autocast_dtype is None:
            return self._guided(x, t, y)
        with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
            v = self._guided(x, t, y)
        return v.to(x.dtype)

    def _guided(self, x: torch.Tensor, t: float | torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        if y is None or self.scale == 0.0:
            return self._net(x, t, y=None)
        if self.scale == 1.0:
            return self._net(x, t, y=y)
        b = x.shape[0]
        tb = expand_time(t, b, x.device)
        null = torch.full((b,), int(self.model.num_classes), dtype=torch.long, device=x.device)
        v = self._net(torch.cat([x, x]), torch.cat([tb, tb]), y=torch.cat([torch.as_tensor(y, device=x.device), null]))
        v_cond, v_null = v[:b], v[b:]
        guided = v_null + self.scale * (v_cond - v_null)
        if self.cfg_channels is None or self.cfg_channels >= x.shape[1]:
            return guided
        k = self.cfg_channels
        return torch.cat([guided[:, :k], v_cond[:, k:]], dim=1)


def load_sit(path: str | os.PathLike, config: SiTConfig | str = "SiT-XL/2", device: str | torch.device = "cpu"
             ) -> SiT:
    """Build a SiT and load a local checkpoint into it, strictly (names and shapes).

    Args:
        path: ``SiT-XL-2-256x256.pt`` (the official release: a plain state dict) or a training checkpoint
            holding the weights under "ema" (preferred) or "model"; ``.safetensors`` also accepted.
        config: the architecture the checkpoint was trained with.
        device: where the model goes.

    Returns:
        The model in eval mode.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the checkpoint does not match ``config`` (missing / unexpected keys and shape mismatches
            are listed).
    """
    state = read_state_dict(path, "SiT", nested_keys=("ema", "model", "state_dict"))
    with torch.device("meta"):
        model = SiT(config)
    load_strict(model, state, model.config.name, source=str(path))
    return model.to(device).eval()

