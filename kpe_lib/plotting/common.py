"""The book's figure style and the plots every chapter reuses.

Each function draws into a given matplotlib ``Axes`` (or a new one) and returns it, so chapters can
compose panels freely. Inputs are tensors or arrays with the shapes in the docstrings; quantities are
named after the paper's (KPE, per-step energy ``e_i``, gain ``eta(t)``; Mathematics §2-3).

Example:
    >>> import torch
    >>> from kpe_lib.plotting import set_book_style, energy_profile_plot
    >>> set_book_style()
    >>> ax = energy_profile_plot(torch.linspace(0, 0.99, 100), torch.rand(100, 8))
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from kpe_lib._files import atomic_path

__all__ = ["BOOK_STYLE", "GROUP_COLORS", "set_book_style", "trajectory_plot", "kpe_distribution_plot",
           "noise_map_plot", "energy_profile_plot", "gain_plot", "support_scatter", "make_grid",
           "image_grid", "save_figure", "as_numpy", "axes_or_new", "log_axis_labels"]

#: rcParams of the book: local fonts only (DejaVu ships with matplotlib), light grid, no top/right spines.
BOOK_STYLE: dict = {
    "figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.0, 4.0), "figure.constrained_layout.use": True,
    "font.family": "DejaVu Sans", "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "legend.frameon": False, "image.cmap": "viridis", "lines.linewidth": 1.6,
}
#: Colours of the groups compared throughout the book.
GROUP_COLORS = {"low KPE": "#1b9e77", "high KPE": "#d95f02", "FM": "#4c72b0", "KTS": "#c44e52",
                "EFM": "#8172b3", "model": "#4c72b0"}


def as_numpy(x) -> np.ndarray:
    """A tensor (moved to the CPU, floats as float64) or array-like as a numpy array."""
    if hasattr(x, "detach"):
        x = x.detach().to("cpu").double().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


def axes_or_new(ax: Axes | None) -> Axes:
    """``ax`` itself, or the axes of a new figure when None."""
    return ax if ax is not None else plt.figure().add_subplot()


def set_book_style() -> None:
    """Apply :data:`BOOK_STYLE` (seaborn's ``ticks`` theme underneath) to every later figure."""
    import seaborn as sns

    sns.set_theme(style="ticks", rc=BOOK_STYLE)
    mpl.rcParams.update(BOOK_STYLE)


def trajectory_plot(trajectory, values=None, ax: Axes | None = None, max_paths: int = 300,
                    cmap: str = "viridis", log_color: bool = True, label: str = "KPE",
                    linewidth: float = 0.6, alpha: float = 0.7, colorbar: bool = True,
                    vmin: float | None = None, vmax: float | None = None) -> Axes:
    """Sampling paths in the plane, coloured by a per-path value (usually KPE).

    Args:
        trajectory: states on the time grid, (N+1, B, 2).
        values: one value per path, (B,); None draws every path in one colour.
        max_paths: at most this many paths (the first ones) are drawn.
        log_color: colour on a log scale (KPE spans orders of magnitude).
        label: colour bar label.
        vmin, vmax: colour range (default: the drawn values' range); give the same range to panels
            that are compared.

    Returns:
        The Axes; noise starts are small grey dots, endpoints are coloured dots.
    """
    traj = as_numpy(trajectory)
    if traj.ndim != 3 or traj.shape[2] != 2:
        raise ValueError(f"trajectory must have shape (N+1, B, 2), got {traj.shape}")
    ax = axes_or_new(ax)
    b = min(traj.shape[1], max_paths)
    segs = np.transpose(traj[:, :b], (1, 0, 2))
    if values is None:
        ax.add_collection(LineCollection(segs, colors="#4c72b0", linewidths=linewidth, alpha=alpha))
        ax.scatter(segs[:, -1, 0], segs[:, -1, 1], s=4, color="#4c72b0", zorder=3)
    else:
        v = as_numpy(values)[:b]
        if v.shape != (b,):
            raise ValueError(f"values must have shape (B,) = ({traj.shape[1]},), got {as_numpy(values).shape}")
        pos = v[v > 0]
        lo = vmin if vmin is not None else (pos.min() if log_color and pos.size else v.min())
        hi = vmax if vmax is not None else v.max()
        norm = LogNorm(lo, hi) if log_color and pos.size and 0 < lo < hi else Normalize(lo, hi)
        lc = LineCollection(segs, cmap=cmap, norm=norm, linewidths=linewidth, alpha=alpha)
        lc.set_array(v)
        ax.add_collection(lc)
        ax.scatter(segs[:, -1, 0], segs[:, -1, 1], c=v, cmap=cmap, norm=norm, s=5, zorder=3)
        if colorbar:
            ax.figure.colorbar(lc, ax=ax, label=label)
    ax.scatter(segs[:, 0, 0], segs[:, 0, 1], s=2, color="0.6", zorder=2)
    ax.autoscale_view()
    ax.set_aspect("equal", adjustable="datalim")
    return ax


def kpe_distribution_plot(kpe: Mapping[str, object] | object, ax: Axes | None = None, log: bool = True,
                          bins: int = 40, xlabel: str = "KPE") -> Axes:
    """Histogram with a KDE of per-sample KPE; a mapping ``{label: kpe (B,)}`` overlays several sets."""
    import seaborn as sns

    ax = axes_or_new(ax)
    sets = kpe if isinstance(kpe, Mapping) else {xlabel: kpe}
    for name, values in sets.items():
        v = as_numpy(values).ravel()
        if log and (v <= 0).any():
            raise ValueError(f"KPE of {name!r} has non-positive values; pass log=False to plot them")
        sns.histplot(v, bins=bins, log_scale=log, kde=True, stat="density", element="step", ax=ax,
                     label=str(name), color=GROUP_COLORS.get(str(name)))
    ax.set_xlabel(xlabel + (" (log scale)" if log else ""))
    if len(sets) > 1:
        ax.legend()
    return ax


def noise_map_plot(values, extent: Sequence[float], ax: Axes | None = None, log: bool = True,
                   cmap: str = "magma", label: str = "KPE", colorbar: bool = True) -> Axes:
    """A per-sample value over the noise plane: ``values[i, j]`` belongs to ``x0 = (xs[j], ys[i])``.

    Args:
        values: (R, C) values on a regular grid of starting points.
        extent: (x_min, x_max, y_min, y_max) of that grid.
    """
    v = as_numpy(values)
    if v.ndim != 2:
        raise ValueError(f"values must be a 2D grid (R, C), got shape {v.shape}")
    ax = axes_or_new(ax)
    norm = LogNorm(v[v > 0].min(), v.max()) if log and (v > 0).any() else None
    im = ax.imshow(v, origin="lower", extent=tuple(extent), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xlabel("$x_0$ (first coordinate)")
    ax.set_ylabel("$x_0$ (second coordinate)")
    ax.grid(False)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=label)
    return ax


def log_axis_labels(axis) -> None:
    """Put ``axis`` (``ax.yaxis`` or ``ax.xaxis``) on a log scale with labelled ticks however short its range:
    a range inside one decade has no labelled major tick, so its 2x and 5x ticks get labels instead."""
    ax = axis.axes
    (ax.set_yscale if axis is ax.yaxis else ax.set_xscale)("log")
    lo, hi = (ax.get_ylim() if axis is ax.yaxis else ax.get_xlim())
    decades = [10.0 ** k for k in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)]
    if sum(lo <= d <= hi for d in decades) >= 2:
        axis.set_minor_formatter(NullFormatter())  # labelled decades are enough
    else:
        axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))


