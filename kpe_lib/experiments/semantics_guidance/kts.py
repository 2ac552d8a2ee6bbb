"""KTS on the class-conditional model, and the chapter's results file (Mathematics §3, §5).

:func:`kts_study` samples plain flow matching, the kinetic launch and the soft landing from the same noise
and scores each set with FID, precision, recall and the semantic scorer; :func:`group_reading` and
:func:`guidance_reading` turn the group and sweep numbers into the sentences the chapter's summary glues;
:func:`chapter_metrics` and :func:`chapter_protocol` assemble ``results/<scale>/05_semantics_guidance.json``.
Each does what one cell of ``notebooks/05_semantics_guidance.md`` used to spell out, in the same order.

Example:
    >>> settings = {"FM": None, "launch": KTS(alpha0=0.05, beta0=0.0, tau_split=0.6)}   # doctest: +SKIP
    >>> kts = kts_study(backend, main, settings, ref, guidance=1.5, n=200, n_steps=40)   # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib.experiments.semantics_guidance import SemanticBackend
from kpe_lib.experiments.semantics_guidance.analysis import GuidanceSplit, GroupStudy, MainRun, Sweep
from kpe_lib.experiments.semantics_guidance.prepare import FidReference
from kpe_lib.experiments.semantics_guidance.row_tests import setting_key
from kpe_lib.metrics.groups import GroupComparison
from kpe_lib.metrics.quality import QualityResult, sample_quality
from kpe_lib.models.guidance import gain_description, sample_guided

ROW_TESTS = {
    "groups": "within-class rows (primary): groups cut inside each class, stratified permutation test with a "
              "stratified bootstrap 95% interval of the class-averaged mean(high) - mean(low), Welch p beside; "
              "pooled rows: the global cut, Welch t (two-sided) with Welch's 95% interval, Mann-Whitney p beside",
    "kts": "FM, launch and both landings share the noise and classes: paired bootstrap of the FID / KID / recall "
           "change "
           "(noise vectors resampled, reference fixed); score: paired t on the per-sample differences with the "
           "paired bootstrap 95% interval of their mean (Wilcoxon signed-rank p beside)",
}

__all__ = ["KTSStudy", "kts_study", "group_reading", "guidance_reading", "chapter_metrics", "chapter_protocol"]


@dataclass
class KTSStudy:
    """Plain FM and KTS runs from the same noise, with their sample quality.

    Attributes:
        runs: setting -> {"kpe", "kpe_early", "kpe_late", "score", "margin": (n,), "images": (n, 3, H, W)}.
        quality: setting -> FID, precision and recall against the reference.
        real_quality: the same scores of held-out real images (the small-sample floor), or None.
        table: one row per setting (and the real-image floor): FID, precision, recall, mean score, margin, KPE.
        fid_protocol: one paragraph stating the FID protocol and its limits.
        n: samples per setting.
    """

    runs: dict[str, dict[str, torch.Tensor]]
    quality: dict[str, QualityResult]
    real_quality: QualityResult | None
    table: pd.DataFrame
    fid_protocol: str
    n: int


def kts_study(backend: SemanticBackend, main: MainRun, settings: Mapping[str, Any], ref: FidReference, *,
              guidance: float, n: int, n_steps: int, batch_size: int = 300, device: str = "cpu",
              real_baseline: bool = True) -> KTSStudy:
    """Sample every setting on the first ``n`` noises of the main run and score it (FM reuses the main run).

    Args:
        backend: the model and scorer; main: the main run (noise, labels, samples).
        settings: name -> KTS gain, or None for plain flow matching (the main run's first ``n`` samples).
        ref: the FID reference and the held-out real images.
        guidance: CFG weight of every run; n: samples per setting; n_steps: Euler steps.
        batch_size, device: as for the main run.
        real_baseline: also score the held-out real images (when there are more than 3).

    Raises:
        AssertionError: non-finite states, negative KPE, or an early/late split that does not add up.
    """
    noise, labels, samples, reference = main.noise, main.labels, main.samples, ref.reference
    ema = bool(backend.protocol.get("ema", True))
    runs, quality = {}, {}
    for name, gain in settings.items():
        if gain is None:
            x_s, kpe_s = samples.x[:n], samples.kpe[:n]
        else:
            run = sample_guided(backend.model, noise.x0[:n].to(device), labels[:n].to(device), scale=guidance,
                                gain=gain, n_steps=n_steps, batch_size=batch_size, guide=backend.guide)
            x_s, kpe_s = run.x, run.kpe
            if not torch.allclose(run.kpe_early + run.kpe_late, run.kpe, rtol=1e-12, atol=0):
                raise AssertionError(f"{name}: early + late KPE differs from the total")
        if not (torch.isfinite(x_s).all() and (kpe_s >= 0).all()):
            raise AssertionError(f"{name}: non-finite states or negative KPE")
        img_s = backend.to_images(x_s).cpu()
        sem_s = backend.semantics(img_s, labels[:n])
        early_s = samples.kpe_early[:n] if gain is None else run.kpe_early
        late_s = samples.kpe_late[:n] if gain is None else run.kpe_late
        runs[name] = {"kpe": kpe_s.cpu(), "kpe_early": early_s.cpu(), "kpe_late": late_s.cpu(),
                      "score": sem_s.score, "margin": sem_s.margin, "images": img_s}
        quality[name] = sample_quality(
            reference, img_s, {"generated": f"{n} samples, {name}", "solver": "euler", "nfe": n_steps,
                               "guidance": guidance, "ema": ema,
                               "kts": gain_description(gain)}, device=device)
    real = ref.real_held_out
    real_quality = (sample_quality(reference, real, {"generated": f"{len(real)} held-out real images (no model)"},
                                   device=device)
                    if real_baseline and len(real) > 3 else None)
    rows = []
    for name, r in runs.items():
        q = quality[name]
        rows.append({"setting": name, "FID": q.fid, **_kid_columns(q), "precision": q.precision, "recall": q.recall,
                     f"mean {backend.score_name}": float(r["score"].mean()),
                     f"mean {backend.margin_name}": float(r["margin"].mean()),
                     "mean KPE": float(r["kpe"].mean())})
    if real_quality is not None:
        rows.append({"setting": "real images (floor)", "FID": real_quality.fid, **_kid_columns(real_quality),
                     "precision": real_quality.precision, "recall": real_quality.recall})
    protocol = (f"FID, KID (with its bootstrap 95% interval over the generated set), precision and recall (k = 3): "
                f"TF-Inception pool features (2048-d, 299x299 bilinear); "
                f"reference: {ref.description['reference']}; generated: {n} samples per setting, Euler, "
                f"NFE {n_steps} ({2 * n_steps} network evaluations), CFG {guidance}, "
                f"{'EMA' if ema else 'raw'} weights. Small sample counts: FID at "
                f"{n} vs {reference.n} images is biased upwards and noisy; compare rows, not with the paper.")
    return KTSStudy(runs=runs, quality=quality, real_quality=real_quality,
                    table=pd.DataFrame(rows).set_index("setting"), fid_protocol=protocol, n=n)


def _kid_columns(q: QualityResult) -> dict[str, Any]:
    """KID and its 95% interval as table columns (empty when the quality result has no KID)."""
    kid = getattr(q, "kid", None)
    return {} if kid is None else {"KID": kid.value, "KID 95% CI": f"[{kid.ci[0]:.3g}, {kid.ci[1]:.3g}]"}


def group_reading(score_cmp: GroupComparison, cls_score: GroupComparison, class_table: pd.DataFrame,
                  rho_class: float | None, within_p: float | None = None) -> str:
    """One sentence (Markdown) on where the low/high KPE difference of the score comes from.

    *Between classes* when the global cut is significant (either test, p < 0.05) with a higher high-KPE mean
    but the within-class cut is not (``within_p`` >= 0.05); *within classes* when the within-class cut is
    significant with a higher high-KPE mean; *reversed* when it is significant with a lower one; otherwise
    neither cut shows a clear difference.

    Args:
        score_cmp: the global comparison of the score; cls_score: the within-class one.
        within_p: the within-class p-value to read (the stratified permutation test's); None: Welch's.
        class_table: per-class means (columns "mean KPE", index the class names), for the top-3 classes.
        rho_class: Spearman of class mean KPE and class mean score.
    """
    top_kpe = ", ".join(class_table["mean KPE"].sort_values(ascending=False).index[:3])
    p_in = cls_score.welch_p if within_p is None else within_p
    if score_cmp.diff > 0 and min(score_cmp.welch_p, score_cmp.mw_p) < 0.05 and p_in >= 0.05:
        return (f"In this run the difference comes from *between* classes: the classes whose samples spend the "
                f"most energy ({top_kpe}) are among those the scorer recognises best (class-level Spearman of "
                f"mean KPE and mean score {rho_class:+.2f}), while within a class the high- and low-KPE "
                f"samples score alike (within-class cut: {cls_score.mean_low:.2f} -> {cls_score.mean_high:.2f}, "
                f"p = {p_in:.2g}). A global cut alone would have credited KPE with an effect of "
                f"the class mix.")
    if cls_score.diff > 0 and p_in < 0.05:
        return (f"Within classes the high-KPE samples score higher ({cls_score.mean_low:.2f} -> "
                f"{cls_score.mean_high:.2f}, p = {p_in:.2g}), so the difference is not only an effect of which "
                f"classes spend more energy.")
    if cls_score.diff < 0 and p_in < 0.05:
        return (f"Within classes the high-KPE samples score *lower* ({cls_score.mean_low:.2f} -> "
                f"{cls_score.mean_high:.2f}, p = {p_in:.2g}): the reverse of the paper's direction.")
    return (f"Neither cut shows a clear difference in this run (global p = {score_cmp.welch_p:.2g}, "
            f"within class p = {p_in:.2g}).")


def guidance_reading(trend: Mapping[str, float]) -> str:
    """One sentence on the sweep: do KPE, score and margin all rise with w (each Spearman with w > 0.5)?"""
    if trend["KPE"] > 0.5 and trend["score"] > 0.5 and trend["margin"] > 0.5:
        return ("Stronger guidance buys semantics with energy: across guidance scales, higher KPE goes with "
                "higher scores, the between-sample trade the paper reads into its KPE groups.")
    return "In this run the scores do not rise together with KPE across guidance scales."


def chapter_metrics(study: GroupStudy, cls_score: GroupComparison, sweep: Sweep, kts: KTSStudy, *,
                    classifier_accuracy: float | None = None, correct: torch.Tensor | None = None,
                    tests: Mapping[str, Any] | None = None, split: GuidanceSplit | None = None,
                    study_w1: GroupStudy | None = None) -> dict[str, Any]:
    """The ``metrics`` of the results file: group statistics, sweep means and trends, KTS scores (FID, KID,
    precision, recall, semantics) and the tests behind the scoreboard rows (no verdicts: the scoreboard
    judges them from these numbers).

    Args:
        study: the group study; cls_score: its within-class comparison of the score.
        sweep: the guidance sweep; kts: the KTS study.
        classifier_accuracy: held-out accuracy of the classifier (cifar backend only).
        correct: (B,) 0/1 "classified as intended" of the main run (cifar backend only).
        tests: the records behind the rows (``metrics["tests"]``), or None.
        split: the main run's energy split (``kpe_guidance_share``), or None.
        study_w1: the group study of the same noise at guidance 1 (``score_low_w1``, ``score_high_w1``: the
            within-class cut's means, and its stratified p), or None.
    """
    s, m = study.score_cmp, study.margin_cmp
    metrics = {
        "score_low": s.mean_low, "score_high": s.mean_high, "score_low_std": s.std_low, "score_high_std": s.std_high,
        "score_welch_p": s.welch_p, "score_mannwhitney_p": s.mw_p,
        "margin_low": m.mean_low, "margin_high": m.mean_high, "margin_low_std": m.std_low,
        "margin_high_std": m.std_high, "margin_welch_p": m.welch_p, "margin_mannwhitney_p": m.mw_p,
        "score_low_within_class": cls_score.mean_low, "score_high_within_class": cls_score.mean_high,
        "score_within_class_welch_p": cls_score.welch_p,
        "spearman_kpe_score": study.rho_score.value, "spearman_kpe_margin": study.rho_margin.value,
        "group_size": study.groups.n_low,
        "sweep": {f"{w:g}": {"kpe_mean": row["mean KPE"], "score_mean": row["mean score"],
                             "margin_mean": row["mean margin"]} for w, row in sweep.table.iterrows()},
        "sweep_spearman_w": {k: v for k, v in sweep.trend.items() if np.isfinite(v)},
        "kts": {name: {"fid": kts.quality[name].fid, "precision": kts.quality[name].precision,
                       "recall": kts.quality[name].recall, "score": float(r["score"].mean()),
                       "margin": float(r["margin"].mean()), "kpe_mean": float(r["kpe"].mean())}
                for name, r in kts.runs.items()},
    }
    for name in kts.runs:
        for key in ("fid", "score", "recall", "precision"):
            metrics[f"{key}_{setting_key(name)}"] = metrics["kts"][name][key]
    if kts.real_quality is not None:
        metrics["fid_real_floor"] = kts.real_quality.fid
    if classifier_accuracy is not None:
        metrics["classifier_test_accuracy"] = classifier_accuracy
    if correct is not None:
        metrics["generated_accuracy"] = float(correct.mean())
    _add_new_metrics(metrics, study, kts, tests)
    if study.stratified:
        metrics.update(score_within_class_p=study.stratified[study.score_name].p,
                       margin_within_class_p=study.stratified[study.margin_name].p)
    if split is not None:
        metrics["kpe_guidance_share"] = split.guidance_share
    if study_w1 is not None:
        w1 = study_w1.within("score")
        metrics.update(score_low_w1=w1.mean_low, score_high_w1=w1.mean_high,
                       score_w1_within_class_p=study_w1.stratified[study_w1.score_name].p
                       if study_w1.stratified else w1.welch_p)
    return metrics


def _add_new_metrics(metrics: dict[str, Any], study: GroupStudy, kts: KTSStudy, tests: Mapping[str, Any] | None
                     ) -> None:
    """The margin's within-class comparison (as the score's), KID beside every FID, and the row tests."""
    cm, cs = study.within("margin"), study.within("score")
    metrics.update(margin_low_within_class=cm.mean_low, margin_high_within_class=cm.mean_high,
                   margin_within_class_welch_p=cm.welch_p, margin_within_class_mannwhitney_p=cm.mw_p,
                   score_within_class_mannwhitney_p=cs.mw_p)
    for name, q in kts.quality.items():
        if getattr(q, "kid", None) is not None:
            metrics["kts"][name].update(kid=q.kid.value, kid_ci95=list(q.kid.ci))
            metrics[f"kid_{setting_key(name)}"] = q.kid.value
    real = kts.real_quality
    if real is not None and getattr(real, "kid", None) is not None:
        metrics.update(kid_real_floor=real.kid.value, kid_real_floor_ci95=list(real.kid.ci))
    if tests is not None:
        metrics["tests"] = dict(tests)


def chapter_protocol(backend_kind: str, backend: SemanticBackend, study: GroupStudy, main: MainRun,
                     sweep: Sweep, kts: KTSStudy, *, guidance: float, n_steps: int, n_samples: int,
                     sweep_scales: Sequence[float], seed: int, alpha0: float,
                     beta0: float, tau_split: float, paper_path_exercised: bool,
                     train_seconds: Mapping[str, Any]) -> dict[str, Any]:
    """The ``protocol`` of the results file: backend, scorer, group rule and tests, sampler, sweep, KTS, FID.

    Args:
        backend_kind: "cifar" or "sit"; backend: the backend used; study, main, sweep, kts: the chapter's runs.
        guidance, n_steps, n_samples: CFG weight, Euler steps and size of the main run.
        sweep_scales: the scales of the sweep; seed: the chapter's seed.
        alpha0, beta0, tau_split: the KTS launch and landing settings.
        paper_path_exercised: whether the paper-scale code path ran; train_seconds: training wall times.
    """
    n_perm = next(iter(study.stratified.values())).n_perm if study.stratified else 0
    return {
        "backend": backend_kind, "score": backend.score_name, "margin": backend.margin_name,
        "group_cut": study.groups.cut,
        "group_test": (f"within class: stratified permutation test ({n_perm:,} within-class shuffles) with a "
                       "stratified bootstrap interval, Welch t beside; pooled: Welch t (two-sided) and Mann-Whitney U"),
        "guidance": guidance, "solver": "euler", "grid": "uniform", "nfe": n_steps,
        "network_evals_per_sample": main.samples.model_evals, "n_samples": n_samples, "seed": seed,
        "sweep_scales": list(sweep_scales), "sweep_samples": sweep.n,
        "kts": {"launch": {"alpha0": alpha0, "form": "linear"},
                "landing": {"beta0": beta0, "form": "exponential", "k": 3.0},
                "landing (linear)": {"beta0": beta0, "form": "linear"}, "tau_split": tau_split},
        "fid": kts.fid_protocol, "fid_protocol": kts.quality["FM"].protocol,
        "row_tests": dict(ROW_TESTS),
        "backend_settings": backend.protocol, "paper_path_exercised": paper_path_exercised,
        "train_seconds": dict(train_seconds),
    }
