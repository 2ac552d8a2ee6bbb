"""What the chapter writes: the values its prose reads (glue), the metrics and the protocol of its results
file. Every entry is read from results already computed; nothing is recomputed here."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

import kpe_lib
from kpe_lib.experiments.efm_memorization.study import ChapterData, CifarStudy
from kpe_lib.metrics import DetectorResult, MemorizationResult

__all__ = ["reading_values", "chapter_metrics", "chapter_protocol"]

Detectors = Mapping[tuple[str, str], DetectorResult]


def reading_values(*, sweep: pd.DataFrame, theory: pd.DataFrame, detectors: Detectors, best_name: str,
                   lowest_name: str, balanced_name: str, real_ho: float, tolerance: float, theory_r2_min: float,
                   pred_gap: float, t_low: float, threshold_low: float) -> dict[str, Any]:
    """The glue names of "Reading the results" with their values (F_mem in percent).

    Args:
        sweep: the KTS sweep table; theory: the energy-density table; detectors: the AUROCs.
        best_name, lowest_name, balanced_name: configurations of the sweep named in the prose.
        real_ho: median held-out distance of real faces (RMS); tolerance: the "best" KTS rule's margin.
        theory_r2_min, pred_gap: the smallest dominated R^2 and the largest |F_mem - analytic F_mem|.
        t_low, threshold_low: the row of ``theory`` read for the weakest dominance (earliest time, all points).
    """
    best = sweep.loc[best_name]
    low = theory[(theory["t"] == t_low) & (theory["threshold"] == threshold_low)].iloc[0]
    late_kts, gap_kts = detectors.get(("EFM + landing", "late")), detectors.get(("EFM + landing", "gap"))
    return {"efm_fmem_best": 100 * float(best["F_mem"]), "efm_best_name": best_name,
            "efm_best_heldout": float(best["held-out dist (RMS)"]), "efm_real_heldout": real_ho,
            "efm_tolerance": 100 * tolerance, "efm_lowest_name": lowest_name,
            "efm_lowest_heldout": float(sweep.loc[lowest_name, "held-out dist (RMS)"]),
            "efm_fmem_balanced": 100 * float(sweep.loc[balanced_name, "F_mem"]),
            "efm_auroc_late": detectors[("mixture field", "late")].auroc, "efm_r2_min": theory_r2_min,
            "efm_t_low": float(low["t"]), "efm_pred_gap": pred_gap, "efm_slope_low": float(low["slope"]),
            "efm_r2_low": float(low["R2"]), "efm_w_low": float(low["median max w"]),
            "efm_auroc_late_kts": late_kts.auroc if late_kts else float("nan"),
            "efm_auroc_gap": gap_kts.auroc if gap_kts else float("nan")}


def chapter_metrics(*, mem_plain: MemorizationResult, mem_mix: MemorizationResult, cifar: CifarStudy,
                    sweep: pd.DataFrame, detectors: Detectors, best_name: str,
                    lowest_name: str, balanced_name: str, land02: str | None, launch_names: Sequence[str],
                    dominated: pd.DataFrame, theory_r2_min: float, rel_icpt: pd.Series, commit_median: float,
                    kpe_mean: float, kpe_ratio: float, pred_gap: float, heldout_rms_real: float,
                    tolerance: float) -> dict[str, Any]:
    """The metrics of ``results/<scale>/02_efm_memorization.json``.

    F_mem of plain EFM, of the "best" and lowest KTS, the balanced, landing-0.02 and launch settings and of
    the mixture field; the AUROCs; the energy-density fit; commit time and KPE; the full sweep and CIFAR-10.
    ``rel_icpt``: relative intercept errors of the dominated fits. No verdicts: the chapter adds the tests
    behind its scoreboard rows under ``"tests"`` and the rows judge them (``kpe_lib.book.scoreboard``). The
    "best" KTS (``best_name``, its rule in ``fmem_kts_best_rule``) is exploration, not a verdict: its quality
    rule cannot see the residual noise a landing leaves.
    """
    def fmem(name: str) -> float:
        return float(sweep.loc[name, "F_mem"])

    best = sweep.loc[best_name]
    late_mix = detectors[("mixture field", "late")]
    late_kts, gap_kts = detectors.get(("EFM + landing", "late")), detectors.get(("EFM + landing", "gap"))
    return {
        "fmem_efm": mem_plain.value, "fmem_efm_ci": list(mem_plain.ci95),
        "fmem_kts_best": float(best["F_mem"]), "fmem_kts_best_config": best_name,
        "fmem_kts_best_heldout_rms": float(best["held-out dist (RMS)"]), "fmem_kts_best_rule":
            f"lowest F_mem with held-out distance <= {1 + tolerance:g} x real faces'",
        "fmem_kts_lowest": float(sweep.loc[lowest_name, "F_mem"]), "fmem_kts_lowest_config": lowest_name,
        "fmem_kts_balanced": fmem(balanced_name), "fmem_landing_002": fmem(land02) if land02 else None,
        "fmem_launch": {n: fmem(n) for n in launch_names},
        "late_kpe_auroc": late_mix.auroc, "late_kpe_auroc_ci": list(late_mix.ci95),
        "total_kpe_auroc": detectors[("mixture field", "kpe")].auroc,
        "late_kpe_auroc_efm_landing": late_kts.auroc if late_kts else None,
        "gap_auroc_efm_landing": gap_kts.auroc if gap_kts else None,
        "fmem_mixture_field": mem_mix.value,
        "theory_r2_min": theory_r2_min,
        "theory_slope_range": [float(dominated["slope"].min()), float(dominated["slope"].max())],
        "theory_intercept_rel_err_max": float(rel_icpt.abs().max()),
        "commit_time_median": commit_median, "kpe_efm_mean": kpe_mean,
        "kpe_efm_over_theory": kpe_ratio, "analytic_fmem_max_abs_err": pred_gap,
        "heldout_rms_real": heldout_rms_real,
        "sweep": {name: {"F_mem": r["F_mem"], "F_mem_predicted": None if math.isnan(r["F_mem predicted"])
                         else r["F_mem predicted"], "kpe": r["KPE"], "kpe_early": r["KPE early"],
                         "kpe_late": r["KPE late"], "heldout_rms": r["held-out dist (RMS)"]}
                  for name, r in sweep.iterrows()},
        "cifar_fmem_efm": cifar.mem.value, "cifar_fmem_landing": cifar.mem_landing.value,
        "cifar_commit_time_median": float(cifar.commit.median()),
    }


def chapter_protocol(data: ChapterData, params: Mapping[str, Any], *, n_steps: int, k_rate: float, tau_split: float,
                     seed: int) -> dict[str, Any]:
    """The protocol of the results file: velocity, sampler, data, KTS settings, the mixture field, the
    energy-density design, bootstrap and versions. ``params``: the chapter's ``efm_*`` parameters."""
    p = params
    return {
        "velocity": "EFM closed form (Mathematics §4), float64", "solver": "euler", "grid": "uniform",
        "n_steps": n_steps, "energy_rule": "solver (Euler left sum)", "n_samples": p["efm_n_samples"],
        "same_noise_all_configs": True,
        "celeba": f"train split, first {data.n_train} images in natural order, 32x32 grayscale, mean "
                  f"{data.faces.mean:.4f} subtracted (Mathematics §6); held-out: next {len(data.heldout)} images",
        "fmem": "d1/d2 < 1/3, centred pixels",
        "cifar10": f"first {len(data.cifar.images)} train images, RGB, mean subtracted, "
                   f"{p['efm_cifar_n_samples']} samples",
        "kts": {"k": k_rate, "tau_split": tau_split, "beta0_sweep": p["efm_beta0_sweep"],
                "tau_sweep": p["efm_tau_sweep"], "tau_sweep_beta0": p["efm_landing_beta0"],
                "eta_end_forms": p["efm_eta_end"], "launch_alpha0": p["efm_launch_alpha0"],
                "balanced": p["efm_balanced"]},
        "mixture_field": {"rho": p["efm_mix_rho"], "cov_floor": p["efm_mix_cov_floor"]},
        "theory": {"times": p["efm_theory_times"], "points": p["efm_theory_points"],
                   "noise_scale": p["efm_theory_noise_scale"], "thresholds": p["efm_dominance"],
                   "r2_min_over": "times with >= 30 points at the top threshold"},
        "n_boot": p["efm_n_boot"], "seed": seed, "torch": torch.__version__, "kpe_lib": kpe_lib.__version__,
    }