def energy_profile_plot(t, energy, groups: Mapping[str, object] | None = None, ax: Axes | None = None,
                        band: tuple[float, float] = (0.25, 0.75), log: bool = True,
                        tau_split: float | None = None) -> Axes:
    """Per-step energy ``e_i = 1/2 ||eta v||^2`` over time: median line and quantile band per group.

    Args:
        t: the step times t_i, (N,) (the grid without its last node).
        energy: per-step energy, (N, B) (``SampleResult.energy``).
        groups: ``{label: mask (B,) bool}``; None plots all samples as one group.
        band: lower and upper quantiles of the shaded band.
        tau_split: draw the phase boundary as a dashed line.
    """
    tt, e = as_numpy(t).ravel(), as_numpy(energy)
    if e.ndim != 2 or e.shape[0] != tt.shape[0]:
        raise ValueError(f"energy must have shape (N, B) with N = len(t) = {tt.shape[0]}, got {e.shape}")
    ax = axes_or_new(ax)
    groups = groups if groups is not None else {"all samples": np.ones(e.shape[1], bool)}
    for name, mask in groups.items():
        m = as_numpy(mask).astype(bool)
        if m.shape != (e.shape[1],) or not m.any():
            raise ValueError(f"group {name!r} must be a non-empty boolean mask of shape ({e.shape[1]},)")
        sub = e[:, m]
        color = GROUP_COLORS.get(str(name))
        line, = ax.plot(tt, np.median(sub, axis=1), label=f"{name} (n={int(m.sum())})", color=color)
        lo, hi = np.quantile(sub, band, axis=1)
        ax.fill_between(tt, lo, hi, alpha=0.2, color=line.get_color(), linewidth=0)
    if tau_split is not None:
        ax.axvline(tau_split, color="0.4", ls="--", lw=1)
    if log:
        log_axis_labels(ax.yaxis)
    ax.set_xlabel("t")
    ax.set_ylabel(r"per-step energy $\frac{1}{2}\|\eta v\|^2$")
    ax.legend(fontsize=8)
    return ax


