"""Figures of the semantics chapter, drawn from already computed results (no computation of their own
beyond what a plot needs: moving means, axis choices).

Each function draws what one figure cell of ``notebooks/05_semantics_guidance.md`` used to draw and returns
the matplotlib figure; the chapter then calls ``plt.show()``.

Example:
    >>> fig = groups_figure(main, study, guidance=1.5, score_name="score", margin_name="margin")  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from kpe_lib.experiments.semantics_guidance import SemanticBackend
from kpe_lib.experiments.semantics_guidance.analysis import ClassSummary, GroupStudy, MainRun, Sweep, per_class_extremes
from kpe_lib.experiments.semantics_guidance.kts import KTSStudy
from kpe_lib.experiments.semantics_guidance.prepare import CifarSetup
from kpe_lib.plotting import GROUP_COLORS, energy_profile_plot, gain_plot, image_grid, kpe_distribution_plot

__all__ = ["training_figure", "groups_figure", "energy_class_figure", "extremes_figure", "sweep_figure",
           "sweep_grid_figure", "kts_figure"]


def training_figure(setup: CifarSetup) -> Figure:
    """The CFM loss per step with its moving mean, and 4 training images per class."""
    losses, window = setup.losses, setup.window
    train_unit, labels = setup.data.train_unit, setup.data.train.labels
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), gridspec_kw={"width_ratios": [1.6, 1]})
    axes[0].plot(np.arange(1, len(losses) + 1), losses, lw=0.5, alpha=0.4, label="per step")
    axes[0].plot(np.arange(window, len(losses) + 1), np.convolve(losses, np.ones(window) / window, "valid"),
                 label=f"mean of {window}")
    axes[0].set(xlabel="step", ylabel="CFM loss", yscale="log", title="Flow-matching training loss")
    axes[0].legend()
    per_class = torch.cat([train_unit[labels == c][:4] for c in range(10)])
    image_grid(per_class, nrow=8, ax=axes[1], title="training images, 4 per class (two classes per row)")
    return fig


def groups_figure(main: MainRun, study: GroupStudy, *, guidance: float, score_name: str,
                  margin_name: str) -> Figure:
    """KPE histogram with the group cuts, and score / margin against KPE coloured by group."""
    kpe, sem, groups = main.kpe, main.sem, study.groups
    log_kpe = float(kpe.max() / kpe.min()) > 10  # a log axis only pays off over a decade or more
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    kpe_distribution_plot({"all samples": kpe}, ax=axes[0], log=log_kpe)
    lo_cut, hi_cut = groups.thresholds["all"]
    axes[0].axvline(lo_cut, color=GROUP_COLORS["low KPE"], ls="--", lw=1)
    axes[0].axvline(hi_cut, color=GROUP_COLORS["high KPE"], ls="--", lw=1)
    axes[0].set_title(f"KPE at CFG {guidance} (dashed: group cuts)")
    mid = ~(groups.low | groups.high)
    kpe_np = kpe.numpy()
    for ax, values, name, rho in ((axes[1], sem.score, score_name, study.rho_score),
                                  (axes[2], sem.margin, margin_name, study.rho_margin)):
        v = values.numpy()
        ax.scatter(kpe_np[mid], v[mid], s=6, color="0.65", linewidths=0, label="middle")
        for gname, mask in groups.masks().items():
            ax.scatter(kpe_np[mask], v[mask], s=8, color=GROUP_COLORS[gname], linewidths=0, label=gname)
        if log_kpe:
            ax.set_xscale("log")
        ax.set(xlabel="KPE" + (" (log scale)" if log_kpe else ""), ylabel=name,
               title=rf"Spearman $\rho$ = {rho.value:+.2f} [{rho.ci[0]:+.2f}, {rho.ci[1]:+.2f}]")
    axes[2].legend(fontsize=8)
    return fig


def energy_class_figure(main: MainRun, study: GroupStudy, classes: ClassSummary, score_name: str) -> Figure:
    """Per-step energy by KPE group (median and 25-75% band), and class mean KPE against class mean score."""
    class_table, rho_class = classes.table, classes.rho_class
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    e_all = main.samples.energy.cpu()
    energy_profile_plot(main.samples.grid[:-1], e_all, groups=study.groups.masks(), ax=axes[0], tau_split=0.6,
                        log=float(e_all.max() / e_all.min().clamp_min(1e-12)) > 10)
    axes[0].set_title("Per-step energy by KPE group (median, 25-75%)")
    if len(class_table) <= 20:
        axes[1].scatter(class_table["mean KPE"], class_table["mean score"], color="#4c72b0")
        for name, r in class_table.iterrows():
            axes[1].annotate(name, (r["mean KPE"], r["mean score"]), fontsize=8, xytext=(3, 3),
                             textcoords="offset points")
        axes[1].set(xlabel="class mean KPE", ylabel=f"class mean {score_name}",
                    title="Classes: mean KPE against mean score" + (f" (Spearman {rho_class:+.2f})"
                                                                      if rho_class is not None else ""))
    else:
        axes[1].set_axis_off()
    return fig


def extremes_figure(main: MainRun, study: GroupStudy, backend: SemanticBackend, per_class: int) -> Figure:
    """The lowest-KPE (left) and highest-KPE (right) samples of each class under the within-class cut."""
    kpe, labels, images, sem, g = main.kpe, main.labels, main.images, main.sem, study.groups_cls
    k, n_cls = backend.num_classes, min(backend.num_classes, 10)
    m_show = max(1, min(per_class, min(len(r) for r in per_class_extremes(g.low, False, 10 ** 6, kpe, labels, k))))
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.1 * m_show * 2, 0.9 * n_cls + 0.8))
    for ax, (gname, mask, highest) in zip(axes, (("low KPE", g.low, False), ("high KPE", g.high, True))):
        idx = np.concatenate(per_class_extremes(mask, highest, m_show, kpe, labels, k))
        idx_t = torch.from_numpy(idx)
        image_grid(images[idx_t], nrow=m_show, ax=ax)
        ax.set_title(f"{gname}\nmean score {float(sem.score[idx_t].mean()):.2f}", fontsize=9)
        for r, c in enumerate(range(n_cls)):
            ax.text(-2, (r + 0.5) * (images.shape[-1] + 1), backend.class_names[c], ha="right", va="center",
                    fontsize=8)
    return fig


def sweep_figure(sweep: Sweep, score_name: str, margin_name: str) -> Figure:
    """Mean KPE, score and margin (± standard error) against the guidance scale."""
    table = sweep.table
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, q in zip(axes, ("KPE", "score", "margin")):
        ax.errorbar(table.index, table[f"mean {q}"], yerr=table[f"{q} s.e."], marker="o", capsize=3)
        label = {"KPE": "mean KPE", "score": f"mean {score_name}", "margin": f"mean {margin_name}"}[q]
        ax.set(xlabel="guidance scale w", ylabel=label, title=f"{label} (n = {sweep.n}, ± s.e.)")
        ax.title.set_fontsize(9)
    return fig


def sweep_grid_figure(sweep: Sweep, class_names: list[str], side: int) -> Figure:
    """The first sample of each class (columns) at every guidance scale (rows); ``side`` = image side."""
    n_cls = min(len(class_names), 10)
    fig, ax = plt.subplots(figsize=(1.0 * n_cls + 1.5, 0.9 * len(sweep.runs) + 0.6))
    image_grid(torch.cat([r["images"][:n_cls] for r in sweep.runs.values()]), nrow=n_cls, ax=ax)
    ax.set_title("same noise and class (columns) at each guidance scale (rows)", pad=16, fontsize=10)
    step = side + 1
    for c in range(n_cls):
        ax.text((c + 0.5) * step, -1.5, class_names[c], ha="center", va="bottom", fontsize=7)
    for r, w in enumerate(sweep.runs):
        ax.text(-2, (r + 0.5) * step, f"w = {w:g}", ha="right", va="center", fontsize=8)
    return fig


def kts_figure(kts: KTSStudy, settings: Mapping[str, Any], num_classes: int, *, alpha0: float, beta0: float,
               tau_split: float) -> Figure:
    """The KTS gains eta(t) of every setting, and two samples per class of every setting with its FID."""
    n_runs = len(kts.runs)
    fig, axes = plt.subplots(1, n_runs + 1, figsize=(3.75 * (n_runs + 1), 3.2),
                             gridspec_kw={"width_ratios": [1.2] + [1] * n_runs})
    gains: dict[str, Callable] = {name: (lambda t: torch.ones_like(t)) if gain is None else gain
                                  for name, gain in settings.items()}
    gain_plot(gains, ax=axes[0], tau_split=tau_split)
    axes[0].set_title(f"KTS gains (a0 = {alpha0:g}, b0 = {beta0:g})")
    n_cls = min(num_classes, 10)
    for ax, (name, r) in zip(axes[1:], kts.runs.items()):
        image_grid(r["images"][:2 * n_cls], nrow=n_cls // 2 if n_cls >= 4 else n_cls, ax=ax,
                   title=f"{name}: FID {kts.quality[name].fid:.1f}")
    return fig
