"""The chapter's figures, drawn from values computed elsewhere (runs and tables of this package).

Each function draws one figure with ``kpe_lib.plotting`` and returns it; the chapter shows it with
``plt.show()``.

Example:
    >>> fig = fmem_over_training_figure(checkpoints, steps_evals, losses, n_train=16)   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from kpe_lib.energy_aware import mean_late_power
from kpe_lib.experiments.celeba_kts.configs import ConfigEval, SamplerSpec, to_unit_range
from kpe_lib.experiments.celeba_kts.runs import EnergySplit
from kpe_lib.plotting import energy_profile_plot, gain_plot, image_grid
from kpe_lib.plotting.kts import fmem_steps_plot, form_heatmap, neighbor_pairs, paired_bars, pareto_plot
from kpe_lib.shaping import LANDING_FORMS, LAUNCH_FORMS

__all__ = ["training_images_figure", "fmem_over_training_figure", "regime_figure", "gains_figure", "neighbors_figure",
           "energy_split_figure", "budget_figure", "tau_budget_figure", "forms_figure", "solver_figure",
           "late_power_figure", "plane_figure", "testbed_figure"]


def training_images_figure(train_unit: torch.Tensor) -> Figure:
    """The (first 64) training images (n, 1, H, W) in [0, 1], 16 per row."""
    n = train_unit.shape[0]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.9 * ((n + 15) // 16)))
    image_grid(train_unit[:64], nrow=16, ax=ax, title=f"the {n} training images")
    return fig


def fmem_over_training_figure(checkpoints: Sequence[int], steps_evals: Mapping[int, ConfigEval],
                              losses: np.ndarray, n_train: int) -> Figure:
    """F_mem (%) of plain FM with its 95% interval at every snapshot, over the per-step training loss."""
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    fmem_steps_plot(checkpoints, [100 * steps_evals[s].memorization.value for s in checkpoints],
                    [tuple(100 * np.array(steps_evals[s].memorization.ci95)) for s in checkpoints],
                    losses=losses, ax=ax)
    n = steps_evals[checkpoints[-1]].samples.shape[0]
    ax.set_title(f"F_mem of plain FM over training (n = {n_train} images, {n} samples per point)")
    return fig


def regime_figure(checkpoints: Sequence[int], steps_evals: Mapping[int, ConfigEval], losses: np.ndarray,
                  n_train: int, train_mean: float | torch.Tensor, fid_train_floor: float | None = None,
                  fid_real_floor: float | None = None, n_show: int = 16) -> Figure:
    """The regime appearing over training: F_mem (%, 95% interval) over the loss, FID against the copier's
    floor (as many training-image draws) and the real-image floor, and the first ``n_show`` FM samples of
    every snapshot (same noise in each row)."""
    n = steps_evals[checkpoints[-1]].samples.shape[0]
    fig = plt.figure(figsize=(10, 3.3 + 0.75 * len(checkpoints)))
    grid = fig.add_gridspec(1 + len(checkpoints), 2, height_ratios=[3.3] + [0.75] * len(checkpoints))
    ax = fig.add_subplot(grid[0, 0])
    fmem_over = [100 * steps_evals[s].memorization.value for s in checkpoints]
    fmem_steps_plot(checkpoints, fmem_over, [tuple(100 * np.array(steps_evals[s].memorization.ci95))
                                             for s in checkpoints], losses=losses, ax=ax)
    ax.set_title(f"F_mem of plain FM (n = {n_train} images, {n} samples)", fontsize=9)
    ax = fig.add_subplot(grid[0, 1])
    fids = [steps_evals[s].fid if steps_evals[s].fid is not None else np.nan for s in checkpoints]
    ax.plot(checkpoints, fids, marker="o", color="#4c72b0", label="FM samples")
    for value, label, style in ((fid_train_floor, "copier floor (training images)", "--"),
                                (fid_real_floor, "real floor (valid-split images)", ":")):
        if value is not None:
            ax.axhline(value, color="0.35", ls=style, lw=1, label=f"{label}: {value:.0f}")
    if fid_train_floor is not None:
        ax.axhline(1.5 * fid_train_floor, color="#c44e52", ls="--", lw=0.8, label="1.5 x copier floor")
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"FID ({n} samples)")
    ax.set_xticks(list(checkpoints))
    ax.legend(fontsize=7)
    ax.set_title("FID of the same samples", fontsize=9)
    for row, s in enumerate(checkpoints, start=1):
        ev = steps_evals[s]
        image_grid(to_unit_range(ev.samples[:n_show], train_mean), nrow=n_show, ax=fig.add_subplot(grid[row, :]),
                   title=f"step {s:,}: F_mem {100 * ev.memorization.value:.0f}%"
                         + (f", FID {ev.fid:.0f}" if ev.fid is not None else ""))
        fig.axes[-1].title.set_fontsize(8)
    fig.tight_layout()
    return fig


def gains_figure(specs: Sequence[SamplerSpec], tau_split: float = 0.6) -> Figure:
    """The gains eta(t) of the configurations (Mathematics §3)."""
    fig, ax = plt.subplots(figsize=(5.5, 2.6))
    gain_plot({s.name: s.gain for s in specs}, ax=ax, tau_split=tau_split)
    ax.set_title(r"the gains $\eta(t)$ of the main table")
    return fig


def neighbors_figure(evals: Mapping[str, ConfigEval], names: Sequence[str], n_show: int,
                     train_mean: float | torch.Tensor, train_unit: torch.Tensor) -> Figure:
    """One row per configuration: its first ``n_show`` samples above their nearest training images (n, 1, H,
    W in [0, 1]), memorised ones framed."""
    fig, axes = plt.subplots(len(names), 1, figsize=(max(6, 0.55 * n_show), 1.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names):
        ev = evals[name]
        nn = ev.memorization.nearest_index[:n_show]
        neighbor_pairs(to_unit_range(ev.samples[:n_show], train_mean).numpy(), train_unit[nn].numpy(),
                       ev.memorization.memorized[:n_show].numpy(), ax=ax,
                       title=f"{name}: F_mem {100 * ev.memorization.value:.1f}% over all {ev.samples.shape[0]} samples")
    return fig


def energy_split_figure(fm_ev: ConfigEval, kts_ev: ConfigEval, split: EnergySplit, tau_split: float = 0.6
                        ) -> Figure:
    """Per-step energy profiles of FM and of a KTS run on the same noise, both grouped by the FM outcome."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), sharey=True)
    mem = split.memorised
    groups = {"memorised": mem, "not memorised": ~mem} if split.grouped else None
    t_steps = fm_ev.grid[:-1]
    energy_profile_plot(t_steps, fm_ev.energy, groups=groups, ax=axes[0], tau_split=tau_split)
    axes[0].set_title("FM, grouped by the FM outcome")
    energy_profile_plot(t_steps, kts_ev.energy, groups=groups, ax=axes[1], tau_split=tau_split)
    axes[1].set_title(f"{kts_ev.spec.name} KTS, same samples")
    return fig


