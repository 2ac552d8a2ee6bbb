"""Figures of the KTS benchmark chapter: F_mem over training, the FID-F_mem plane, form heat maps, the
solver ablation and samples beside their nearest training images (in the style of ``kpe_lib.plotting``).

Every function draws into a given ``Axes`` (or a new one) and returns it.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from kpe_lib.plotting.common import GROUP_COLORS, axes_or_new, make_grid

__all__ = ["fmem_steps_plot", "pareto_plot", "place_labels", "form_heatmap", "paired_bars", "neighbor_pairs"]


def fmem_steps_plot(steps: Sequence[int], fmem_pct: Sequence[float], ci_pct: Sequence[tuple[float, float]],
                    losses: Sequence[float] | None = None, ax: Axes | None = None, smooth: int = 25) -> Axes:
    """F_mem (%) with 95% intervals against training steps; optionally the training loss on a twin axis.

    Args:
        steps: checkpoint step counts.
        fmem_pct: F_mem in percent at each checkpoint.
        ci_pct: (lo, hi) in percent at each checkpoint.
        losses: per-step CFM losses of the whole run (step 1 first), drawn as a running mean.
        smooth: window of the running mean.
    """
    s, f = np.asarray(steps, float), np.asarray(fmem_pct, float)
    ci = np.asarray(ci_pct, float).reshape(-1, 2)
    if not (s.shape == f.shape == ci[:, 0].shape):
        raise ValueError(f"steps, fmem_pct and ci_pct need one entry per checkpoint, got {s.shape}, {f.shape}, "
                         f"{ci.shape}")
    ax = axes_or_new(ax)
    ax.errorbar(s, f, yerr=[f - ci[:, 0], ci[:, 1] - f], marker="o", capsize=3, color=GROUP_COLORS["FM"],
                label=r"$F_{mem}$ (FM, 95% bootstrap interval)")
    ax.set_xlabel("training steps")
    ax.set_ylabel(r"$F_{mem}$ (%)")
    ax.set_ylim(-2.0, max(10.0, float(ci[:, 1].max()) + 5.0))
    if losses is not None and len(losses):
        loss = np.asarray(losses, float)
        w = max(1, min(smooth, loss.size))
        run = np.convolve(loss, np.ones(w) / w, mode="valid")
        tw = ax.twinx()
        tw.plot(np.arange(w, loss.size + 1), run, color="0.55", lw=1, label=f"CFM loss (running mean of {w})")
        tw.set_yscale("log")
        tw.set_ylabel("training loss", color="0.45")
        tw.grid(False)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = tw.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    else:
        ax.legend(loc="upper left", fontsize=8)
    return ax


_LABEL_OFFSETS = ((4, 3, "left"), (4, -11, "left"), (-4, 3, "right"), (-4, -11, "right"), (4, 13, "left"),
                  (4, -21, "left"), (-4, 13, "right"), (-4, -21, "right"))


def place_labels(ax: Axes, x: np.ndarray, y: np.ndarray, labels: Sequence[str], fontsize: float = 7) -> list:
    """Annotate points with their labels, moving each to the first of a few offsets where it overlaps no
    label placed before it (greedy, left to right; text extents estimated from the font size).

    Returns:
        The annotations, in the order of ``labels`` (None for a non-finite point).
    """
    ax.autoscale_view()
    finite = np.isfinite(x) & np.isfinite(y)
    pts = ax.transData.transform(np.column_stack([np.where(finite, x, 0.0), np.where(finite, y, 0.0)]))
    px = ax.figure.dpi / 72.0                      # display pixels per point
    char_w, height = 0.62 * fontsize * px, 1.25 * fontsize * px
    placed: list[tuple[float, float, float, float]] = []
    out: list = [None] * len(labels)
    for i in np.argsort(np.where(finite, x, np.inf), kind="stable"):
        if not finite[i]:
            continue
        width = len(str(labels[i])) * char_w
        choice = _LABEL_OFFSETS[0]
        for dx, dy, ha in _LABEL_OFFSETS:
            left = pts[i, 0] + dx * px - (width if ha == "right" else 0.0)
            box = (left, pts[i, 1] + dy * px, left + width, pts[i, 1] + dy * px + height)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
                choice = (dx, dy, ha)
                break
        dx, dy, ha = choice
        left = pts[i, 0] + dx * px - (width if ha == "right" else 0.0)
        placed.append((left, pts[i, 1] + dy * px, left + width, pts[i, 1] + dy * px + height))
        out[i] = ax.annotate(str(labels[i]), (x[i], y[i]), textcoords="offset points", xytext=(dx, dy), ha=ha,
                             va="bottom", fontsize=fontsize, alpha=0.8)
    return out


def pareto_plot(fid: Sequence[float], fmem_pct: Sequence[float], labels: Sequence[str], groups: Sequence[str],
                front: Sequence[bool] | None = None, fmem_err: Sequence[float] | None = None, ax: Axes | None = None,
                annotate: bool = True) -> Axes:
    """Configurations on the FID-F_mem plane (both lower is better), coloured by experiment group.

    Args:
        fid, fmem_pct: one value per configuration.
        labels: configuration names (annotated next to the points).
        groups: experiment group per configuration (legend entries).
        front: bool mask of the Pareto front (joined by a dashed line).
        fmem_err: standard errors of F_mem (vertical error bars).
    """
    x, y = np.asarray(fid, float), np.asarray(fmem_pct, float)
    if not (x.shape == y.shape == (len(labels),) == (len(groups),)):
        raise ValueError("fid, fmem_pct, labels and groups must have one entry per configuration")
    ax = axes_or_new(ax)
    palette = plt.get_cmap("tab10")
    for j, g in enumerate(dict.fromkeys(groups)):
        m = np.array([gg == g for gg in groups])
        err = None if fmem_err is None else np.asarray(fmem_err, float)[m]
        ax.errorbar(x[m], y[m], yerr=err, fmt="o", ms=5, capsize=2, alpha=0.85, color=palette(j % 10), label=g)
    if annotate:
        place_labels(ax, x, y, labels)
    if front is not None:
        f = np.asarray(front, bool)
        order = np.argsort(x[f])
        ax.plot(x[f][order], y[f][order], "k--", lw=1, alpha=0.6, label="Pareto front")
    ax.set_xlabel("FID (lower is better)")
    ax.set_ylabel(r"$F_{mem}$ (%) (lower is better)")
    ax.legend(fontsize=8)
    return ax


def form_heatmap(values: np.ndarray, rows: Sequence[str], cols: Sequence[str], ax: Axes | None = None,
                 fmt: str = ".1f", title: str | None = None, cmap: str = "RdBu_r", center: float | None = 0.0,
                 row_label: str = "launch form", col_label: str = "landing form", min_span: float = 1.0) -> Axes:
    """A launch x landing table of numbers as an annotated heat map (e.g. the F_mem change in points).

    With ``center`` set, the colour scale is symmetric about it and spans at least ``min_span`` either way
    (so that a table of zeros is not coloured by rounding noise). NaN cells read "not run".
    """
    from matplotlib.colors import TwoSlopeNorm

    v = np.asarray(values, float)
    if v.shape != (len(rows), len(cols)):
        raise ValueError(f"values must have shape ({len(rows)}, {len(cols)}), got {v.shape}")
    ax = axes_or_new(ax)
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = None
    if center is not None:
        span = max(abs(lo - center), abs(hi - center), min_span)
        norm = TwoSlopeNorm(vcenter=center, vmin=center - span, vmax=center + span)
    im = ax.imshow(v, cmap=cmap, norm=norm, aspect="auto")
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            dark = np.isfinite(v[i, j]) and norm is not None and abs(float(norm(v[i, j])) - 0.5) > 0.3
            ax.text(j, i, format(v[i, j], fmt) if np.isfinite(v[i, j]) else "not run", ha="center", va="center",
                    fontsize=9, color="white" if dark else "black")  # white on the saturated ends of the map
    ax.set_xticks(range(len(cols)), list(cols))
    ax.set_yticks(range(len(rows)), list(rows))
    ax.grid(False)
    ax.figure.colorbar(im, ax=ax)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    if title:
        ax.set_title(title)
    return ax


def paired_bars(cells: Sequence[str], series: Mapping[str, Sequence[float]],
                errors: Mapping[str, Sequence[float]] | None = None, ax: Axes | None = None,
                ylabel: str = r"$F_{mem}$ (%)") -> Axes:
    """Grouped bars: one group per cell (e.g. solver / NFE / grid), one bar per series (e.g. FM, KTS)."""
    names = list(series)
    n, k = len(cells), len(names)
    if any(len(series[s]) != n for s in names):
        raise ValueError("every series needs one value per cell")
    ax = axes_or_new(ax)
    width = 0.8 / max(k, 1)
    pos = np.arange(n)
    for j, s in enumerate(names):
        err = None if errors is None or s not in errors else errors[s]
        ax.bar(pos + (j - (k - 1) / 2) * width, series[s], width, yerr=err, capsize=2, label=s,
               color=GROUP_COLORS.get(s))
    ax.set_xticks(pos, list(cells), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


def neighbor_pairs(samples: np.ndarray, neighbors: np.ndarray, memorized: Sequence[bool], ax: Axes | None = None,
                   title: str | None = None, padding: int = 1) -> Axes:
    """Samples (top row of each pair) above their nearest training images (bottom row); memorised samples
    (d1/d2 < 1/3) are framed in red.

    Args:
        samples: (M, C, H, W) generated images in [0, 1].
        neighbors: (M, C, H, W) their nearest training images in [0, 1].
        memorized: (M,) flags.
    """
    s, nb = np.asarray(samples, float), np.asarray(neighbors, float)
    mem = np.asarray(memorized, bool)
    if s.shape != nb.shape or s.ndim != 4 or mem.shape != (s.shape[0],):
        raise ValueError(f"samples and neighbors must share a shape (M, C, H, W) and memorized be (M,), got "
                         f"{s.shape}, {nb.shape}, {mem.shape}")
    m, _, h, w = s.shape
    ax = axes_or_new(ax)
    grid = make_grid(np.concatenate([s, nb]), nrow=m, padding=padding)
    if grid.shape[2] == 1:
        ax.imshow(grid[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid, interpolation="nearest")
    for i in np.flatnonzero(mem):
        x0 = padding + i * (w + padding) - 0.5
        ax.add_patch(Rectangle((x0, padding - 0.5), w, 2 * h + padding, fill=False, edgecolor="#d62728", lw=1.5))
    ax.set_xticks([])
    ax.set_yticks([padding + h / 2, 2 * padding + 1.5 * h], ["sample", "nearest\ntrain"], fontsize=8)
    ax.grid(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9)
    return ax
