"""The figures of chapter 1: rows of the book's plots (``kpe_lib.plotting``), one panel per 2D set.

Each function draws already computed runs and returns the figure; nothing here computes a number the
chapter reports (the noise maps are computed by ``kpe_noise_maps``). Shapes: ``B`` samples, ``N`` steps.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from kpe_lib.data import Toy2D
from kpe_lib.experiments.kpe_2d.study import SupportStudy
from kpe_lib.plotting import (GROUP_COLORS, energy_profile_plot, gain_plot, kpe_distribution_plot, noise_map_plot,
                              support_scatter, trajectory_plot)
from kpe_lib.sampling import SampleResult

__all__ = ["figure_row", "samples_figure", "trajectories_figure", "kpe_distributions_figure", "noise_maps_figure",
           "decile_profiles_figure", "support_figure", "gain_forms_figure", "kts_paths_figure",
           "closed_form_figure"]


def figure_row(n: int, height: float = 3.3) -> tuple[Figure, np.ndarray]:
    """A figure with ``n`` panels side by side, 3.5 inches wide each; returns it and its (n,) axes."""
    fig, axes = plt.subplots(1, n, figsize=(3.5 * n, height), squeeze=False)
    return fig, axes[0]


def samples_figure(toys: Mapping[str, Toy2D], runs: Mapping[str, SampleResult], names: Sequence[str],
                   generator: Callable[[int], torch.Generator], n_data: int = 2000) -> Figure:
    """Data (grey, ``n_data`` points drawn with ``generator(20)`` per set) and the model's endpoints (blue)."""
    fig, axes = figure_row(len(names))
    for ax, name in zip(axes, names):
        ref = toys[name].sample(n_data, generator=generator(20)).numpy()
        ax.scatter(ref[:, 0], ref[:, 1], s=2, color="0.75", label="data")
        xs = runs[name].x.cpu().numpy()
        ax.scatter(xs[:, 0], xs[:, 1], s=2, color=GROUP_COLORS["model"], label="samples")
        ax.set_title(name)
        ax.set_aspect("equal", adjustable="datalim")
    axes[0].legend(markerscale=4, loc="lower left")
    return fig


def trajectories_figure(runs: Mapping[str, SampleResult], names: Sequence[str], max_paths: int) -> Figure:
    """The first ``max_paths`` sampling paths of each set, coloured by KPE (log scale)."""
    fig, axes = figure_row(len(names), 3.6)
    for ax, name in zip(axes, names):
        trajectory_plot(runs[name].trajectory.cpu(), runs[name].kpe.cpu(), ax=ax, max_paths=max_paths)
        ax.set_title(name)
    return fig


def kpe_distributions_figure(runs: Mapping[str, SampleResult], names: Sequence[str]) -> Figure:
    """Histograms (log scale) of per-sample KPE, one per set, overlaid."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    kpe_distribution_plot({name: runs[name].kpe.cpu() for name in names}, ax=ax)
    return fig


def noise_maps_figure(maps: Mapping[str, torch.Tensor], lim: float) -> Figure:
    """KPE over the starting point: ``maps`` set name -> (R, R) values on ``[-lim, lim]^2``."""
    fig, axes = figure_row(len(maps), 3.4)
    for ax, (name, values) in zip(axes, maps.items()):
        noise_map_plot(values, (-lim, lim, -lim, lim), ax=ax)
        ax.set_title(name)
    return fig


def decile_profiles_figure(runs: Mapping[str, SampleResult], groups: Mapping[str, Mapping[str, torch.Tensor]]
                           ) -> Figure:
    """Per-step energy (median, interquartile band) of each set's KPE groups (``DecileSplit.groups``)."""
    fig, axes = figure_row(len(groups), 3.4)
    for ax, (name, masks) in zip(axes, groups.items()):
        res = runs[name]
        energy_profile_plot(res.grid[:-1], res.energy.cpu(), masks, ax=ax, tau_split=res.tau_split)
        ax.set_title(name)
    return fig


def support_figure(runs: Mapping[str, SampleResult], support: SupportStudy) -> Figure:
    """KPE against the true log density of the endpoint (``support.log_density``, (B,) per set), with the
    true-density Spearman rho and its interval in each title."""
    fig, axes = figure_row(len(support.log_density), 3.4)
    for ax, (name, ld) in zip(axes, support.log_density.items()):
        support_scatter(runs[name].kpe.cpu(), ld, ax=ax, ylabel="true log density of endpoint",
                        rho=support.rhos[(name, support.labels["true"])])
        ax.set_xlabel(f"KPE ({name})")
    return fig


def gain_forms_figure(launches: Mapping[str, Callable], landings: Mapping[str, Callable],
                      tau_split: float = 0.6) -> Figure:
    """``eta(t)`` of every launch form (left) and landing form (right)."""
    fig, axes = figure_row(2, 3.2)
    gain_plot(launches, ax=axes[0], tau_split=tau_split)
    gain_plot(landings, ax=axes[1], tau_split=tau_split)
    axes[0].set_title(r"launch forms ($\beta_0 = 0$)")
    axes[1].set_title(r"landing forms ($\alpha_0 = 0$)")
    return fig


def _paths_and_profiles(axes: Sequence[Axes], runs: Mapping[str, SampleResult], titles: Sequence[str],
                        max_paths: int, band: tuple[float, float] = (0.25, 0.75), tau_split: float | None = None
                        ) -> None:
    """Two runs' paths on a shared colour range (axes 0, 1) and their per-step energy (axis 2)."""
    both = torch.cat([res.kpe.cpu().double() for res in runs.values()])
    span = dict(max_paths=max_paths, vmin=both.min().item(), vmax=both.max().item())
    for ax, res, title in zip(axes[:2], runs.values(), titles):
        trajectory_plot(res.trajectory.cpu(), res.kpe.cpu(), ax=ax, colorbar=ax is axes[1], **span)
        ax.set_title(title)
    for i, (label, res) in enumerate(runs.items()):
        everyone = torch.ones(res.kpe.shape[0], dtype=torch.bool)
        energy_profile_plot(res.grid[:-1], res.energy.cpu(), {label: everyone}, ax=axes[2], band=band,
                            tau_split=tau_split if i == len(runs) - 1 else None)


def kts_paths_figure(fm: SampleResult, shaped: SampleResult, name: str, max_paths: int,
                     tau_split: float = 0.6) -> Figure:
    """The same noise without (left) and with (middle) KTS on one colour range, and both energy profiles."""
    fig, axes = figure_row(3, 3.5)
    _paths_and_profiles(axes, {"FM": fm, "KTS": shaped}, (f"{name}: FM", f"{name}: KTS"), max_paths,
                        tau_split=tau_split)
    axes[2].set_title("per-step energy")
    return fig


def closed_form_figure(efm: SampleResult, mlp: SampleResult, points: torch.Tensor, max_paths: int) -> Figure:
    """Closed-form paths (left), MLP paths (middle) with the training points (n, 2) as crosses, and the
    per-step energy of both (right: median and 50-95% band)."""
    fig, axes = figure_row(3, 3.5)
    _paths_and_profiles(axes, {"EFM": efm, "model": mlp}, ("closed form (EFM)", "MLP, same points"), max_paths,
                        band=(0.5, 0.95))
    p = points.numpy()
    for ax in axes[:2]:
        ax.scatter(p[:, 0], p[:, 1], marker="x", s=40, color="k", zorder=4, label="training points")
    axes[0].legend(loc="lower left")
    axes[2].set_title("per-step energy (median, 50-95% band)")
    return fig
