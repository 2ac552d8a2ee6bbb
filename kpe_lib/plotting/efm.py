"""Figures of the empirical-flow-matching chapter: quantile bands over time and labelled image rows.

Both follow the book style of :mod:`kpe_lib.plotting` (call ``set_book_style()`` first).

Example:
    >>> import torch
    >>> ax = median_band(torch.linspace(0, 0.98, 50), torch.rand(50, 16), label="speed")
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kpe_lib.plotting.common import GROUP_COLORS, as_numpy, axes_or_new, image_grid

__all__ = ["median_band", "image_rows"]


def median_band(t, values, ax: Axes | None = None, label: str | None = None, color: str | None = None,
                band: tuple[float, float] = (0.1, 0.9), ls: str = "-", alpha: float = 0.18) -> Axes:
    """Median line and a quantile band of per-path values over time.

    Args:
        t: times (K,).
        values: (K, B) one column per path.
        label: legend label (the band's quantiles are added to it).
        band: lower and upper quantiles of the shaded band.
    """
    tt, v = as_numpy(t).ravel(), as_numpy(values)
    if v.ndim != 2 or v.shape[0] != tt.shape[0]:
        raise ValueError(f"values must have shape (K, B) with K = len(t) = {tt.shape[0]}, got {v.shape}")
    if not 0.0 <= band[0] < band[1] <= 1.0:
        raise ValueError(f"band must be quantiles (lo, hi) with 0 <= lo < hi <= 1, got {band}")
    ax = axes_or_new(ax)
    color = GROUP_COLORS.get(str(label), color)
    line, = ax.plot(tt, np.median(v, axis=1), ls=ls, color=color,
                    label=None if label is None else f"{label} (median, {band[0]:.0%}-{band[1]:.0%})")
    lo, hi = np.quantile(v, band, axis=1)
    ax.fill_between(tt, lo, hi, color=line.get_color(), alpha=alpha, linewidth=0)
    return ax


def image_rows(rows: Mapping[str, object], nrow: int | None = None, width: float = 7.0,
               value_range: tuple[float, float] | None = (0.0, 1.0)) -> Figure:
    """One labelled row of images per entry: ``{"EFM samples": (k, C, H, W), "nearest training": ...}``.

    Rows are drawn with :func:`kpe_lib.plotting.image_grid`; every row should hold the same number of
    images so that columns line up (sample above its neighbour).
    """
    if not rows:
        raise ValueError("rows must hold at least one {label: images} entry")
    counts = [int(as_numpy(v).shape[0]) for v in rows.values()]
    nrow = nrow or max(counts)
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, 0.95 * width / nrow * len(rows) + 0.3 * len(rows)),
                             squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        image_grid(images, nrow=nrow, ax=ax, value_range=value_range)
        ax.set_title(name, loc="left", fontsize=9)
    return fig