def budget_figure(main_df: pd.DataFrame, main_names: Sequence[str]) -> Figure:
    """Each KTS configuration beside its two budget controls (Mathematics §3.5): paired change of F_mem
    (points, 95% interval) and, where computed, of FID against FM; under each group the KTS gain's time budget
    T, which the constant control shares (the renormalised one has T = 1)."""
    groups = [[n, f"{n} | constant budget", f"{n} | renormalised"] for n in main_names]
    has_fid = "dfid" in main_df.columns
    fig, axes = plt.subplots(1, 2 if has_fid else 1, figsize=(11 if has_fid else 6, 3.6), squeeze=False)
    colors = {"KTS": "#4c72b0", "constant budget": "#dd8452", "renormalised": "#55a868"}
    for ax, (col, lo, hi, label) in zip(axes[0], (("dfmem_pct", "dfmem_ci_lo_pct", "dfmem_ci_hi_pct",
                                                   r"$\Delta F_{mem}$ vs FM (points)"),
                                                  ("dfid", "dfid_ci_lo", "dfid_ci_hi", r"$\Delta$FID vs FM"))):
        for g, names in enumerate(groups):
            for j, (n, kind) in enumerate(zip(names, colors)):
                if n not in main_df.index or not np.isfinite(float(main_df.loc[n].get(col, np.nan))):
                    continue
                r = main_df.loc[n]
                x = g + (j - 1) * 0.27
                ax.bar(x, r[col], width=0.25, color=colors[kind], label=kind if g == 0 else None)
                ax.errorbar(x, r[col], yerr=[[r[col] - r[lo]], [r[hi] - r[col]]], color="0.2", capsize=2, lw=1)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xticks(range(len(groups)), [f"{n}\nT = {main_df.loc[n, 'budget']:.3f}" if n in main_df.index else n
                                           for n in main_names])
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    n = int(main_df.loc["FM", "n_samples"]) if "FM" in main_df.index else None
    fig.suptitle(f"KTS and its budget controls, paired against FM on the same {n} samples (T: the time budget of "
                 "KTS and of its constant control; the renormalised control has T = 1)", fontsize=9)
    fig.tight_layout()
    return fig


