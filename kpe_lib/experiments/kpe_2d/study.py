"""The computations of chapter 1 (``notebooks/01_kpe_2d.md``) on the four sets: train, sample, split, correlate.

Every function here is a loop the chapter used to write inline, moved verbatim (same operations in the
same order, same random draws), so the chapter's numbers do not change. Shapes: ``B`` samples, ``N``
Euler steps, ``R`` reference points, ``n`` training points of the closed form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from kpe_lib.data import Toy2D, toy_dataset
from kpe_lib.metrics.stats import SpearmanResult, spearman_with_ci
from kpe_lib.metrics.support import kde_support, knn_support
from kpe_lib.sampling import SampleResult, sample
from kpe_lib.training import TrainConfig, TrainResult, cached_model

__all__ = ["GeneratorFactory", "final_loss", "ToyModels", "train_toy_models", "sample_sets", "straight_cost",
           "kpe_identity_failures", "transport_share", "kpe_statistics", "set_mean", "noise_grid",
           "kpe_noise_maps", "decile_groups", "DecileSplit", "decile_split", "endpoint_log_density",
           "SupportStudy", "support_study", "SUMMARY_ROWS", "summary_table"]

#: ``offset -> torch.Generator``, e.g. ``ChapterContext.generator``.
GeneratorFactory = Callable[[int], torch.Generator]


def final_loss(losses: Sequence[float]) -> float:
    """The training loss the chapter reports: the mean of the last 100 steps' CFM losses."""
    return float(np.mean(losses[-100:]))


@dataclass
class ToyModels:
    """One trained velocity field per 2D set.

    Attributes:
        toys: set name -> its distribution (``kpe_lib.data.toy_dataset``).
        models: set name -> the sampling weights (EMA when trained with EMA), in eval mode on the device.
        runs: set name -> the training result (losses, steps, seconds).
        table: one row per set: steps, new steps, final loss, training seconds.
    """

    toys: dict[str, Toy2D]
    models: dict[str, nn.Module]
    runs: dict[str, TrainResult]
    table: pd.DataFrame

    def metrics(self) -> dict[str, float]:
        """``{set}_final_loss`` for every set."""
        return {f"{name}_final_loss": final_loss(run.losses) for name, run in self.runs.items()}


def train_toy_models(names: Sequence[str], model_config: dict, train_config: TrainConfig, n_train: int,
                     generator: GeneratorFactory, cache_dir, device: str = "cpu") -> ToyModels:
    """Train (or load from the cache) one conditional-flow-matching MLP per set (Mathematics §1).

    Args:
        names: set names (``kpe_lib.data.TOY_NAMES``).
        model_config: ``cached_model`` model configuration.
        train_config: optimiser, steps and seed.
        n_train: training points drawn from each set; set ``i`` draws them with ``generator(10 + i)``.
        generator: generator factory (``ctx.generator``).
        cache_dir: the model cache folder.
        device: torch device of the models.
    """
    toys, models, runs, rows = {}, {}, {}, []
    for i, name in enumerate(names):
        toys[name] = toy_dataset(name)
        data = toys[name].sample(n_train, generator=generator(10 + i))
        run = cached_model(model_config, train_config, data, cache_dir=cache_dir, name=f"toy2d-{name}",
                           device=device)
        models[name], runs[name] = run.sampling_model.to(device).eval(), run
        rows.append({"set": name, "steps": run.steps_done, "new steps": run.new_steps,
                     "final loss (mean of last 100)": final_loss(run.losses),
                     "training seconds": round(run.seconds, 1)})
    return ToyModels(toys, models, runs, pd.DataFrame(rows).set_index("set"))


def sample_sets(models: Mapping[str, nn.Module], x0: torch.Tensor, n_steps: int, grid_kind: str = "uniform",
                solver: str = "euler") -> dict[str, SampleResult]:
    """Sample every model from the same noise ``x0`` (B, 2), recording energies and trajectories."""
    return {name: sample(model, x0, n_steps=n_steps, grid_kind=grid_kind, solver=solver, record_trajectory=True)
            for name, model in models.items()}