def gain_plot(gains: Mapping[str, Callable], ax: Axes | None = None, n: int = 501,
              tau_split: float | None = None) -> Axes:
    """``eta(t)`` on [0, 1] for several gains ``{label: callable t -> eta}`` (Mathematics §3)."""
    import torch

    ax = axes_or_new(ax)
    t = torch.linspace(0, 1, n, dtype=torch.float64)
    for name, gain in gains.items():
        ax.plot(as_numpy(t), as_numpy(gain(t)), label=str(name))
    ax.axhline(1.0, color="0.5", lw=0.8)
    if tau_split is not None:
        ax.axvline(tau_split, color="0.4", ls="--", lw=1)
    ax.set_xlabel("t")
    ax.set_ylabel(r"$\eta(t)$")
    ax.legend(fontsize=8)
    return ax


def support_scatter(kpe, support, ax: Axes | None = None, xlabel: str = "KPE",
                    ylabel: str = "log density", rho=None, log_x: bool = True) -> Axes:
    """Per-sample KPE against a local-support estimate, with Spearman rho in the title when given.

    ``rho`` is a result with ``value`` and ``ci95`` (``kpe_lib.metrics.spearman_with_ci``).
    """
    x, y = as_numpy(kpe).ravel(), as_numpy(support).ravel()
    if x.shape != y.shape:
        raise ValueError(f"kpe and support must have the same length, got {x.shape} and {y.shape}")
    ax = axes_or_new(ax)
    ax.scatter(x, y, s=4, alpha=0.4, color="#4c72b0", linewidths=0)
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if rho is not None:
        lo, hi = rho.ci95
        ax.set_title(rf"Spearman $\rho$ = {rho.value:.2f} [{lo:.2f}, {hi:.2f}]", fontsize=9)
    return ax


def make_grid(images, nrow: int = 8, padding: int = 1, pad_value: float = 1.0,
              value_range: tuple[float, float] | None = (0.0, 1.0)) -> np.ndarray:
    """Tile images (N, C, H, W), C in {1, 3}, into one array (rows*(H+p)+p, nrow*(W+p)+p, C) in [0, 1].

    ``value_range`` maps that range to [0, 1] (then clips); None rescales by the batch's min and max.
    """
    x = as_numpy(images).astype(np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[0] == 0:
        raise ValueError(f"images must have shape (N, C, H, W) with N >= 1 and C in (1, 3), got {x.shape}")
    if nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow}")
    lo, hi = value_range if value_range is not None else (x.min(), x.max())
    x = np.clip((x - lo) / max(hi - lo, 1e-12), 0, 1)
    n, c, h, w = x.shape
    rows = -(-n // nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value)
    for i in range(n):
        r, col = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + col * (w + padding)
        grid[y0:y0 + h, x0:x0 + w] = x[i].transpose(1, 2, 0)
    return grid


def image_grid(images, nrow: int = 8, ax: Axes | None = None, title: str | None = None,
               value_range: tuple[float, float] | None = (0.0, 1.0), padding: int = 1) -> Axes:
    """Show images (N, C, H, W) as one grid (see :func:`make_grid`); grayscale drawn in gray."""
    grid = make_grid(images, nrow=nrow, padding=padding, value_range=value_range)
    ax = axes_or_new(ax)
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def save_figure(fig, path: str | os.PathLike, **kwargs) -> Path:
    """Save a figure atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format=kwargs.pop("format", None) or path.suffix.lstrip(".") or None, **kwargs)
    return path