def tau_budget_figure(tau_df: pd.DataFrame) -> Figure:
    """The tau_split sweep's F_mem change (points, 95% interval) against tau_split and against its time
    budget, side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), sharey=True)
    for ax, col, label in ((axes[0], "tau_split_value", r"$\tau_{split}$"), (axes[1], "budget", "time budget T")):
        x, y = tau_df[col].to_numpy(float), tau_df["dfmem_pct"].to_numpy(float)
        yerr = [y - tau_df["dfmem_ci_lo_pct"].to_numpy(float), tau_df["dfmem_ci_hi_pct"].to_numpy(float) - y]
        ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, color="#4c72b0", ls="-")
        for xi, yi, tau in zip(x, y, tau_df["tau_split_value"]):
            ax.annotate(f"{tau:g}", (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=7)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel(label)
    axes[0].set_ylabel(r"$\Delta F_{mem}$ vs FM (points)")
    fig.suptitle(f"balanced KTS with tau_split moved ({int(tau_df['n_samples'].iloc[0])} samples; labels: tau_split)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def forms_figure(forms_df: pd.DataFrame, form_names: Mapping[tuple[str, str], str],
                 evals: Mapping[str, ConfigEval]) -> Figure:
    """Heat maps over launch x landing forms: the paired change of F_mem against FM (points), and the
    change of FID when every form run has one; pairs not run read "not run"."""
    def cell(lf: str, gf: str, value) -> float:
        name = form_names.get((lf, gf))
        out = value(name) if name is not None else None
        return np.nan if out is None else float(out)

    d_fmem = np.array([[cell(lf, gf, lambda n: forms_df.loc[n, "dfmem_pct"]) for gf in LANDING_FORMS]
                       for lf in LAUNCH_FORMS])
    fid_grid = np.array([[cell(lf, gf, lambda n: evals[n].fid) for gf in LANDING_FORMS] for lf in LAUNCH_FORMS])
    show_fid = bool(np.isfinite(fid_grid).sum() == len(form_names))
    n = evals["FM"].samples.shape[0]
    fig, axes = plt.subplots(1, 2 if show_fid else 1, figsize=(10 if show_fid else 5, 3.4), squeeze=False)
    form_heatmap(d_fmem, LAUNCH_FORMS, LANDING_FORMS, ax=axes[0, 0],
                 title=r"$\Delta F_{mem}$ vs FM (points, paired, %d samples)" % n)
    if show_fid:
        form_heatmap(fid_grid - evals["FM"].fid, LAUNCH_FORMS, LANDING_FORMS, ax=axes[0, 1],
                     title=f"$\\Delta$FID vs FM ({n} samples)")
    return fig


def solver_figure(solver_evals: Mapping[str, Mapping[str, ConfigEval]]) -> Figure:
    """F_mem (%, with standard errors) of FM and KTS side by side per solver / NFE / grid cell."""
    fig, ax = plt.subplots(figsize=(7, 3))
    cells = list(solver_evals)
    paired_bars(cells, {k: [100 * solver_evals[c][k].memorization.value for c in cells] for k in ["FM", "KTS"]},
                errors={k: [100 * solver_evals[c][k].memorization.stderr for c in cells] for k in ["FM", "KTS"]},
                ax=ax)
    n = solver_evals[cells[0]]["FM"].samples.shape[0]
    ax.set_title(f"F_mem per solver / NFE / grid, FM vs balanced KTS ({n} samples, same noise)")
    return fig


def late_power_figure(fm_ev: ConfigEval, thresholds: Sequence[float], decide_at: float | None) -> Figure:
    """Histogram of the FM run's per-sample mean power over ``[tau_split, decide_at)``, split by the FM
    outcome, with the energy-aware thresholds as dashed lines."""
    power = mean_late_power(fm_ev, until=decide_at)
    mem = fm_ev.memorization.memorized
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    bins = np.linspace(float(power.min()), float(power.max()), 25)
    if bool(mem.any()):
        ax.hist(power[mem].numpy(), bins=bins, alpha=0.6, label=f"memorised ({int(mem.sum())})", color="#c44e52")
    if bool((~mem).any()):
        ax.hist(power[~mem].numpy(), bins=bins, alpha=0.6, label=f"not memorised ({int((~mem).sum())})",
                color="#4c72b0")
    for thr in thresholds:
        ax.axvline(thr, color="0.3", ls="--", lw=1)
    ax.set_xlabel(r"FM mean power $\frac{1}{2}\|v\|^2$ over $[\tau_{split}, t_{decide})$")
    ax.set_ylabel("samples")
    ax.set_title("dashed: energy-aware thresholds (quantiles of this distribution)", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def plane_figure(plane: pd.DataFrame, n_samples: int, tag: str, fid_real: float | None = None) -> Figure:
    """The configurations of :func:`~kpe_lib.experiments.celeba_kts.tables.plane_table` on the FID-F_mem
    plane with their Pareto front; ``fid_real``: the FID of as many real images (dotted line)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    pareto_plot(plane["fid"], plane["fmem_pct"], list(plane.index), list(plane["group"]), front=plane["pareto"],
                fmem_err=plane["fmem_se"], ax=ax)
    if fid_real is not None:
        ax.axvline(fid_real, color="0.5", ls=":", lw=1)
        ax.annotate(f"{n_samples} real images", (fid_real, ax.get_ylim()[1]), fontsize=7, color="0.4", va="top")
    ax.set_title(f"{len(plane)} configurations, same noise; F_mem from {n_samples} samples each\n{tag}", fontsize=8)
    return fig


