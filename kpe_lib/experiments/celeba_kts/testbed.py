"""A training-free testbed at the paper's size: flow matching toward the Gaussian-smoothed empirical
distribution of n CelebA training images (Mathematics §4.7).

The exact velocity :class:`kpe_lib.SmoothedEmpiricalVelocity` of the mixture ``(1/n) sum_i N(a_i, sigma^2 I)``
needs no training. ``sigma = 0`` is the empirical closed form, which copies a training image from every
noise (F_mem = 100%); a wider atom lets samples land off the training images, so F_mem falls with
``sigma``. :func:`sigma_sweep` measures F_mem of plain FM over a grid of widths on shared noise and
:func:`pick_sigma` takes the width whose F_mem is nearest a target (the paper's 37.34% for plain FM on
CelebA), so that KTS and its budget controls can be run where the paper's model sits, at its training-set
size and resolution.

Example:
    >>> sweep = sigma_sweep(train, x0, [0.05, 0.08], nfe=50, n_boot=200)      # doctest: +SKIP
    >>> pick_sigma(sweep, target=0.3734)                                      # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch

from kpe_lib.closed_form import SmoothedEmpiricalVelocity
from kpe_lib.experiments.celeba_kts.configs import ConfigEval, SamplerSpec, run_config

__all__ = ["testbed_velocity", "sigma_sweep", "pick_sigma"]


def testbed_velocity(train: torch.Tensor, sigma: float, dtype: torch.dtype = torch.float32
                     ) -> SmoothedEmpiricalVelocity:
    """The smoothed empirical field of ``train`` (n, C, H, W) with atom width ``sigma`` (>= 0), computed in
    ``dtype`` (float32 by default: half the cost of float64 and far below the resolution of F_mem)."""
    return SmoothedEmpiricalVelocity(train, sigma, dtype=dtype)


def sigma_sweep(train: torch.Tensor, x0: torch.Tensor, sigmas: Sequence[float], *, nfe: int, n_boot: int = 1000,
                seed: int = 0, batch_size: int | None = None, dtype: torch.dtype = torch.float32
                ) -> dict[float, ConfigEval]:
    """Plain FM (Euler, ``nfe`` steps) of the noise ``x0`` (B, C, H, W) toward the smoothed empirical
    distribution of ``train`` at every width in ``sigmas``; F_mem against ``train`` itself.

    Returns:
        sigma -> evaluation, in the order of ``sigmas``.

    Raises:
        ValueError: ``sigmas`` empty, repeated, or with a negative or non-finite width.
    """
    widths = [float(s) for s in sigmas]
    if not widths or len(set(widths)) != len(widths) or not all(math.isfinite(s) and s >= 0 for s in widths):
        raise ValueError(f"sigmas must be distinct finite widths >= 0 (at least one), got {list(sigmas)!r}")
    spec = SamplerSpec("FM", nfe=nfe, group="testbed")
    return {s: run_config(testbed_velocity(train, s, dtype), x0, spec, train, n_boot=n_boot, seed=seed,
                          batch_size=batch_size) for s in widths}


def pick_sigma(sweep: Mapping[float, ConfigEval], target: float) -> float:
    """The width whose plain-FM F_mem is nearest ``target`` (a fraction in [0, 1]); on a tie, the smaller one.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> pick_sigma({0.05: NS(memorization=NS(value=0.9)), 0.08: NS(memorization=NS(value=0.3))}, 0.37)
        0.08
    """
    if not sweep:
        raise ValueError("sweep is empty: run sigma_sweep over at least one width")
    if not (isinstance(target, (int, float)) and 0.0 <= target <= 1.0):
        raise ValueError(f"target must be a fraction in [0, 1], got {target!r}")
    return min(sweep, key=lambda s: (abs(sweep[s].memorization.value - target), s))
