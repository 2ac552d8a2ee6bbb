"""Time grids for fixed-step samplers (Mathematics §3).

t = 0 is noise and t = 1 is data (Mathematics §1); every grid starts at 0 and ends at 1.
"""
from __future__ import annotations

import math

import torch

from kpe_lib._numbers import as_int

GRID_KINDS = ("uniform", "cosine")


def time_grid(n_steps: int, kind: str = "uniform", dtype: torch.dtype = torch.float64,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Return the time grid ``t_0 = 0 < t_1 < ... < t_N = 1`` (Mathematics §3).

    Args:
        n_steps: number of steps N (>= 1; any integer type); the grid has N + 1 nodes.
        kind: ``"uniform"`` (``t_i = i / N``) or ``"cosine"`` (``t_i = (1 - cos(pi i / N)) / 2``,
            denser near both ends).
        dtype: floating-point dtype of the grid. float64 by default so that step sizes are exact to ~1e-16.
        device: device of the grid.

    Returns:
        Tensor of shape (N + 1,).

    Example:
        >>> time_grid(4)
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
    """
    n_steps = as_int(n_steps, "n_steps", minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype (the nodes lie between 0 and 1), got {dtype!r}")
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got {kind!r}")
    i = torch.arange(n_steps + 1, dtype=torch.float64)
    if kind == "uniform":
        grid = i / n_steps
    else:
        grid = (1.0 - torch.cos(math.pi * i / n_steps)) / 2.0
    grid[0], grid[-1] = 0.0, 1.0  # exact end points whatever the rounding
    return grid.to(dtype=dtype, device=device)


def validate_grid(grid: torch.Tensor) -> torch.Tensor:
    """Check that ``grid`` is a 1-D, strictly increasing grid from 0 to 1 and return it.

    Raises:
        ValueError: naming the violated condition.
    """
    if not isinstance(grid, torch.Tensor):
        grid = torch.as_tensor(grid, dtype=torch.float64)
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"grid must be a 1-D tensor with at least 2 nodes, got shape {tuple(grid.shape)}")
    if not bool(torch.all(grid[1:] > grid[:-1])):
        raise ValueError("grid must be strictly increasing")
    if float(grid[0]) != 0.0 or float(grid[-1]) != 1.0:
        raise ValueError(f"grid must start at 0 and end at 1, got [{float(grid[0])}, {float(grid[-1])}]")
    return grid
