"""Reading local state dicts and loading them strictly, with errors that say what is wrong.

Shared by the paper-scale models (``sit.py``, ``vae.py``). Nothing here downloads: every path is a local file.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

_SHOW = 12  # names listed per category in an error message


def read_state_dict(path: str | os.PathLike, what: str, nested_keys: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.pt``/``.pth``/``.bin``/``.ckpt`` (torch pickle) or ``.safetensors`` file.

    Args:
        path: the file.
        what: a short name of the model, for error messages (e.g. "SiT-XL/2").
        nested_keys: keys under which a training checkpoint may hold the weights, tried in order
            (e.g. ``("ema", "model")``); a plain state dict is used as is.

    Returns:
        A flat ``{name: tensor}`` dict on the CPU, floating-point tensors in float32.

    Raises:
        FileNotFoundError: ``path`` does not exist or is a folder.
        ImportError: a ``.safetensors`` file without the ``safetensors`` package.
        ValueError: the file does not hold a state dict.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} checkpoint not found at {str(p)!r} (a local file is required; nothing is "
                                "downloaded)")
    if p.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading {p.name} needs the 'safetensors' package (pip install safetensors), or "
                              "use the .bin/.pt version of the same weights") from err
        state = load_file(str(p), device="cpu")
    else:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    if isinstance(state, Mapping):
        for key in nested_keys:
            if key in state and isinstance(state[key], Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{p} does not hold a {what} state dict (a mapping of parameter names to tensors"
                         + (f", possibly under one of the keys {list(nested_keys)}" if nested_keys else "") + ")")
    # half-precision exports are widened: the models run in float32 (autocast handles bf16, kpe_lib.accelerate)
    return {str(k): (v.float() if v.is_floating_point() else v) for k, v in state.items()}


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    return shown + (f", ... ({len(names) - _SHOW} more)" if len(names) > _SHOW else "")


def load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], what: str, source: str = "checkpoint") -> None:
    """Copy ``state`` into ``model``, requiring the exact same names and shapes.

    Build big models on the meta device (``with torch.device("meta")``): the names and shapes are checked
    before any memory is used, and the checkpoint's tensors then become the parameters (no copy).

    Args:
        model: the freshly built model (on the meta device or materialised).
        state: ``{name: tensor}``.
        what: model name for the error message.
        source: where ``state`` came from (a path), for the error message.

    Raises:
        ValueError: listing the missing keys, the unexpected keys and the shape mismatches, all at once.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                        for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        parts = [f"{source} does not match the {what} architecture:"]
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_listing(mismatched)}")
        parts.append("check that the checkpoint is the one this config describes")
        raise ValueError("\n  ".join(parts))
    # a model built on the meta device (no memory yet) takes the checkpoint's tensors as its own
    on_meta = any(t.is_meta for t in own.values())
    model.load_state_dict(dict(state), strict=True, assign=on_meta)