def straight_cost(x1: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``1/2 ||x1 - x0||^2`` per sample, float64, (B,): the KPE of the straight constant-speed path."""
    return 0.5 * (x1 - x0).double().pow(2).sum(1)


def kpe_identity_failures(res: SampleResult, x0: torch.Tensor) -> list[str]:
    """The identities of Mathematics §2 that a sampling run violates (empty list: all hold).

    Checked: finite endpoints and KPE, ``KPE >= 0``, ``KPE = E_early + E_late``, ``KPE = sum_i dt_i e_i``
    and, by Cauchy-Schwarz on the Euler steps, ``KPE >= 1/2 ||x_1 - x_0||^2`` (relative slack 1e-9).

    Args:
        res: a run with energies (``energy`` (N, B), ``kpe`` (B,)).
        x0: its starting noise (B, d).
    """
    dt = torch.diff(res.grid).to(res.energy)
    checks = {
        "finite": bool(torch.isfinite(res.x).all() and torch.isfinite(res.kpe).all()),
        "non-negative": bool((res.kpe >= 0).all()),
        "early + late = KPE": torch.allclose(res.kpe, res.kpe_early + res.kpe_late),
        "sum dt e = KPE": torch.allclose((dt[:, None] * res.energy).sum(0), res.kpe),
        "KPE >= straight cost": bool((res.kpe >= straight_cost(res.x, x0) * (1 - 1e-9)).all()),
    }
    return [check for check, ok in checks.items() if not ok]


def transport_share(res: SampleResult, x0: torch.Tensor) -> float:
    """Mean over samples of ``straight cost / KPE``: the part of KPE that is plain transport."""
    return (straight_cost(res.x, x0) / res.kpe).mean().item()


def kpe_statistics(runs: Mapping[str, SampleResult], x0: torch.Tensor) -> dict[str, float]:
    """``{set}_kpe_mean``, ``{set}_kpe_median`` and ``{set}_transport_share`` for every run."""
    stats = {}
    for name, res in runs.items():
        share = transport_share(res, x0)
        stats[f"{name}_kpe_mean"] = res.kpe.mean().item()
        stats[f"{name}_kpe_median"] = res.kpe.median().item()
        stats[f"{name}_transport_share"] = share
    return stats


def set_mean(metrics: Mapping[str, float], key: str, names: Sequence[str]) -> float:
    """The mean over sets of ``metrics[f"{set}_{key}"]``."""
    return float(np.mean([metrics[f"{name}_{key}"] for name in names]))


def noise_grid(resolution: int, lim: float) -> torch.Tensor:
    """A regular grid of starting points on ``[-lim, lim]^2``, (resolution^2, 2).

    Row ``i * resolution + j`` is ``(xs[j], ys[i])``, the convention of ``noise_map_plot``.
    """
    axis = torch.linspace(-lim, lim, resolution)
    return torch.stack(torch.meshgrid(axis, axis, indexing="xy"), dim=-1).reshape(-1, 2)


def kpe_noise_maps(models: Mapping[str, nn.Module], resolution: int, lim: float, n_steps: int,
                   grid_kind: str = "uniform", solver: str = "euler", device: str = "cpu") -> dict[str, torch.Tensor]:
    """KPE as a function of the starting point: set name -> (resolution, resolution) map on the CPU."""
    grid_x0 = noise_grid(resolution, lim).to(device)
    maps = {}
    for name, model in models.items():
        res = sample(model, grid_x0, n_steps=n_steps, grid_kind=grid_kind, solver=solver)
        maps[name] = res.kpe.reshape(resolution, resolution).cpu()
    return maps


def decile_groups(kpe: torch.Tensor) -> dict[str, torch.Tensor]:
    """Boolean masks (B,) of the bottom (``KPE <= q_0.1``) and top (``KPE >= q_0.9``) KPE deciles."""
    lo_cut, hi_cut = torch.quantile(kpe, torch.tensor([0.1, 0.9], dtype=kpe.dtype))
    return {"low KPE": kpe <= lo_cut, "high KPE": kpe >= hi_cut}


@dataclass
class DecileSplit:
    """Bottom and top KPE deciles of each set, and the share of their KPE spent after ``tau_split``.

    Attributes:
        groups: set name -> ``decile_groups`` masks (B,).
        table: rows (set, group): mean KPE and mean late share ``E_late / KPE``.
        late_share_high: set name -> mean late share of the top decile.
        late_share_low: set name -> mean late share of the bottom decile.
    """

    groups: dict[str, dict[str, torch.Tensor]]
    table: pd.DataFrame
    late_share_high: dict[str, float]
    late_share_low: dict[str, float]

    def metrics(self) -> dict[str, float]:
        """``{set}_late_share_high`` and ``{set}_late_share_low`` for every set."""
        out = {}
        for name in self.groups:
            out[f"{name}_late_share_high"] = self.late_share_high[name]
            out[f"{name}_late_share_low"] = self.late_share_low[name]
        return out


def decile_split(runs: Mapping[str, SampleResult]) -> DecileSplit:
    """Split each run into KPE deciles and measure the late share of each (Mathematics §2)."""
    groups, rows, high, low = {}, [], {}, {}
    for name, res in runs.items():
        kpe = res.kpe.cpu()
        groups[name] = decile_groups(kpe)
        late = (res.kpe_late / res.kpe).cpu()
        for group, mask in groups[name].items():
            rows.append({"set": name, "group": group, "mean KPE": kpe[mask].mean().item(),
                         "late share (t >= 0.6)": late[mask].mean().item()})
        high[name] = late[groups[name]["high KPE"]].mean().item()
        low[name] = late[groups[name]["low KPE"]].mean().item()
    return DecileSplit(groups, pd.DataFrame(rows).set_index(["set", "group"]), high, low)


def endpoint_log_density(toy: Toy2D, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """True log density of endpoints ``x`` (B, 2), float64 on the CPU, and the mask of finite values.

    Endpoints where the density is zero (off the checkerboard) get 1 below the smallest finite value, so
    that only their rank (the lowest) matters.
    """
    log_density = toy.log_density(x.detach().cpu().double())
    finite = torch.isfinite(log_density)
    return torch.where(finite, log_density, log_density[finite].min() - 1.0), finite


@dataclass
class SupportStudy:
    """Spearman correlations of KPE with three estimates of the endpoint's local density (Mathematics §5).

    Attributes:
        table: rows (set, support): rho(KPE, support), its 95% interval, rho(excess KPE, support).
        rhos: (set, support label) -> Spearman result with bootstrap interval.
        log_density: set name -> clamped true log density of the endpoints (B,).
        off_support: set name -> fraction of endpoints where the true density is zero.
        labels: short name (``true``, ``knn``, ``kde``) -> support label of the table.
    """

    table: pd.DataFrame
    rhos: dict[tuple[str, str], SpearmanResult]
    log_density: dict[str, torch.Tensor]
    off_support: dict[str, float]
    labels: dict[str, str]

    def metrics(self) -> dict:
        """``{set}_rho_{short}``, ``{set}_rho_{short}_ci95`` and ``{set}_off_support_fraction``."""
        out = {}
        for name in self.log_density:
            for short, label in self.labels.items():
                out[f"{name}_rho_{short}"] = self.rhos[(name, label)].value
                out[f"{name}_rho_{short}_ci95"] = list(self.rhos[(name, label)].ci95)
            out[f"{name}_off_support_fraction"] = self.off_support[name]
        return out

    def rho(self, short: str = "true") -> dict[str, float]:
        """Set name -> rho(KPE, support) for one estimator."""
        return {name: self.rhos[(name, self.labels[short])].value for name in self.log_density}

    def gap(self, short: str) -> float:
        """The largest ``|rho(estimator) - rho(true density)|`` over the sets."""
        est, true = self.rho(short), self.rho("true")
        return max(abs(est[name] - true[name]) for name in self.log_density)


def support_study(runs: Mapping[str, SampleResult], toys: Mapping[str, Toy2D], x0: torch.Tensor,
                  generator: GeneratorFactory, n_ref: int, knn_k: int, n_boot: int, seed: int) -> SupportStudy:
    """Correlate KPE with the true, kNN and KDE log density of the endpoint, per set.

    Args:
        runs: set name -> run from ``x0``; sets are visited in this order.
        toys: set name -> distribution (true density; reference draws).
        x0: the starting noise (B, 2).
        generator: generator factory; set ``i`` draws its ``n_ref`` reference points with ``generator(30 + i)``.
        n_ref: fresh reference points per set for the kNN and KDE estimates.
        knn_k: the kNN density uses the distance to the k-th nearest reference point.
        n_boot: bootstrap resamples of each Spearman interval (seeded with ``seed``).
        seed: bootstrap seed.
    """
    labels = {"true": "true density", "knn": f"kNN (k={knn_k})", "kde": "KDE (Scott)"}
    rows, rhos, log_densities, off_support = [], {}, {}, {}
    for i, name in enumerate(runs):
        res, toy = runs[name], toys[name]
        end = res.x.detach().cpu().double()
        kpe = res.kpe.cpu()
        true_ld, finite = endpoint_log_density(toy, res.x)
        ref = toy.sample(n_ref, generator=generator(30 + i)).double()
        excess = kpe - straight_cost(res.x, x0).cpu()
        support = {labels["true"]: true_ld, labels["knn"]: knn_support(end, ref, k=knn_k).log_density,
                   labels["kde"]: kde_support(end, ref, bandwidth="scott").log_density}
        for est, log_density in support.items():
            r = spearman_with_ci(kpe, log_density, n_boot=n_boot, seed=seed)
            rhos[(name, est)] = r
            rows.append({"set": name, "support": est, "rho(KPE, support)": r.value, "CI low": r.ci95[0],
                         "CI high": r.ci95[1],
                         "rho(excess KPE, support)": spearman_with_ci(excess, log_density, n_boot=1).value})
        log_densities[name] = true_ld
        off_support[name] = 1.0 - finite.double().mean().item()
    table = pd.DataFrame(rows).set_index(["set", "support"])
    return SupportStudy(table, rhos, log_densities, off_support, labels)


#: Rows of the chapter's summary table: label -> metric key suffix.
SUMMARY_ROWS = {"mean KPE": "kpe_mean", "transport share of KPE": "transport_share",
                "rho(KPE, true density)": "rho_true", "rho(KPE, kNN support)": "rho_knn",
                "rho(KPE, KDE support)": "rho_kde", "late share, top decile": "late_share_high",
                "late share, bottom decile": "late_share_low", "KTS / FM late energy": "kts_late_ratio"}


def summary_table(metrics: Mapping[str, float], names: Sequence[str]) -> pd.DataFrame:
    """The chapter's per-set numbers side by side: one column per set, one row per ``SUMMARY_ROWS`` label."""
    return pd.DataFrame({name: {label: metrics[f"{name}_{key}"] for label, key in SUMMARY_ROWS.items()}
                         for name in names})
