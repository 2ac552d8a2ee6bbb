"""The chapter's tables and records: FIDs with their protocol, summary tables with paired changes against
FM, the FID-F_mem plane, and the metrics and protocol written to the results file (Mathematics §5, §6).

Example:
    >>> fids = FidBench(reference, n_ref=200, train_mean=0.43, nfe=100)     # doctest: +SKIP
    >>> fids.add_all(evals, ["FM", "balanced"])                             # doctest: +SKIP
    >>> df = summary_table(["FM", "balanced"], evals, reference)           # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib.experiments.celeba_kts.configs import (ConfigEval, PairedFidChanges, fid_of_images, pareto_mask,
                                                    summary_row, to_unit_range)
from kpe_lib.metrics import FrechetReference, inception_protocol
from kpe_lib.training import TrainResult

__all__ = ["FidBench", "summary_table", "select_columns", "MAIN_COLUMNS", "SUBSET_COLUMNS", "TAU_COLUMNS",
           "FORM_COLUMNS", "EA_COLUMNS", "steps_table", "damping_rows", "plane_table", "config_metrics",
           "chapter_metrics", "chapter_protocol", "kid_metrics", "CONFIG_KEYS", "CONTROL_KEYS",
           "detector_record"]

_CHANGES = ["dfmem_pct", "dfmem_ci_lo_pct", "dfmem_ci_hi_pct"]
_FID = ["fid", "dfid", "dfid_ci_lo", "dfid_ci_hi"]
#: columns shown of each table (those present: FID columns only where FIDs were computed)
MAIN_COLUMNS = ["alpha0", "beta0", "budget", "eta1", *_FID, "fmem_pct", "fmem_ci_lo_pct", "fmem_ci_hi_pct", *_CHANGES,
                "kpe", "kpe_early", "kpe_late"]
SUBSET_COLUMNS = ["fid", "dfid", "fmem_pct", *_CHANGES]
TAU_COLUMNS = ["tau_split_value", "budget", "fid", "dfid", "dfid_ci_lo", "dfid_ci_hi", "fmem_pct", *_CHANGES,
               "kpe_early", "kpe_late"]
FORM_COLUMNS = ["launch", "landing", "alpha0", "beta0", "budget", "eta1", *_FID, "fmem_pct", *_CHANGES, "kpe_early",
                "kpe_late"]
EA_COLUMNS = ["beta0", *_FID, "fmem_pct", *_CHANGES, "kpe_late"]


@dataclass
class FidBench:
    """FIDs of sample sets against one reference (TF-Inception pool_3, Mathematics §5), with their protocol.

    Attributes:
        reference: the reference statistics, prepared once.
        n_ref: images behind the reference.
        train_mean: the training mean the model's space is centred by (added back before Inception).
        device: torch device of Inception.
        nfe: Euler steps of the sample sets (for the protocol line).
        ema: whether the sampled weights are an EMA.
    """

    reference: FrechetReference
    n_ref: int
    train_mean: float | torch.Tensor
    device: str = "cpu"
    nfe: int = 100
    ema: bool = False

    def tag(self, n: int) -> str:
        """The protocol line printed beside FIDs of ``n`` generated images."""
        return (f"FID: TF-Inception pool_3, {self.n_ref} test-split reference images vs {n} generated, "
                f"Euler NFE {self.nfe}, uniform grid, {'EMA' if self.ema else 'no EMA'}")

    def add(self, ev: ConfigEval) -> float:
        """FID of one configuration's samples (one Inception pass), stored on it with the (B, 2048) features;
        a configuration that has a FID keeps it."""
        if ev.fid is None:
            ev.fid, ev.features = fid_of_images(to_unit_range(ev.samples, self.train_mean), self.reference,
                                                device=self.device)
        return ev.fid

    def add_all(self, evals: Mapping[str, ConfigEval], names: Sequence[str]) -> None:
        """:meth:`add` for ``evals[name]``, in the order of ``names``."""
        for name in names:
            self.add(evals[name])

    def real_floor(self, images01: torch.Tensor, n_first: int) -> tuple[float, float]:
        """FID of real images (N, 1, H, W) in [0, 1], and of their first ``n_first`` (from the same features):
        the floor a perfect sampler would score at those counts."""
        fid, features = fid_of_images(images01, self.reference, device=self.device)
        return fid, self.reference.fid(features[:n_first])

    def protocol(self, n_main: int, n_ablation: int) -> dict[str, Any]:
        """The FID protocol for the results file."""
        return dict(inception_protocol(), reference=f"CelebA test split of the local subset, {self.n_ref} images",
                    n_generated={"main table": n_main, "ablations and the FID-F_mem plane": n_ablation},
                    solver="euler", nfe=self.nfe, grid="uniform", ema=self.ema,
                    generated_space="pixels + training mean, clipped to [0, 1]")


def summary_table(names: Sequence[str], evals: Mapping[str, ConfigEval], reference: FrechetReference, *,
                  base: str = "FM", n_boot: int = 1000, seed: int = 0, stats_device: str | None = None,
                  changes: PairedFidChanges | None = None) -> pd.DataFrame:
    """One :func:`summary_row` per configuration, indexed by name: paired changes of F_mem against ``base``
    and, where both have Inception features, the paired change of FID (``dfid`` with its 95% interval;
    ``stats_device`` runs its bootstrap in torch there, None in numpy on the CPU).

    ``changes`` (built with the same ``n_boot`` and ``seed``) keeps the FID bootstraps, so a pair asked for
    again, here or by :func:`~kpe_lib.experiments.celeba_kts.readings.chapter_tests`, is not recomputed; None: a fresh one for this table.
    """
    changes = _changes(changes, reference, n_boot, seed, stats_device)
    rows = []
    for n in names:
        row = summary_row(evals[n], None if n == base else evals[base], n_boot=n_boot, seed=seed)
        if n != base and evals[n].features is not None and evals[base].features is not None:
            d = changes.change(evals[base].features, evals[n].features)
            row.update(dfid=d.change, dfid_ci_lo=d.ci[0], dfid_ci_hi=d.ci[1])
        rows.append(row)
    return pd.DataFrame(rows).set_index("config")


def _changes(changes: PairedFidChanges | None, reference: FrechetReference, n_boot: int, seed: int,
             stats_device: str | None) -> PairedFidChanges:
    """``changes`` checked against the settings asked for, or a new one with them."""
    if changes is None:
        return PairedFidChanges(reference, n_boot=n_boot, seed=seed, device=stats_device)
    if not isinstance(changes, PairedFidChanges):
        raise ValueError(f"changes must be a PairedFidChanges or None, got {type(changes).__name__}")
    if changes.reference is not reference:
        raise ValueError("changes was built for another FID reference than the one given")
    changes.check(n_boot, seed)
    return changes


def select_columns(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """The ``columns`` that ``df`` has, in that order, rounded to 2 decimals."""
    return df[[c for c in columns if c in df.columns]].round(2)


def steps_table(runs: Mapping[int, TrainResult], steps_evals: Mapping[int, ConfigEval],
                kids: Mapping[int, Mapping[str, Any]] | None = None, fid_floor: float | None = None) -> pd.DataFrame:
    """Per snapshot: the training loss (mean of the last 50 steps), F_mem (%, with its 95% interval), mean KPE
    and, where computed, FID, its ratio to ``fid_floor`` (the copier's floor at the same count) and KID
    (``kids``: step -> :func:`kid_metrics` entry)."""
    rows = []
    for s, e in steps_evals.items():
        row = {"steps": s, "loss (last 50)": float(np.mean(runs[s].losses[-50:])), "F_mem %": 100 * e.memorization.value,
               "95% CI": "[{:.1f}, {:.1f}]".format(*(100 * np.array(e.memorization.ci95))),
               "KPE (mean)": float(e.kpe.mean()), "late KPE (mean)": float(e.kpe_late.mean())}
        if getattr(e, "fid", None) is not None:
            row["FID"] = e.fid
            if fid_floor is not None:
                row["FID / copier floor"] = e.fid / fid_floor
        if kids and s in kids:
            row["KID"] = kids[s]["kid"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("steps")


def damping_rows(evals: Mapping[str, ConfigEval], names: Sequence[str], memorised: torch.Tensor
                 ) -> list[dict[str, Any]]:
    """For every energy-aware configuration among ``names``: the share of paths it damped, the share of
    FM-memorised samples among the damped ones, and the share of the FM-memorised samples it damped (%,
    NaN when a group is empty). ``memorised``: (B,) bool, which samples FM memorised on the same noise."""
    rows = []
    for name in names:
        ev = evals[name]
        if ev.damped is not None:
            rows.append({"config": name, "damped %": 100 * float(ev.damped.double().mean()),
                         "FM-memorised among damped %": 100 * float(memorised[ev.damped].double().mean())
                         if bool(ev.damped.any()) else float("nan"),
                         "FM-memorised that were damped %": 100 * float(ev.damped[memorised].double().mean())
                         if bool(memorised.any()) else float("nan")})
    return rows


def plane_table(evals: Mapping[str, ConfigEval]) -> pd.DataFrame:
    """Every configuration with a FID: group, FID, F_mem (%) with its standard error, and whether it is on the
    Pareto front of (FID, F_mem), both minimised."""
    with_fid = [n for n, e in evals.items() if e.fid is not None]
    plane = pd.DataFrame({"config": with_fid, "group": [evals[n].spec.group for n in with_fid],
                          "fid": [evals[n].fid for n in with_fid],
                          "fmem_pct": [100 * evals[n].memorization.value for n in with_fid],
                          "fmem_se": [100 * evals[n].memorization.stderr for n in with_fid]}).set_index("config")
    plane["pareto"] = pareto_mask(plane["fid"], plane["fmem_pct"])
    return plane


#: short keys of the main table's KTS configurations in the results file (``fmem_kts``, ``fid_launch``, ...)
CONFIG_KEYS = {"balanced": "kts", "launch only": "launch", "landing only": "landing"}
#: the budget controls' name suffixes (``control_specs``) and their key suffixes in the results file
CONTROL_KEYS = {"constant budget": "budget_constant", "renormalised": "budget_renormalised"}


def config_metrics(ev: ConfigEval) -> dict[str, Any]:
    """FID, F_mem with its interval, mean KPE (total, early, late), the time budget and ``eta(1)`` of one
    configuration."""
    return {"fid": ev.fid, "fmem": ev.memorization.value, "fmem_ci95": list(ev.memorization.ci95),
            "kpe": float(ev.kpe.mean()), "kpe_early": float(ev.kpe_early.mean()),
            "kpe_late": float(ev.kpe_late.mean()), "time_budget": ev.spec.budget,
            "eta1": float(ev.spec.gain(1.0))}


def detector_record(result: Any) -> dict[str, Any]:
    """A ``kpe_lib.metrics.DetectorResult`` as plain numbers for the results file."""
    return {"auroc": float(result.auroc), "ci95": [float(result.ci_low), float(result.ci_high)],
            "n_pos": int(result.n_pos), "n_neg": int(result.n_neg), "n_boot": int(result.n_boot)}


def chapter_metrics(evals: Mapping[str, ConfigEval], abl: Mapping[str, ConfigEval], main_df: pd.DataFrame, *,
                    main_names: Sequence[str], n_ablation: int, taus: Sequence[float], tau_names: Sequence[str],
                    form_names: Mapping[tuple[str, str], str], solver_rows: Sequence[Mapping[str, Any]],
                    ea_names: Sequence[str], steps_evals: Mapping[int, ConfigEval], plane: pd.DataFrame,
                    fid_real: float | None, fid_real_abl: float | None,
                    kids: Mapping[str, Mapping[str, Any]] | None = None,
                    kids_abl: Mapping[str, Mapping[str, Any]] | None = None,
                    tests: Mapping[str, Any] | None = None, fid_train_floor: float | None = None,
                    regime_kids: Mapping[int, Mapping[str, Any]] | None = None,
                    auroc: Mapping[str, Any] | None = None, testbed: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """The metrics of the results file (F_mem as fractions, changes as fractions, FIDs as they are).

    Args:
        evals: the main table's runs (FM, ``main_names`` and their budget controls, named as by
            :func:`~kpe_lib.experiments.celeba_kts.runs.control_specs`) on the whole shared noise.
        abl: the ablations' runs on its first ``n_ablation`` samples.
        main_df: :func:`summary_table` of the main table.
        main_names: the KTS configurations of the main table (keys of ``CONFIG_KEYS``).
        taus, tau_names: the tau_split sweep and its configuration names.
        form_names: (launch, landing) -> configuration name.
        solver_rows: :attr:`SolverGrid.rows` (empty when the solver ablation did not run).
        ea_names: the energy-aware ablation's configurations.
        steps_evals: step count -> FM evaluation over training; regime_kids: step count -> its KID.
        plane: :func:`plane_table`.
        fid_real, fid_real_abl: the real-image FID floors (None when not computed).
        fid_train_floor: FID of as many draws of the *training* images as samples (the copier's floor).
        kids, kids_abl: :func:`kid_metrics` of the main table and of the ablations (new keys ``kid_*``).
        tests: :func:`~kpe_lib.experiments.celeba_kts.readings.chapter_tests`, stored under ``"tests"`` for the scoreboard rows.
        auroc: ``{"late": DetectorResult, "total": DetectorResult}`` of KPE detecting FM's memorised samples.
        testbed: the smoothed-empirical testbed's record (``sigma``, ``fmem_fm``, ``fmem_kts``, ...).
    """
    kids, kids_abl = kids or {}, kids_abl or {}
    names = [n for n in main_df.index if n != "FM"]
    out: dict[str, Any] = {
        "n_samples": int(evals["FM"].samples.shape[0]),
        "fid_fm": evals["FM"].fid, "fmem_fm": evals["FM"].memorization.value,
        "fid_real_baseline": fid_real, "fid_train_floor": fid_train_floor,
        "dfmem_vs_fm": {n: float(main_df.loc[n, "dfmem_pct"]) / 100 for n in names},
        "dfmem_ci95_vs_fm": {n: [float(main_df.loc[n, "dfmem_ci_lo_pct"]) / 100,
                                 float(main_df.loc[n, "dfmem_ci_hi_pct"]) / 100] for n in names},
        "dfid_vs_fm": {n: float(main_df.loc[n, "dfid"]) for n in names if "dfid" in main_df and
                       pd.notna(main_df.loc[n, "dfid"])},
        "dfid_ci95_vs_fm": {n: [float(main_df.loc[n, "dfid_ci_lo"]), float(main_df.loc[n, "dfid_ci_hi"])]
                            for n in names if "dfid" in main_df and pd.notna(main_df.loc[n, "dfid"])},
    }
    for n in main_names:
        key = CONFIG_KEYS.get(n, n)
        out[f"fmem_{key}"], out[f"fid_{key}"] = evals[n].memorization.value, evals[n].fid
        out[f"time_budget_{key}"] = evals[n].spec.budget
        for suffix, ksuffix in CONTROL_KEYS.items():
            control = f"{n} | {suffix}"
            if control in evals:
                out[f"fmem_{key}_{ksuffix}"] = evals[control].memorization.value
                out[f"fid_{key}_{ksuffix}"] = evals[control].fid
    for n, record in kids.items():
        if n == "FM" or n in main_names:
            key = "fm" if n == "FM" else CONFIG_KEYS.get(n, n)
        else:
            base, _, suffix = n.partition(" | ")
            if base not in main_names or suffix not in CONTROL_KEYS:
                continue
            key = f"{CONFIG_KEYS.get(base, base)}_{CONTROL_KEYS[suffix]}"
        out[f"kid_{key}"], out[f"kid_{key}_ci95"] = record["kid"], record["kid_ci95"]
    out.update({
        "fid_real_baseline_ablation": fid_real_abl,
        "ablation_n_samples": n_ablation,
        "ablation_reference": {n: config_metrics(abl[n]) for n in ["FM", *main_names] if n in abl},
        "tau_sweep": {f"{t:g}": {"fid": abl[n].fid, "fmem": abl[n].memorization.value,
                                 "time_budget": abl[n].spec.budget} for t, n in zip(taus, tau_names)},
        "forms": {f"{lf}/{gf}": {"fid": abl[n].fid, "fmem": abl[n].memorization.value, "time_budget": abl[n].spec.budget,
                                 "alpha0": abl[n].spec.gain.alpha0, "beta0": abl[n].spec.gain.beta0,
                                 "eta1": float(abl[n].spec.gain(1.0))} for (lf, gf), n in form_names.items()},
        "solver_grid": {r["solver"] + f"/{r['nfe']}/" + r["grid"]: {
            "fmem_fm": r["F_mem FM %"] / 100, "fmem_kts": r["F_mem KTS %"] / 100, "change": r["change (points)"] / 100,
            "change_ci95": [r["CI lo"] / 100, r["CI hi"] / 100]} for r in solver_rows},
        "energy_aware": {n: config_metrics(abl[n]) | ({"damped": float(abl[n].damped.double().mean())}
                                                      if abl[n].damped is not None else {}) for n in ea_names},
        "fmem_vs_steps": {str(s): e.memorization.value for s, e in steps_evals.items()},
        "regime": {str(s): {"fmem": e.memorization.value, "fid": e.fid, "n_samples": int(e.samples.shape[0]),
                            "kid": (regime_kids or {}).get(s, {}).get("kid")} for s, e in steps_evals.items()},
        "main": {n: config_metrics(evals[n]) for n in dict.fromkeys(["FM", *main_df.index])},
        "pareto_front": [n for n in plane.index if plane.loc[n, "pareto"]],
        "kid_main": dict(kids), "kid_ablation": dict(kids_abl),
    })
    if auroc:
        for which, result in auroc.items():
            record = detector_record(result)
            out[f"{which}_kpe_auroc_trained"], out[f"{which}_kpe_auroc_trained_ci95"] = record["auroc"], record["ci95"]
            out.setdefault("kpe_auroc_trained", {})[which] = record
    if testbed:
        out.update(testbed_sigma=testbed["sigma"], testbed_fmem_fm=testbed["fmem_fm"],
                   testbed_fmem_kts=testbed["fmem_kts"], testbed=dict(testbed))
    out["tests"] = dict(tests or {})
    return out


def chapter_protocol(*, n_train: int, index: int, train_mean: float, model_config: dict[str, Any], n_params: int,
                     training: dict[str, Any], n_samples: int, n_ablation: int, noise_seed: int, nfe: int,
                     n_solver: int, solver_nfes: Sequence[int], n_boot: int, fid: Mapping[str, Any],
                     decide_at: float | None, ea: Sequence[Sequence[float]],
                     ea_continuous: Sequence[Sequence[float]], testbed: Mapping[str, Any] | None = None
                     ) -> dict[str, Any]:
    """The protocol of the results file: data, model, training, sampling, F_mem, FID and energy-aware settings.

    Args:
        training: the training settings (steps, batch size, lr, EMA decay, seed) as written.
        n_samples, n_ablation, n_solver: samples of the main table, the ablations and the solver grid.
        noise_seed: seed of the shared noise's generator.
        fid: :meth:`FidBench.protocol`.
        testbed: the smoothed-empirical testbed's settings (training images, widths swept, target, samples).
    """
    return {
        "data": {"dataset": "CelebA img_align_celeba, local 6,000-image subset", "n_train": n_train,
                 "index": index, "preprocessing": "short side 32, centre crop, BT.601 gray, minus train mean",
                 "train_mean": train_mean},
        "model": model_config, "n_params": n_params,
        "training": training,
        "sampling": {"n_samples": n_samples, "ablation_n_samples": n_ablation, "noise_seed": noise_seed,
                     "solver": "euler", "nfe": nfe, "grid": "uniform",
                     "solver_ablation_n_samples": n_solver, "solver_ablation_nfes": list(solver_nfes),
                     "nfe_definition": "velocity evaluations per sample (midpoint: nfe / 2 steps)"},
        "fmem": {"space": "centred grayscale pixels", "threshold": "d1/d2 < 1/3", "n_boot": n_boot,
                 "changes": "paired bootstrap over samples on the same noise"},
        "fid": {k: v for k, v in fid.items()},
        "budget_controls": {"constant budget": "eta == T[eta_KTS] = int_0^1 eta_KTS dt (Mathematics 3.5)",
                            "renormalised": "eta_KTS / T[eta_KTS] (budget 1)",
                            "forms": "every launch x landing pair matched to balanced KTS's launch and landing time"},
        "testbed": dict(testbed or {}),
        "energy_aware": {"signal": "running time-mean (left rule) of raw late power 1/2|v|^2 since tau_split",
                         "decide_at": decide_at,
                         "threshold": "quantile of the FM run's mean power over [tau_split, decide_at) (same noise)",
                         "configs": ea, "continuous_configs": ea_continuous},
    }


def kid_metrics(ref_features: torch.Tensor | np.ndarray, evals: Mapping[str, ConfigEval], names: Sequence[str],
                *, n_boot: int = 1000, seed: int = 0, stats_device: str | None = None) -> dict[str, dict[str, Any]]:
    """KID (polynomial kernel, :func:`kpe_lib.metrics.kid_with_ci`) of every configuration among ``names`` that has
    Inception features, against the reference's features (the same features as its FID): {name: {kid, kid_ci95}}."""
    from kpe_lib.metrics import kid_with_ci

    out = {}
    for n in names:
        if evals[n].features is not None:
            k = kid_with_ci(ref_features, evals[n].features, n_boot=n_boot, seed=seed, device=stats_device)
            out[n] = {"kid": float(k.value), "kid_ci95": [float(k.ci[0]), float(k.ci[1])]}
    return out
