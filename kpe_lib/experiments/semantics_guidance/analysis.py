"""The computations of the semantics chapter: the main guided run, the low- vs high-KPE groups, the per-class
control, the guidance sweep and the KTS runs (Mathematics §2, §3, §5, §6).

Every function does what one cell of ``notebooks/05_semantics_guidance.md`` used to spell out, with the same
operations in the same order, so the chapter's numbers do not change. Tensors stay where the sampler leaves
them; per-sample quantities handed back are on the CPU.

Example:
    >>> main = main_guided_run(backend, 300, guidance=1.5, n_steps=40, seed=1)      # doctest: +SKIP
    >>> study = group_study(main.kpe, main.sem, main.correct, main.labels, "thirds",
    ...                     score_name=backend.score_name, margin_name=backend.margin_name)  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.stats
import torch

from kpe_lib.experiments.semantics_guidance import SemanticBackend
from kpe_lib.metrics import spearman_with_ci
from kpe_lib.metrics.groups import (GroupComparison, KPEGroups, StratifiedTest, compare_groups, kpe_groups,
                                    stratified_permutation_test)
from kpe_lib.metrics.semantic import SemanticResult
from kpe_lib.metrics.stats import SpearmanResult
from kpe_lib.models.guidance import GuidedSamples, NoiseBatch, class_balanced_noise, sample_guided

__all__ = ["MainRun", "GuidanceSplit", "GroupStudy", "ClassSummary", "Sweep", "main_guided_run", "guidance_split",
           "group_study", "class_summary",
           "per_class_extremes", "guidance_sweep", "standard_error", "sweep_trend"]


@dataclass
class MainRun:
    """The main guided run: class-balanced noise sampled with CFG, its images, KPE and semantics.

    Attributes:
        noise: (B, *sample_shape) starting noise and its (B,) labels ``i mod K``.
        samples: the sampler's output (states, KPE and its early/late split, per-step energy, grid).
        images: (B, 3, H, W) images in [0, 1] on the CPU.
        sem: (B,) semantic score and margin.
        kpe: (B,) float64 KPE on the CPU.
        labels: (B,) the classes asked for.
        correct: (B,) float64, 1 where the margin is positive (the classifier's top class is the intended one);
            None for a CLIP scorer.
    """

    noise: NoiseBatch
    samples: GuidedSamples
    images: torch.Tensor
    sem: SemanticResult
    kpe: torch.Tensor
    labels: torch.Tensor
    correct: torch.Tensor | None

    def summary(self) -> str:
        """Sample count, CFG, NFE, network evaluations, KPE median and 5-95% range, mean late share."""
        main, kpe = self.samples, self.kpe
        return (f"{len(main)} samples, CFG {main.scale}, NFE {main.nfe} ({main.model_evals} network evaluations "
                f"per sample): KPE median {kpe.median():.1f} (5-95%: {kpe.quantile(0.05):.1f} - "
                f"{kpe.quantile(0.95):.1f}), late share {float((main.kpe_late / main.kpe).mean()):.2f}")


def main_guided_run(backend: SemanticBackend, n: int, *, guidance: float, n_steps: int, seed: int,
                    batch_size: int = 300, device: str = "cpu", classifier: bool = True) -> MainRun:
    """Sample ``n`` class-balanced noises (seed ``seed``) with CFG ``guidance`` and score their images.

    Args:
        backend: the model, its guidance wrapper, decoder and semantic scorer.
        n: samples (sample i asks for class ``i mod K``).
        guidance: the CFG weight w.
        n_steps: Euler steps on a uniform grid.
        seed: the noise seed (the chapter passes ``seed + 1``).
        batch_size: samples per sampling batch.
        device: where the sampler runs.
        classifier: whether the scorer is a classifier (then ``correct`` is filled in).

    Where the guide can return its guidance part (``GuidedVelocity`` can), the run also splits every path's
    energy into its conditional and guidance parts (:func:`guidance_split`), from the same network calls.
    """
    noise = class_balanced_noise(n, backend.sample_shape, backend.num_classes, seed=seed)
    split = callable(getattr(backend.guide(backend.model, guidance), "velocity_and_guidance", None))
    main = sample_guided(backend.model, noise.x0.to(device), noise.labels.to(device), scale=guidance,
                         n_steps=n_steps, batch_size=batch_size, guide=backend.guide, diagnostics=split)
    images = backend.to_images(main.x).cpu()
    sem = backend.semantics(images, noise.labels)
    correct = (sem.margin > 0).double() if classifier else None  # margin > 0 <=> top class is the intended one
    return MainRun(noise=noise, samples=main, images=images, sem=sem, kpe=main.kpe.cpu(), labels=noise.labels,
                   correct=correct)


@dataclass
class GuidanceSplit:
    """A guided run's energy split into the conditional part, the guidance part and their cross term
    (Mathematics §2.5): ``v_w = v_y + g`` with ``g = (w - 1)(v_y - v_null)``, so
    ``1/2 int ||v_w||^2 = 1/2 int ||v_y||^2 + 1/2 int ||g||^2 + int <v_y, g>``.

    Attributes:
        table: one row per part (mean per sample and its share of the mean KPE).
        guidance_share: mean guidance energy over mean KPE (0 at w = 1).
        conditional, guidance: (B,) the two parts per sample (CPU, float64).
    """

    table: pd.DataFrame
    guidance_share: float
    conditional: torch.Tensor
    guidance: torch.Tensor


def guidance_split(samples: GuidedSamples) -> GuidanceSplit | None:
    """The :class:`GuidanceSplit` of a run sampled with ``diagnostics=True``; None when it was not."""
    if samples.guidance_energy is None or samples.conditional_energy is None:
        return None
    kpe, cond, guid = samples.kpe.cpu(), samples.conditional_energy.cpu(), samples.guidance_energy.cpu()
    parts = {"KPE (what the sampler follows)": kpe, "conditional part 1/2 int |v_y|^2": cond,
             "guidance part 1/2 int |(w-1)(v_y - v_null)|^2": guid, "cross term int <v_y, g>": kpe - cond - guid}
    total = float(kpe.mean())
    table = pd.DataFrame([{"part": name, "mean per sample": float(v.mean()), "share of KPE": float(v.mean()) / total}
                          for name, v in parts.items()]).set_index("part")
    return GuidanceSplit(table=table, guidance_share=float(guid.mean()) / total, conditional=cond, guidance=guid)


@dataclass
class GroupStudy:
    """Low- vs high-KPE groups, cut over all samples and within each class, and the tests between them.

    Attributes:
        groups: the global cut; groups_cls: the within-class cut (same count per class in both groups).
        comparisons: ``(cut, quantity) -> GroupComparison`` for cut in ("global", "within class").
        table: one row per comparison (formatted means ± std, difference, p-values, rank-biserial, n).
        score_cmp, margin_cmp: the global comparisons of score and margin.
        rho_score, rho_margin: Spearman(KPE, score / margin) over all samples with bootstrap intervals.
        score_name, margin_name: the quantity names the comparisons are keyed by.
        stratified: quantity name -> the stratified permutation test of the within-class cut (the primary
            evidence: group membership re-assigned only inside each class, so the class mix cannot matter).
    """

    groups: KPEGroups
    groups_cls: KPEGroups
    comparisons: dict[tuple[str, str], GroupComparison]
    table: pd.DataFrame
    score_cmp: GroupComparison
    margin_cmp: GroupComparison
    rho_score: SpearmanResult
    rho_margin: SpearmanResult
    score_name: str = "score"
    margin_name: str = "margin"
    stratified: dict[str, StratifiedTest] = field(default_factory=dict)

    def within(self, quantity: str) -> GroupComparison:
        """The within-class comparison of ``"score"`` or ``"margin"``."""
        return self.comparisons[("within class", {"score": self.score_name, "margin": self.margin_name}[quantity])]

    def spearman_line(self) -> str:
        """Spearman(KPE, score) and Spearman(KPE, margin) with their bootstrap 95% intervals, one sentence."""
        rs, rm = self.rho_score, self.rho_margin
        return (f"Spearman(KPE, score) = {rs.value:+.2f} [{rs.ci[0]:+.2f}, {rs.ci[1]:+.2f}], "
                f"Spearman(KPE, margin) = {rm.value:+.2f} [{rm.ci[0]:+.2f}, {rm.ci[1]:+.2f}] "
                f"(bootstrap 95% intervals over samples)")


def group_study(kpe: torch.Tensor, sem: SemanticResult, correct: torch.Tensor | None, labels: torch.Tensor,
                cut: str | float, *, score_name: str, margin_name: str, seed: int = 0,
                n_boot: int = 1000) -> GroupStudy:
    """Cut the low and high KPE groups and compare score, margin (and accuracy) between them: within each class
    first (stratified permutation test, Welch beside), then pooled over classes.

    Args:
        kpe: (B,) per-sample KPE.
        sem: (B,) semantic score and margin.
        correct: (B,) 0/1 "classified as intended", or None.
        labels: (B,) classes (the strata of the within-class cut).
        cut: the group rule of :func:`kpe_groups` ("thirds", ... or a fraction).
        score_name, margin_name: row names of the two quantities.
        seed: the bootstrap seed of the Spearman intervals.
        n_boot: bootstrap resamples of the Spearman intervals.
    """
    groups = kpe_groups(kpe, cut=cut)
    groups_cls = kpe_groups(kpe, cut=cut, strata=labels)
    quantities = {score_name: sem.score, margin_name: sem.margin}
    if correct is not None:
        quantities["classified as the intended class"] = correct
    stratified = {qname: stratified_permutation_test(values, groups_cls, labels, seed=seed)
                  for qname, values in quantities.items()}
    rows, comparisons = [], {}
    for cut_name, g in (("within class", groups_cls), ("global", groups)):
        for qname, values in quantities.items():
            c = comparisons[(cut_name, qname)] = compare_groups(values, g)
            rows.append({"cut": cut_name, "quantity": qname, "low KPE": f"{c.mean_low:.2f} ± {c.std_low:.2f}",
                         "high KPE": f"{c.mean_high:.2f} ± {c.std_high:.2f}", "difference": round(c.diff, 3),
                         "stratified p": f"{stratified[qname].p:.2g}" if cut_name == "within class" else "",
                         "Welch p": f"{c.welch_p:.2g}", "Mann-Whitney p": f"{c.mw_p:.2g}",
                         "rank-biserial": round(c.rank_biserial, 2), "n per group": c.n_low})
    table = pd.DataFrame(rows).set_index(["cut", "quantity"])
    rho_score = spearman_with_ci(kpe, sem.score, n_boot=n_boot, seed=seed)
    rho_margin = spearman_with_ci(kpe, sem.margin, n_boot=n_boot, seed=seed)
    return GroupStudy(groups=groups, groups_cls=groups_cls, comparisons=comparisons, table=table,
                      score_cmp=comparisons[("global", score_name)], margin_cmp=comparisons[("global", margin_name)],
                      rho_score=rho_score, rho_margin=rho_margin, score_name=score_name, margin_name=margin_name,
                      stratified=stratified)


@dataclass
class ClassSummary:
    """Per-class means behind the within-class control.

    Attributes:
        table: one row per class: samples, mean KPE / score / margin, members of each group (and accuracy).
        rho_class: Spearman of class mean KPE and class mean score (None with fewer than 3 classes).
    """

    table: pd.DataFrame
    rho_class: float | None


def class_summary(kpe: torch.Tensor, sem: SemanticResult, correct: torch.Tensor | None, labels: torch.Tensor,
                  groups: KPEGroups, class_names: Sequence[str]) -> ClassSummary:
    """Mean KPE, score and margin of each class and how many of its samples fall in each global group.

    Args:
        kpe: (B,) per-sample KPE; sem: (B,) score and margin; correct: (B,) 0/1 or None.
        labels: (B,) classes in 0 .. K-1; groups: the global cut; class_names: the K names.
    """
    rows = []
    for c in range(len(class_names)):
        m = (labels == c).numpy()
        mt = torch.from_numpy(m)
        row = {"class": class_names[c], "samples": int(m.sum()), "mean KPE": float(kpe[mt].mean()),
               "mean score": float(sem.score[mt].mean()), "mean margin": float(sem.margin[mt].mean()),
               "in low group": int(groups.low[m].sum()), "in high group": int(groups.high[m].sum())}
        if correct is not None:
            row["accuracy"] = float(correct[mt].mean())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("class")
    rho = (scipy.stats.spearmanr(table["mean KPE"], table["mean score"]).statistic
           if len(class_names) >= 3 else None)
    return ClassSummary(table=table, rho_class=rho)


def per_class_extremes(mask: np.ndarray, highest: bool, m: int, kpe: torch.Tensor, labels: torch.Tensor,
                       num_classes: int) -> list[np.ndarray]:
    """For each of the first ``min(num_classes, 10)`` classes, the indices of its ``m`` lowest- (or highest-)
    KPE samples inside ``mask`` (B,) bool, most extreme first."""
    rows = []
    for c in range(min(num_classes, 10)):
        idx = np.flatnonzero(mask & (labels == c).numpy())
        idx = idx[np.argsort(kpe.numpy()[idx])]
        rows.append(idx[::-1][:m] if highest else idx[:m])
    return rows


def standard_error(v: torch.Tensor) -> float:
    """Standard error of the mean of a (n,) tensor: ``std (ddof 1) / sqrt(n)``."""
    return float(v.std() / np.sqrt(len(v)))


def sweep_trend(scales: Sequence[float], table: pd.DataFrame) -> dict[str, float]:
    """Spearman of the guidance scale with the sweep table's mean KPE, score and margin (NaN under 3 scales)."""
    ws = np.array(scales)
    return {q: float(scipy.stats.spearmanr(ws, table[f"mean {q}"].to_numpy()).statistic)
            if len(ws) >= 3 else float("nan") for q in ("KPE", "score", "margin")}


@dataclass
class Sweep:
    """The guidance sweep: the same noises and classes at every guidance scale.

    Attributes:
        runs: scale w -> {"kpe": (n,), "score": (n,), "margin": (n,), "images": (n, 3, H, W)} on the CPU.
        table: one row per scale: means and standard errors of KPE, score, margin (and accuracy).
        trend: Spearman of w with the mean KPE, score and margin (see :func:`sweep_trend`).
        n: samples per scale.
    """

    runs: dict[float, dict[str, torch.Tensor]]
    table: pd.DataFrame
    trend: dict[str, float]
    n: int


def guidance_sweep(backend: SemanticBackend, main: MainRun, scales: Sequence[float], *, guidance: float,
                   n: int, n_steps: int, batch_size: int = 300, device: str = "cpu",
                   accuracy: bool = True) -> Sweep:
    """Re-sample the first ``n`` noises of the main run at every scale (the run at ``guidance`` is reused).

    Args:
        backend: as for the main run; main: the main run (its noise, labels and samples).
        scales: the guidance scales w of the sweep.
        guidance: the main run's scale; n: samples per scale (at most the main run's size).
        n_steps, batch_size, device: as for the main run.
        accuracy: add the share of positive margins (classifier scorer).
    """
    noise, labels, samples = main.noise, main.labels, main.samples
    runs = {}
    for w in scales:
        if abs(w - guidance) < 1e-12:
            x_w, kpe_w = samples.x[:n], samples.kpe[:n]
        else:
            run = sample_guided(backend.model, noise.x0[:n].to(device), labels[:n].to(device), scale=w,
                                n_steps=n_steps, batch_size=batch_size, guide=backend.guide)
            x_w, kpe_w = run.x, run.kpe
        img_w = backend.to_images(x_w).cpu()
        sem_w = backend.semantics(img_w, labels[:n])
        runs[w] = {"kpe": kpe_w.cpu(), "score": sem_w.score, "margin": sem_w.margin, "images": img_w}
        if not (torch.isfinite(x_w).all() and (kpe_w >= 0).all()):
            raise AssertionError(f"guidance {w:g}: non-finite states or negative KPE")
    rows = []
    for w, r in runs.items():
        se = standard_error
        row = {"guidance w": w, "mean KPE": float(r["kpe"].mean()), "KPE s.e.": se(r["kpe"]),
               "mean score": float(r["score"].mean()), "score s.e.": se(r["score"]),
               "mean margin": float(r["margin"].mean()), "margin s.e.": se(r["margin"])}
        if accuracy:
            row["accuracy"] = float((r["margin"] > 0).double().mean())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("guidance w")
    return Sweep(runs=runs, table=table, trend=sweep_trend(scales, table), n=n)

