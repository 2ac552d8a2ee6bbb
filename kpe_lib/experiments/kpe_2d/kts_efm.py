"""The computations of chapter 1's last two sections: KTS against plain sampling, and the closed form.

Moved verbatim from the chapter (same operations, same order), so its numbers do not change. Shapes:
``B`` samples, ``N`` Euler steps, ``n`` training points of the closed form.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import pandas as pd
import torch
from torch import nn

from kpe_lib.closed_form import EmpiricalVelocity
from kpe_lib.sampling import SampleResult, sample
from kpe_lib.training import TrainConfig, TrainResult, cached_model

__all__ = ["KtsComparison", "compare_kts", "ClosedFormRuns", "closed_form_runs", "nearest_distance",
           "terminal_spike", "ClosedFormReading", "closed_form_reading"]


@dataclass
class KtsComparison:
    """The same noise sampled with and without a KTS gain (Mathematics §3).

    Attributes:
        runs: set name -> the shaped run (trajectory recorded).
        table: one row per set: mean KPE, early and late energy of FM and KTS, mean endpoint shift
            ``||x_KTS - x_FM||``.
    """

    runs: dict[str, SampleResult]
    table: pd.DataFrame

    def metrics(self) -> dict[str, float]:
        """``{set}_kts_kpe_ratio``, ``{set}_kts_late_ratio`` (KTS over FM) and ``{set}_kts_endpoint_shift``."""
        out = {}
        for name, row in zip(self.table.index, self.table.to_dict("records")):
            out[f"{name}_kts_kpe_ratio"] = float(row["KPE KTS"]) / float(row["KPE FM"])
            out[f"{name}_kts_late_ratio"] = float(row["late KTS"]) / float(row["late FM"])
            out[f"{name}_kts_endpoint_shift"] = float(row["mean endpoint shift"])
        return out

    def late_ratio_mean(self) -> float:
        """Mean over sets of ``E_late(KTS) / E_late(FM)``."""
        return float((self.table["late KTS"] / self.table["late FM"]).mean())


def compare_kts(models: Mapping[str, nn.Module], plain: Mapping[str, SampleResult], x0: torch.Tensor,
                gain: Callable[[float], float], n_steps: int, solver: str = "euler") -> KtsComparison:
    """Sample every model from ``x0`` (B, 2) with ``gain`` and compare with its plain run ``plain[name]``."""
    runs, rows = {}, []
    for name, model in models.items():
        fm, res = plain[name], sample(model, x0, n_steps=n_steps, solver=solver, gain=gain, record_trajectory=True)
        runs[name] = res
        rows.append({"set": name, "KPE FM": fm.kpe.mean().item(), "KPE KTS": res.kpe.mean().item(),
                     "early FM": fm.kpe_early.mean().item(), "early KTS": res.kpe_early.mean().item(),
                     "late FM": fm.kpe_late.mean().item(), "late KTS": res.kpe_late.mean().item(),
                     "mean endpoint shift": (res.x - fm.x).norm(dim=1).mean().item()})
    return KtsComparison(runs, pd.DataFrame(rows).set_index("set"))


@dataclass
class ClosedFormRuns:
    """The closed form and an MLP fitted to the same few points, sampled from the same noise.

    Attributes:
        efm: run of the closed form (float64, trajectory recorded).
        mlp: run of the MLP (the noise's dtype, trajectory recorded).
        train: the MLP's training result.
    """

    efm: SampleResult
    mlp: SampleResult
    train: TrainResult


def closed_form_runs(points: torch.Tensor, x0: torch.Tensor, model_config: dict, train_config: TrainConfig,
                     n_steps: int, solver: str, cache_dir, device: str = "cpu") -> ClosedFormRuns:
    """Sample ``EmpiricalVelocity(points)`` (Mathematics §4) and an MLP trained on ``points`` (n, 2) from ``x0``.

    The closed form runs in float64 from ``x0.double()``; the MLP (cached as ``toy2d-points``) from ``x0``.
    """
    efm = EmpiricalVelocity(points.to(device), dtype=torch.float64)
    efm_res = sample(efm, x0.double(), n_steps=n_steps, solver=solver, record_trajectory=True)
    small = cached_model(model_config, train_config, points, cache_dir=cache_dir, name="toy2d-points", device=device)
    mlp_res = sample(small.sampling_model.to(device).eval(), x0, n_steps=n_steps, solver=solver,
                     record_trajectory=True)
    return ClosedFormRuns(efm_res, mlp_res, small)


def nearest_distance(x: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Distance of each row of ``x`` (B, d) to its nearest row of ``points`` (n, d), float64 on the CPU, (B,)."""
    return torch.cdist(x.cpu().double(), points.double()).min(1).values


def terminal_spike(res: SampleResult, t_late: float = 0.9) -> torch.Tensor:
    """Per path, the largest step energy at ``t_i >= t_late`` over the largest before it, (B,) on the CPU.

    A ratio above 1 means the path's energy peaks in its last stretch: the terminal spike of Mathematics §4.
    """
    late_steps = res.grid[:-1] >= t_late
    return (res.energy[late_steps].max(0).values / res.energy[~late_steps].max(0).values).cpu()


@dataclass
class ClosedFormReading:
    """What the closed-form section reads off its two runs.

    Attributes:
        on_points: fraction of closed-form samples within 1e-3 of the points' diameter of a training point.
        d_mlp: distance of each MLP sample to its nearest training point (B,).
        spike: ``terminal_spike`` of each closed-form path (B,).
        efm_kpe: mean KPE of the closed form.
        mlp_kpe: mean KPE of the MLP.
    """

    on_points: float
    d_mlp: torch.Tensor
    spike: torch.Tensor
    efm_kpe: float
    mlp_kpe: float

    def metrics(self) -> dict[str, float]:
        """The section's metrics, under the chapter's keys."""
        return dict(efm_on_points_fraction=self.on_points, efm_kpe_mean=self.efm_kpe,
                    mlp_points_kpe_mean=self.mlp_kpe, mlp_points_median_distance=self.d_mlp.median().item(),
                    efm_late_peak_over_early_peak_median=self.spike.median().item())


def closed_form_reading(runs: ClosedFormRuns, points: torch.Tensor) -> ClosedFormReading:
    """Copies, distances, mean KPE and terminal spikes of the closed-form section (``points``: (n, d))."""
    pts = points.double()
    d_efm = nearest_distance(runs.efm.x, pts)
    d_mlp = nearest_distance(runs.mlp.x, pts)
    scale_pts = torch.cdist(pts, pts).max().item()
    on_points = (d_efm < 1e-3 * scale_pts).double().mean().item()
    return ClosedFormReading(on_points, d_mlp, terminal_spike(runs.efm, 0.9), runs.efm.kpe.mean().item(),
                             runs.mlp.kpe.mean().item())