def testbed_figure(sweep: Mapping[float, ConfigEval], sigma: float, target_pct: float,
                   train_mean: float | torch.Tensor, n_show: int = 16) -> Figure:
    """The testbed's plain-FM F_mem (%, 95% interval) against the atom width sigma with the chosen width and
    the target marked, and the first ``n_show`` samples at the chosen width."""
    widths = list(sweep)
    fmem = np.array([100 * sweep[w].memorization.value for w in widths])
    ci = np.array([100 * np.array(sweep[w].memorization.ci95) for w in widths])
    fig = plt.figure(figsize=(9, 4.2))
    grid = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(grid[0])
    ax.errorbar(widths, fmem, yerr=[fmem - ci[:, 0], ci[:, 1] - fmem], marker="o", capsize=3, color="#4c72b0")
    ax.axhline(target_pct, color="#c44e52", ls="--", lw=1, label=f"target {target_pct:.2f}% (the paper's FM)")
    ax.axvline(sigma, color="0.35", ls=":", lw=1, label=f"chosen sigma = {sigma:g}")
    ax.set_xlabel(r"atom width $\sigma$ (centred pixel units)")
    ax.set_ylabel(r"$F_{mem}$ of plain FM (%)")
    ax.legend(fontsize=8)
    n = sweep[widths[0]].samples.shape[0]
    ax.set_title(f"smoothed empirical testbed: F_mem against sigma ({n} samples per width)", fontsize=9)
    image_grid(to_unit_range(sweep[sigma].samples[:n_show], train_mean), nrow=n_show, ax=fig.add_subplot(grid[1]),
               title=f"sigma = {sigma:g}: plain FM samples")
    fig.axes[-1].title.set_fontsize(8)
    fig.tight_layout()
    return fig
