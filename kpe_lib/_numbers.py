"""Argument checks shared by the whole library: numbers of any numeric type, booleans, finite ranges.

Numbers mean the same whatever their type: a Python ``int``, a numpy integer (``np.int64(10)``) and a 0-d
integer tensor are all the integer 10, and every real number type (and a 0-d floating tensor) is a float.
Booleans are refused where a number is meant (``batch_size=True`` is not 1), and strings are refused where a
boolean is meant (``grayscale="no"`` would otherwise be truthy). Every error is a ``ValueError`` naming the
parameter, the value given and what is allowed.

Example:
    >>> import numpy as np
    >>> as_int(np.int64(10), "n_steps", minimum=1)
    10
    >>> as_float(np.float32(0.5), "tau_split", minimum=0.0, maximum=1.0)
    0.5
"""
from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["as_int", "as_float", "as_bool"]


def _unwrap(value: Any) -> Any:
    """A one-element, 0-d tensor or numpy array becomes its Python scalar; anything else is returned as is."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, numbers.Number):
        return value.item()
    return value


def _show(value: Any) -> str:
    """``repr(value)``, shortened to 60 characters (a 400-digit integer is shown by its length)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:25]}...{text[-10:]} ({len(text)} characters)"


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ in ("bool_", "bool") and hasattr(value, "dtype")


def _real(value: Any, name: str, allowed: str) -> numbers.Real:
    """``value`` unwrapped (numpy scalar, 0-d tensor) as a real number; ValueError for a boolean or a non-real."""
    real = _unwrap(value)
    if _is_bool(real) or not isinstance(real, numbers.Real):
        raise ValueError(f"{name} must be {allowed}, got {type(value).__name__} {_show(value)}")
    return real


def as_int(value: Any, name: str, *, minimum: int | None = None, or_none: bool = False) -> int | None:
    """``value`` as a Python int: ints, numpy integers, 0-d integer tensors, and integral floats are accepted
    (and None when ``or_none``).

    Raises:
        ValueError: a boolean, a string, a non-integral number, or one below ``minimum``; the message names
            ``name``, the value and what is allowed.
    """
    allowed = "an integer" + (f" >= {minimum}" if minimum is not None else "") + (" or None" if or_none else "")
    if value is None and or_none:
        return None
    raw, value = value, _real(value, name, allowed)
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(value) and float(value).is_integer()):
            raise ValueError(f"{name} must be {allowed}, got {_show(raw)}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be {allowed}, got {_show(raw)}")
    return value


def as_float(value: Any, name: str, *, minimum: float | None = None, maximum: float | None = None,
             open_min: bool = False, open_max: bool = False, or_none: bool = False) -> float | None:
    """``value`` as a finite Python float within the given bounds (closed unless ``open_min``/``open_max``;
    None accepted when ``or_none``).

    Raises:
        ValueError: a boolean, a string, NaN, an infinity, a number too large for a float, or one out of
            range; the message names ``name``, the value and the allowed range.
    """
    lo = "" if minimum is None else f"{'>' if open_min else '>='} {minimum:g}"
    hi = "" if maximum is None else f"{'<' if open_max else '<='} {maximum:g}"
    allowed = "a finite number" + (f" {lo}" if lo else "") + (" and" if lo and hi else "") + (f" {hi}" if hi else "")
    allowed += " or None" if or_none else ""
    if value is None and or_none:
        return None
    raw, value = value, _real(value, name, allowed)
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} must be {allowed}, got {_show(raw)} (too large for a float)") from None
    bad = not math.isfinite(value)
    if minimum is not None:
        bad = bad or (value <= minimum if open_min else value < minimum)
    if maximum is not None:
        bad = bad or (value >= maximum if open_max else value > maximum)
    if bad:
        raise ValueError(f"{name} must be {allowed}, got {_show(raw)}")
    return value


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a Python bool: ``True``/``False``, numpy booleans and 0-d boolean tensors only.

    Raises:
        ValueError: anything else, in particular strings such as ``"no"`` (truthy) and numbers.
    """
    raw = value
    value = _unwrap(value)
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, got {type(raw).__name__} {_show(raw)}")
    return bool(value)
