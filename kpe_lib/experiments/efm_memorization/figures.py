"""The chapter's figures, drawn from results already computed (nothing here changes a number).

Each function draws one figure in the book style and returns it; the chapter shows it with ``plt.show()``.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from kpe_lib import KTS, SampleResult
from kpe_lib.data import ImageData
from kpe_lib.experiments.efm_memorization.analysis import displacement_factors, predicted_memorized
from kpe_lib.experiments.efm_memorization.dominance import DominanceData, log_normalizer
from kpe_lib.experiments.efm_memorization.study import CollapseCheck, Config, PathStudy, RecordSteps
from kpe_lib.metrics import DetectorResult
from kpe_lib.plotting import GROUP_COLORS, energy_profile_plot
from kpe_lib.plotting.efm import image_rows, median_band

__all__ = ["path_figure", "sweep_figure", "copies_figure", "detector_figure", "density_figure"]

FAMILY_COLORS = dict(zip(["plain", "beta0 sweep", "tau_split", "landing form", "launch", "balanced"],
                         ["#8172b3", "#c44e52", "#dd8452", "#55a868", "#4c72b0", "#937860"]))


def path_figure(paths: PathStudy, steps: RecordSteps, check: CollapseCheck, landing: KTS, tau0: float) -> Figure:
    """Speed with its envelope and the collapsed-path prediction, the largest weight, and the commit times.

    Args:
        paths: ``run_paths(...)``; steps: its recording plan.
        check: ``collapse_check(...)`` (commit times, the landing's collapsed-path speeds from ``tau0``).
        landing, tau0: the landing and its split.
    """
    diag, commit, j_tau = paths.diag, check.commit["EFM"], check.j_tau
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    eta_rec = torch.tensor([landing(t) for t in steps.times], dtype=torch.float64)[:, None]
    t_rec = diag["EFM"].t
    median_band(t_rec, diag["EFM"].speed, ax=ax, label="EFM", color=GROUP_COLORS["EFM"])
    median_band(t_rec, diag["landing"].speed, ax=ax, label=r"landing, $\|v^*\|$", color=GROUP_COLORS["KTS"])
    median_band(t_rec, eta_rec * diag["landing"].speed, ax=ax, label=r"landing, $\|\eta v^*\|$", color="#dd8452",
                ls="--")
    ax.plot(t_rec, diag["EFM"].upper.median(1).values, ":", color=GROUP_COLORS["EFM"],
            label=r"envelope $\max_i\|a_i - x\|/(1-t)$ (EFM paths)")
    ax.plot(t_rec, diag["landing"].upper.median(1).values, ":", color=GROUP_COLORS["KTS"],
            label="envelope (landing paths)")
    pred_idx = [s - steps.tau_steps[tau0] for s in steps.steps if s >= steps.tau_steps[tau0]]
    ax.plot(t_rec[j_tau:], check.prediction.speed[pred_idx].median(1).values, "k--", lw=1,
            label="collapsed-path formula (landing)")
    ax.axvline(tau0, color="0.5", lw=0.8, ls="--")
    ax.set(yscale="log", xlabel="t", ylabel="speed", title="Speed along the paths")
    ax.legend(fontsize=6.5, loc="upper left")
    ax = axes[1]
    median_band(t_rec, diag["EFM"].max_weight, ax=ax, label="EFM", color=GROUP_COLORS["EFM"])
    ax.axvline(float(commit.median()), color="0.4", ls=":", lw=1, label="median commit time")
    ax.set(xlabel="t", ylabel=r"$\max_i w_i(x, t)$", title="Posterior collapse onto one training face")
    ax.legend(fontsize=7)
    ax = axes[2]
    ax.hist(commit.numpy(), bins=np.arange(0, 1.0001, 0.04), color=GROUP_COLORS["EFM"], alpha=0.8)
    ax.set(xlabel="commit time (first t with max weight > 1/2)", ylabel="paths", title="When paths commit")
    return fig


def sweep_figure(sweep: pd.DataFrame, *, grid: torch.Tensor, tau_step: int, d_start: torch.Tensor,
                 face_gap: torch.Tensor, exponential_scale: float, real_heldout_rms: float,
                 paper_points: Sequence[tuple[float, float]], n_samples: int) -> Figure:
    """F_mem against the landing (measured and analytic), where the landing removes energy, and the
    copying / closeness-to-data trade-off of every configuration.

    Args:
        sweep: ``SweepResult.table``.
        grid, tau_step: the Euler grid and the grid index of tau_split 0.6.
        d_start: (B,) distance of the plain paths to their face at tau_split; face_gap: (B,) that face's gap.
        exponential_scale: ``landing_form_scale()["exponential"]`` (``beta0`` below ``1 / scale`` keeps eta > 0).
        real_heldout_rms: median held-out distance of real training faces (RMS).
        paper_points: ``[(beta0, F_mem)]`` of the paper's trained model.
        n_samples: samples per configuration (for the legend).
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    beta_rows = sweep[sweep["family"].isin(["plain", "beta0 sweep"])].sort_values("beta0")
    ci = np.array([list(c) for c in beta_rows["F_mem ci"]])
    ax.errorbar(beta_rows["beta0"], 100 * beta_rows["F_mem"], yerr=100 * np.abs(ci.T - beta_rows["F_mem"].values),
                fmt="o", color=GROUP_COLORS["KTS"], capsize=3, label=f"EFM, measured (95% CI, {n_samples} samples)")
    b_dense = np.linspace(0, 0.999 / exponential_scale, 120)
    curve = [100 * float(predicted_memorized(d_start, face_gap, float(displacement_factors(
        grid, KTS(beta0=float(b)), start=tau_step)[-1])).double().mean()) for b in b_dense]
    ax.plot(b_dense, curve, "k-", lw=1, label="analytic (collapsed paths)")
    ax.plot([b for b, _ in paper_points], [100 * f for _, f in paper_points], "s", color="0.5", ms=6,
            label="paper, trained UNet (Mathematics §6)")
    ax.set(xlabel=r"$\beta_0$ (exponential landing, $\tau$ = 0.6)", ylabel="F_mem (%)", ylim=(-3, 103),
           title="Memorisation against the landing")
    ax.legend(fontsize=7)
    ax = axes[1]
    for col, style in (("KPE", "-o"), ("KPE early", "--s"), ("KPE late", ":^")):
        ax.plot(beta_rows["beta0"], beta_rows[col], style, label=col, ms=4)
    ax.set(xlabel=r"$\beta_0$", ylabel="mean KPE (shaped)", title="Where the landing removes energy")
    ax.legend(fontsize=8)
    ax = axes[2]
    for fam, grp in sweep.groupby("family", sort=False):
        ax.scatter(grp["held-out dist (RMS)"], 100 * grp["F_mem"], color=FAMILY_COLORS[fam], label=fam, s=28,
                   zorder=3)
    ax.axvline(real_heldout_rms, color="0.5", ls="--", lw=1, label="real training faces")
    ax.set(xlabel="median distance to the nearest held-out face (RMS per pixel)", ylabel="F_mem (%)",
           title="Trade-off: copying vs staying on the data")
    ax.legend(fontsize=7)
    return fig


def copies_figure(per_sample: Mapping[str, Mapping[str, torch.Tensor]], configs: Sequence[Config],
                  faces: ImageData, train: torch.Tensor, beta0_sweep: Sequence[float], landing_beta0: float,
                  n_show: int = 10) -> Figure:
    """Image rows: samples above their nearest training faces, for plain EFM, two exponential landings
    (the largest sweep beta0 below ``landing_beta0``, and ``landing_beta0``) and the constant landing."""
    n_show = min(n_show, len(next(iter(per_sample.values()))["x"]))
    strong = [n for n, f, _ in configs if f == "landing form" and n.startswith("constant")][0]
    middle = f"landing beta0={max(b for b in beta0_sweep if b < landing_beta0):g}"
    rows = {}
    for label, name in (("EFM", "EFM (eta = 1)"), (middle, middle), (f"landing beta0={landing_beta0:g}",
                        f"landing beta0={landing_beta0:g}"), (strong, strong)):
        ps = per_sample[name]
        mark = ["copy" if bool(v) else "not" for v in ps["memorized"][:n_show]]
        rows[f"{label}: samples ({', '.join(mark)})"] = faces.to_unit(ps["x"][:n_show].float())
        rows[f"{label}: nearest training face"] = faces.to_unit(train[ps["nearest"][:n_show]].float())
    return image_rows(rows, nrow=n_show, width=9)


def detector_figure(res_mix: SampleResult, copies: torch.Tensor, detectors: Mapping[tuple[str, str], DetectorResult],
                    populations: Sequence[tuple[str, Mapping[str, torch.Tensor]]], tau0: float) -> Figure:
    """Per-step energy of copies and novel samples of the mixture field, and the ROC curves of the energy
    scores (``copies``: (B,) bool F_mem verdicts of the mixture field's samples)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    energy_profile_plot(res_mix.grid[:-1], res_mix.energy.cpu(), groups={"copies": copies, "novel": ~copies},
                        ax=axes[0], log=False, tau_split=tau0)
    axes[0].set_title("Mixture field: per-step energy of copies and novel samples")
    for (pop, score), r in detectors.items():
        if score == "gap":
            continue
        ps = dict(populations)[pop]
        fpr, tpr, _ = roc_curve(ps["memorized"].numpy(), ps[score].numpy())
        axes[1].plot(fpr, tpr, ls="-" if pop == "mixture field" else "--",
                     label=f"{pop}, {score} KPE (AUROC {r.auroc:.2f})".replace("kpe KPE", "total KPE"))
    axes[1].plot([0, 1], [0, 1], color="0.6", lw=0.8)
    axes[1].set(xlabel="false-positive rate", ylabel="true-positive rate", title="Detecting copies by energy")
    axes[1].legend(fontsize=7)
    return fig


def density_figure(scatter: Mapping[float, DominanceData], n_train: int, dim: int, mean_sq_norm: float,
                   threshold: float) -> Figure:
    """``||v*||^2`` against ``-log p_t`` with the slope-2 theory line per time (filled: max weight >=
    ``threshold``), and the distance from that line against ``1 - max_i w_i``."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    cmap = plt.get_cmap("viridis")
    for i, (t, data) in enumerate(scatter.items()):
        col = cmap(i / max(1, len(scatter) - 1))
        dom = (data.max_weight >= threshold).numpy()
        L, V = data.neg_log_density.numpy(), data.speed_sq.numpy()
        axes[0].scatter(L[dom], V[dom], s=4, color=col, alpha=0.5, linewidths=0, label=f"t = {t:g}")
        axes[0].scatter(L[~dom], V[~dom], s=6, facecolors="none", edgecolors=col, linewidths=0.4, alpha=0.5)
        c_t = log_normalizer(n_train, dim, t)
        xs = np.array([L.min(), L.max()])
        axes[0].plot(xs, 2 * xs - 2 * c_t + mean_sq_norm, color=col, lw=0.8, ls="--")
        resid = V - (2 * L - 2 * c_t + mean_sq_norm)
        axes[1].scatter(np.clip(1 - data.max_weight.numpy(), 1e-17, None), resid, s=4, color=col, alpha=0.5,
                        linewidths=0, label=f"t = {t:g}")
    axes[0].set(xlabel=r"$-\log p_t(x)$", ylabel=r"$\|v^*(x,t)\|^2$",
                title=f"Filled: max weight >= {threshold}; dashed: slope-2 theory")
    axes[0].legend(fontsize=7, markerscale=3)
    axes[1].axhline(0, color="0.4", lw=0.8)
    axes[1].set(xscale="log", xlabel=r"$1 - \max_i w_i$ (posterior dominance weakens to the right)",
                ylabel="distance from the theory line", title="Where the dominance relation breaks")
    return fig
