"""Figures of the CIFAR-10 support chapter, drawn from already computed results (no computation of their
own beyond what a plot needs: moving means, nearest training images to show).

Each function draws what one figure cell of ``notebooks/03_cifar_support.md`` used to draw and returns the
matplotlib figure; the chapter then calls ``plt.show()``.

Example:
    >>> fig = support_figure(study, main.kpe, names)          # doctest: +SKIP
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from kpe_lib.experiments.cifar_support.analysis import SupportSweep
from kpe_lib.experiments.cifar_support.correlations import SupportStudy
from kpe_lib.experiments.cifar_support.setup import FlowModel, MainSamples
from kpe_lib.metrics import KPEGroups, nearest_neighbors
from kpe_lib.plotting import energy_profile_plot, image_grid, kpe_distribution_plot, support_scatter

__all__ = ["loss_figure", "kpe_figure", "extremes_figure", "support_figure", "sweep_figure"]


def loss_figure(flow: FlowModel) -> Figure:
    """The CFM loss per step and its moving mean over ``flow.window`` steps (log scale)."""
    losses, window = flow.losses, flow.window
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="per step")
    ax.plot(np.arange(window, len(losses) + 1), np.convolve(losses, np.ones(window) / window, "valid"),
            label=f"mean of {window}")
    ax.set(xlabel="step", ylabel="CFM loss", yscale="log", title="Flow-matching training loss")
    ax.legend()
    return fig


def kpe_figure(main: MainSamples, groups: KPEGroups) -> Figure:
    """KPE histogram with the group cuts, and the per-step energy profile of each KPE group."""
    res = main.res
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4))
    kpe_distribution_plot({"samples": main.kpe}, ax=axes[0], log=False)
    axes[0].axvline(groups.low_max, color="#1b9e77", ls="--", lw=1)
    axes[0].axvline(groups.high_min, color="#d95f02", ls="--", lw=1)
    axes[0].set_title(f"KPE of {main.kpe.shape[0]} samples (dashed: group cuts)")
    energy_profile_plot(res.grid[:-1], res.energy.cpu(), groups=groups.masks(), ax=axes[1], tau_split=0.6)
    axes[1].set_title("Per-step energy by KPE group (median, 25-75%)")
    return fig


def extremes_figure(main: MainSamples, groups: KPEGroups, train_unit: torch.Tensor, n_show: int) -> Figure:
    """The lowest- and highest-KPE samples (up to ``n_show`` each), above their nearest training images.

    Args:
        main: the samples and their KPE.
        groups: the low / high KPE groups.
        train_unit: (n, C, H, W) training images in [0, 1]; neighbours are found in pixel space.
        n_show: samples shown per group (capped at the group size).
    """
    kpe, images = main.kpe, main.samples_unit
    n_show = min(n_show, groups.n_low)
    nrow = int(np.ceil(np.sqrt(n_show)))
    train_flat = train_unit.flatten(1)
    fig, axes = plt.subplots(2, 2, figsize=(8, 8.4))
    for col, (label, idx) in enumerate((("lowest KPE", groups.ranked(kpe, "low")[:n_show]),
                                        ("highest KPE", groups.ranked(kpe, "high")[:n_show]))):
        nn_idx = nearest_neighbors(images[idx].flatten(1), train_flat, k=1).indices[:, 0]
        lo, hi = float(kpe[idx].min()), float(kpe[idx].max())
        image_grid(images[idx], nrow=nrow, ax=axes[0, col], title=f"{label}: KPE {lo:.0f} - {hi:.0f}")
        image_grid(train_unit[nn_idx], nrow=nrow, ax=axes[1, col], title="nearest training images (pixels)")
    return fig


def support_figure(study: SupportStudy, kpe: torch.Tensor, names: Sequence[str]) -> Figure:
    """Per-sample log support against KPE: one column per space, kNN on top and KDE below, rho in the titles.

    Each panel shows the log density minus its median over the samples: a shift that leaves rho unchanged and
    keeps the tick labels readable where the densities are large numbers that differ in the fourth digit."""
    n_sp = len(names)
    fig, axes = plt.subplots(2, n_sp, figsize=(2.3 * n_sp, 4.8), squeeze=False)
    for j, name in enumerate(names):
        for i, est in enumerate(("knn", "kde")):
            row = study.row(name, est)
            support = np.asarray(study.support(name, est), dtype=np.float64)
            support_scatter(kpe, support - np.median(support), ax=axes[i, j], log_x=False,
                            ylabel=f"{'kNN' if est == 'knn' else 'KDE'} log density\n(minus its median)"
                            if j == 0 else "")
            axes[i, j].set_title(f"{name}\nrho = {row.rho:+.2f} [{row.ci_low:+.2f}, {row.ci_high:+.2f}]",
                                 fontsize=8)
            axes[i, j].tick_params(labelsize=7)
            axes[i, j].yaxis.set_major_formatter(plt.FormatStrFormatter("%.3g"))
    return fig


def sweep_figure(sweep: SupportSweep, names: Sequence[str], paper: Mapping[str, float]) -> Figure:
    """rho against k (left) and against the bandwidth factor (right), one line per space with its bootstrap
    band, and the paper's value as a dotted line.

    Args:
        sweep: the k / bandwidth sweep.
        names: the spaces, in legend order.
        paper: the paper's rho per estimator, ``{"knn": ..., "kde": ...}``.
    """
    table = sweep.table
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, est, xlabel in ((axes[0], "knn", "k (neighbour rank)"),
                            (axes[1], "kde", f"bandwidth / {sweep.bandwidth_rule} bandwidth")):
        for name in names:
            d = table[(table.space == name) & (table.estimator == est)]
            line, = ax.plot(d.value, d.rho, marker="o", ms=3, label=name)
            ax.fill_between(d.value, d.ci_low, d.ci_high, color=line.get_color(), alpha=0.08, lw=0)
        ax.axhline(paper[est], color="k", ls=":", lw=1, label=f"paper ({paper[est]:+.2f})")
        ax.axhline(0, color="0.5", lw=0.6)
        ax.set(xscale="log", xlabel=xlabel, title=f"{'kNN' if est == 'knn' else 'KDE'}: Spearman(KPE, support)")
    axes[0].set_ylabel("Spearman rho")
    axes[1].legend(fontsize=7, ncol=2)
    return fig
