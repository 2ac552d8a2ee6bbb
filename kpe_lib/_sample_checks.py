"""Input checks of ``kpe_lib.sample``: the arguments before the first step, the velocity's first output, the gain.

Each check raises one error that names the argument, what was given and what is allowed, so a bad input
never turns into a silent wrong energy: a velocity of shape (B, 1) for x of shape (B, d) would broadcast and
halve the energy, a gain of 0 freezes the flow and a negative one runs it backwards, a misspelt ``solvr=``
would be handed to the model (and ignored by a model taking ``**kwargs``).
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Callable

import torch

from kpe_lib._numbers import as_float

__all__ = ["check_x0", "check_tau_split", "check_model_kwargs", "check_velocity_output", "check_gain_value",
           "explain_first_call_error"]


def check_x0(x0: Any) -> None:
    """``x0`` must be a floating-point tensor (B, ...) with finite entries."""
    if not isinstance(x0, torch.Tensor) or x0.ndim < 1 or not x0.is_floating_point():
        got = f"{x0.dtype} tensor of shape {tuple(x0.shape)}" if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"x0 must be a floating-point tensor of shape (B, ...), got {got}")
    bad = int((~torch.isfinite(x0)).sum())
    if bad:
        raise ValueError(f"x0 contains {bad} NaN or infinite value(s) of {x0.numel()}; the initial noise must be "
                         "finite (nothing was sampled)")


def check_tau_split(tau_split: Any, source: str = "tau_split") -> float:
    """The early/late boundary as a float in [0, 1] (any real number type; NaN, booleans refused)."""
    return as_float(tau_split, source, minimum=0.0, maximum=1.0)


def _explicit_parameters(velocity: Callable[..., Any]) -> tuple[set[str], bool] | None:
    """(named parameters, accepts **kwargs) of the velocity's signature, or None when it cannot be read."""
    try:
        params = inspect.signature(velocity).parameters.values()
    except (TypeError, ValueError):
        return None
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind is p.VAR_KEYWORD for p in params)


def check_model_kwargs(velocity: Callable[..., Any], model_kwargs: dict[str, Any], sampler: Callable[..., Any]
                       ) -> None:
    """Refuse a keyword that looks like a misspelt keyword of ``sampler``, or one the velocity cannot take.

    ``sampler``'s own keywords are its keyword-only parameters. A keyword close to one of them (``solvr`` for ``solver``) is refused unless the velocity's
    signature names it explicitly; one the velocity's signature cannot accept (no such parameter, no
    ``**kwargs``) is refused with the velocity's parameters listed.
    """
    if not model_kwargs:
        return
    own = sorted(p.name for p in inspect.signature(sampler).parameters.values() if p.kind is p.KEYWORD_ONLY)
    signature = _explicit_parameters(velocity)
    for key in model_kwargs:
        close = difflib.get_close_matches(key, own, n=1, cutoff=0.75)
        if close and (signature is None or key not in signature[0]):
            raise TypeError(f"sample() got the keyword {key!r}: did you mean {close[0]}=? Keywords other than "
                            f"sample's own ({', '.join(own)}) are passed to the velocity, which does not name "
                            f"{key!r} as a parameter")
        if signature is not None and key not in signature[0] and not signature[1]:
            raise TypeError(f"sample() got the keyword {key!r}, which is not one of its own ({', '.join(own)}) "
                            f"and which the velocity does not accept (its keywords: "
                            f"{', '.join(sorted(signature[0])) or 'none'})")


def check_velocity_output(v: Any, x: torch.Tensor) -> None:
    """The velocity's first output must be a tensor of ``x``'s shape, dtype and device."""
    if isinstance(v, (tuple, list)):
        raise ValueError(f"the velocity returned a {type(v).__name__} of {len(v)} item(s), not a tensor; if the "
                         "velocity is its first item, pass e.g. lambda x, t: model(x, t)[0]")
    if not isinstance(v, torch.Tensor):
        hint = ("; it looks like a model output object: pass e.g. lambda x, t: model(x, t).sample"
                if hasattr(v, "sample") else "")
        raise ValueError(f"the velocity must return a tensor of x's shape, got {type(v).__name__}{hint}")
    if v.shape != x.shape:
        raise ValueError(f"the velocity returned shape {tuple(v.shape)} for x of shape {tuple(x.shape)}; it must "
                         "return one value per coordinate, the shape of x (a smaller shape would broadcast "
                         "and give a wrong path and energy)")
    if v.dtype != x.dtype:
        raise ValueError(f"the velocity returned {v.dtype} for x0 of {x.dtype}: the state would silently change "
                         f"dtype; give x0 the model's dtype (x0.to({v.dtype})) or the model x0's")
    if v.device != x.device:
        raise ValueError(f"the velocity returned a tensor on {v.device} for x0 on {x.device}; put x0 and the "
                         "model on the same device")


def check_gain_value(eta: Any, t: float) -> None:
    """A gain value (float, 0-d or (B,) tensor) must be finite and > 0: 0 freezes the flow, < 0 reverses it."""
    if isinstance(eta, torch.Tensor) and eta.ndim > 0:
        good = bool((torch.isfinite(eta) & (eta > 0)).all())
        shown = f"values in [{float(eta.min()):.4g}, {float(eta.max()):.4g}]" if not good else ""
    else:
        try:
            value = float(eta)
        except (TypeError, ValueError):
            raise ValueError(f"gain(t) must return a number or a tensor, got {type(eta).__name__} at "
                             f"t = {t:.6g}") from None
        good, shown = math.isfinite(value) and value > 0, f"{value!r}"
    if not good:
        raise ValueError(f"gain(t) must be finite and > 0 (0 freezes the flow, a negative gain runs it "
                         f"backwards), got {shown} at t = {t:.6g}")


def explain_first_call_error(velocity: Any, x0: torch.Tensor, err: Exception) -> Exception | None:
    """A clearer error for a first call that failed because the model's weights and x0 differ in dtype."""
    if not isinstance(velocity, torch.nn.Module) or not isinstance(err, RuntimeError):  # torch's dtype errors
        return None
    dtypes = {p.dtype for p in velocity.parameters() if p.is_floating_point()}
    if not dtypes or x0.dtype in dtypes:
        return None
    model = ", ".join(sorted(str(d) for d in dtypes))
    return ValueError(f"x0 is {x0.dtype} but the model's weights are {model} (the model failed on its first "
                      f"call: {type(err).__name__}: {str(err)[:200]}); pass x0.to({model.split(',')[0]}) or "
                      "cast the model")
