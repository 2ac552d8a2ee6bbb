"""The reproduction scoreboard: every headline number of the paper beside this project's (Mathematics §6).

Each row names the paper's value, how to read this project's value from ``results/<scale>/<chapter>.json``,
and a verdict rule:

- ``reproduced in magnitude``: the direction holds and the number is within the row's tolerance of the paper's;
- ``reproduced in direction``: the claimed direction holds (e.g. KTS lowers F_mem), the size differs;
- ``direction only, not significant``: the direction holds but the row's evidence (a p-value, or a 95%
  interval of the change / value) does not exclude the null at the 5% level;
- ``not reproduced``: the direction does not hold;
- ``not run``: no result file (or key) for that scale.

The rows are data, so the page, the tests and the chapters agree on one list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from kpe_lib.book.results import ChapterResults, read_results

Metrics = dict[str, Any]
NOT_SIGNIFICANT = "direction only, not significant"
VERDICTS = ("reproduced in magnitude", "reproduced in direction", NOT_SIGNIFICANT, "not reproduced", "not run")


def lookup(metrics: Metrics, key: str) -> Any:
    """Value at a dotted key, e.g. ``"tau_sweep.0.6.fid"`` (keys may themselves contain dots); None if absent."""
    if key in metrics:
        return metrics[key]
    for i, char in enumerate(key):
        if char == "." and isinstance(metrics.get(key[:i]), dict):
            found = lookup(metrics[key[:i]], key[i + 1:])
            if found is not None:
                return found
    return None


def change_verdict(change: float, paper_change: float, tolerance: float, *, null_tolerance: float | None = None,
                   significant: bool | None = None) -> str:
    """The verdict of a measured change against the paper's (the protocols page, "Verdicts").

    A paper change within ``null_tolerance`` of 0 claims "about no change" and is judged by magnitude
    alone: reproduced in magnitude when our change is within ``null_tolerance`` of it, whatever its sign.
    Otherwise our change must have the paper's sign (else not reproduced); evidence that does not exclude
    0 (``significant`` False) gives ``direction only, not significant``; within ``tolerance`` of the
    paper's change it is reproduced in magnitude, else in direction.
    """
    if null_tolerance is not None and abs(paper_change) <= null_tolerance:
        return "reproduced in magnitude" if abs(change - paper_change) <= null_tolerance else "not reproduced"
    if change == 0 or (change > 0) != (paper_change > 0):
        return "not reproduced"
    if significant is False:
        return NOT_SIGNIFICANT
    return "reproduced in magnitude" if abs(change - paper_change) <= tolerance else "reproduced in direction"


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class Row:
    """One paper number and the rule that judges ours.

    Attributes:
        experiment: the paper's experiment (data set, model, setting).
        metric: what is compared.
        paper: the paper's value as printed.
        chapter: the chapter whose results hold ours (file stem).
        ours: keys of our value(s); with two keys the row compares ``ours[0] -> ours[1]``.
        direction: ``"decrease"`` or ``"increase"`` from ``ours[0]`` to ``ours[1]``; for one value
            ``"below"`` / ``"above"`` ``threshold``; or ``"none"`` (magnitude only).
        paper_value: the paper's number (or change, for two keys) for the magnitude test.
        tolerance: absolute tolerance of the magnitude test.
        scale_factor: multiply our values by this before printing/comparing (e.g. 100 for fractions -> %).
        note: what differs in protocol between the paper and this project.
        threshold: the bound of ``"below"`` / ``"above"``.
        evidence: key of the statistical evidence for the direction, or None when the chapter reports
            none: a two-sided p-value, or a 95% interval ``[lo, hi]`` of the change (two keys, same units
            as the values before ``scale_factor``) or of the value (one key).
    """

    experiment: str
    metric: str
    paper: str
    chapter: str
    ours: tuple[str, ...]
    direction: str = "none"
    paper_value: float | None = None
    tolerance: float | None = None
    scale_factor: float = 1.0
    note: str = ""
    threshold: float = 0.0
    evidence: str | None = None

    def __post_init__(self) -> None:
        if len(self.ours) == 2 and self.direction not in ("decrease", "increase"):
            raise ValueError(f"a two-key row compares a change: direction must be 'decrease' or 'increase', "
                             f"got {self.direction!r}")
        if len(self.ours) == 2 and self.paper_value is not None \
                and (self.paper_value > 0) != (self.direction == "increase"):
            raise ValueError(f"paper_value {self.paper_value} contradicts direction {self.direction!r}")

    def evidence_value(self, metrics: Metrics) -> Any:
        """The p-value or ``[lo, hi]`` interval behind the row, or None."""
        return lookup(metrics, self.evidence) if self.evidence is not None else None

    def significant(self, metrics: Metrics) -> bool | None:
        """Whether the evidence excludes the null in the claimed direction (None: no evidence reported)."""
        found = self.evidence_value(metrics)
        if _num(found) is not None:
            return found < 0.05
        if isinstance(found, (list, tuple)) and len(found) == 2 and all(_num(v) is not None for v in found):
            lo, hi = (float(v) * self.scale_factor for v in found)
            null = 0.0 if len(self.ours) == 2 else self.threshold
            return {"decrease": hi < null, "below": hi < null, "increase": lo > null,
                    "above": lo > null}.get(self.direction, True)
        return None

    def evidence_text(self, metrics: Metrics) -> str:
        """The evidence as printed on the scoreboard, e.g. ``"p = 0.053"`` or ``"95% CI [-12.5, -1.6]"``."""
        found = self.evidence_value(metrics)
        if _num(found) is not None:
            return f"p = {found:.2g}"
        if isinstance(found, (list, tuple)) and len(found) == 2 and all(_num(v) is not None for v in found):
            lo, hi = (float(v) * self.scale_factor for v in found)
            return f"95% CI [{lo:.3g}, {hi:.3g}]"
        return "-"

    def values(self, metrics: Metrics) -> list[float] | None:
        vals = [_num(lookup(metrics, key)) for key in self.ours]
        if any(v is None for v in vals):
            return None
        return [v * self.scale_factor for v in vals]

    def format(self, vals: list[float] | None) -> str:
        if vals is None:
            return "-"
        return " -> ".join(f"{v:.4g}" if abs(v) < 1000 else f"{v:.0f}" for v in vals)

    def verdict(self, vals: list[float] | None, significant: bool | None = None) -> str:
        """The verdict for our values; ``significant`` (from :meth:`significant`) False demotes a held
        direction to ``direction only, not significant``."""
        if vals is None:
            return "not run"
        if len(vals) == 2:
            change = vals[1] - vals[0]
            if self.paper_value is not None and self.tolerance is not None:
                return change_verdict(change, self.paper_value, self.tolerance, null_tolerance=self.tolerance,
                                      significant=significant)
            ok = change < 0 if self.direction == "decrease" else change > 0
            magnitude = change
        else:
            ok = {"below": vals[0] < self.threshold, "above": vals[0] > self.threshold}.get(self.direction, True)
            magnitude = vals[0]
        close = (self.paper_value is not None and self.tolerance is not None
                 and abs(magnitude - self.paper_value) <= self.tolerance)
        if not ok:
            return "not reproduced"
        if significant is False and self.direction != "none":
            return NOT_SIGNIFICANT
        if close:
            return "reproduced in magnitude"
        return "reproduced in direction" if self.direction != "none" else "not reproduced"


def _best_space(metrics: Metrics, key: str) -> str | None:
    """The feature space of the most negative Spearman rho (the paper reports its strongest spaces)."""
    per_space = metrics.get(key)
    if not isinstance(per_space, dict):
        return None
    vals = {space: v for space, v in per_space.items() if _num(v) is not None}
    return min(vals, key=vals.get) if vals else None


@dataclass(frozen=True)
class DerivedRow(Row):
    """A row whose value is computed from the metrics by ``derive`` instead of read at keys."""

    derive: Callable[[Metrics], list[float] | None] = field(default=lambda m: None, compare=False)
    derive_evidence: Callable[[Metrics], Any] = field(default=lambda m: None, compare=False)

    def values(self, metrics: Metrics) -> list[float] | None:
        vals = self.derive(metrics)
        return None if vals is None else [v * self.scale_factor for v in vals]

    def evidence_value(self, metrics: Metrics) -> Any:
        return self.derive_evidence(metrics)


def _spearman(key: str) -> Callable[[Metrics], list[float] | None]:
    """Rho of the strongest space; a single number (older results) is taken as it is."""
    def derive(m: Metrics) -> list[float] | None:
        space = _best_space(m, key)
        value = m[key][space] if space is not None else _num(m.get(key))
        return None if value is None else [float(value)]
    return derive


def _spearman_ci(key: str) -> Callable[[Metrics], Any]:
    """The 95% interval (``<key>_ci``) of the strongest space's rho."""
    def derive(m: Metrics) -> Any:
        space = _best_space(m, key)
        intervals = m.get(f"{key}_ci")
        return intervals.get(space) if space is not None and isinstance(intervals, dict) else None
    return derive


IMAGENET_NOTE = ("paper: SiT-XL/2 ImageNet-256 with CLIP; cpu scale: class-conditional CIFAR-10 UNet with a "
                 "CIFAR-10 classifier's log p(y|x) / logit margin (Mathematics §5 analogue), so units differ")
CELEBA_NOTE = ("paper: n = 1,024, 10k samples, FID vs CelebA test; cpu scale: a training set of tens of images "
               "that memorises on CPU, tens of samples (fewer for the tau_split sweep), FID vs a few hundred test "
               "images of the local subset; exact counts in chapter 4's results protocol")

ROWS: tuple[Row, ...] = (
    Row("ImageNet-256, CFG 1.5, low vs high KPE", "CLIP score (cpu: classifier log p(y|x))", "21.87 -> 24.62",
        "05_semantics_guidance", ("score_low", "score_high"), "increase", note=IMAGENET_NOTE,
        evidence="score_welch_p"),
    Row("ImageNet-256, CFG 1.5, low vs high KPE", "CLIP margin (cpu: classifier logit margin)", "5.66 -> 8.93",
        "05_semantics_guidance", ("margin_low", "margin_high"), "increase", note=IMAGENET_NOTE,
        evidence="margin_welch_p"),
    DerivedRow("CIFAR-10, NFE 150", "Spearman(KPE, kNN support), strongest space", "-0.65", "03_cifar_support",
               ("spearman_knn",), "below", -0.65, 0.1, derive=_spearman("spearman_knn"),
               derive_evidence=_spearman_ci("spearman_knn"),
               note="paper: model and k not public; here the chapter's UNet and k, all feature spaces"),
    DerivedRow("CIFAR-10, NFE 150", "Spearman(KPE, KDE support), strongest space", "-0.64", "03_cifar_support",
               ("spearman_kde",), "below", -0.64, 0.1, derive=_spearman("spearman_kde"),
               derive_evidence=_spearman_ci("spearman_kde"),
               note="paper: bandwidth not public; here the chapter's bandwidth rule"),
    Row("CelebA 32x32 gray", "F_mem (%), FM -> KTS a0 = b0 = 0.01", "37.34 -> 31.22", "04_celeba_kts",
        ("fmem_fm", "fmem_kts"), "decrease", -6.12, 3.0, 100.0, CELEBA_NOTE,
        evidence="dfmem_ci95_vs_fm.balanced"),
    Row("CelebA 32x32 gray", "FID, FM -> KTS a0 = b0 = 0.01", "16.68 -> 14.35", "04_celeba_kts",
        ("fid_fm", "fid_kts"), "decrease", -2.33, 2.0, note=CELEBA_NOTE, evidence="dfid_ci95_vs_fm.balanced"),
    Row("CelebA ablation", "F_mem (%), FM -> launch only a0 = 0.02", "37.34 -> 36.78", "04_celeba_kts",
        ("fmem_fm", "fmem_launch"), "decrease", -0.56, 3.0, 100.0, CELEBA_NOTE,
        evidence="dfmem_ci95_vs_fm.launch only"),
    Row("CelebA ablation", "FID, FM -> launch only a0 = 0.02", "16.68 -> 11.27", "04_celeba_kts",
        ("fid_fm", "fid_launch"), "decrease", -5.41, 2.0, note=CELEBA_NOTE, evidence="dfid_ci95_vs_fm.launch only"),
    Row("CelebA ablation", "F_mem (%), FM -> landing only b0 = 0.02", "37.34 -> 19.36", "04_celeba_kts",
        ("fmem_fm", "fmem_landing"), "decrease", -17.98, 5.0, 100.0, CELEBA_NOTE,
        evidence="dfmem_ci95_vs_fm.landing only"),
    Row("CelebA ablation", "FID, FM -> landing only b0 = 0.02", "16.68 -> 86.56", "04_celeba_kts",
        ("fid_fm", "fid_landing"), "increase", 69.88, 20.0, note=CELEBA_NOTE,
        evidence="dfid_ci95_vs_fm.landing only"),
    *(Row("CelebA ablation, balanced KTS", f"FID at tau_split = {tau}", paper, "04_celeba_kts",
          (f"tau_sweep.{tau}.fid",), "none", float(paper), 5.0, note=CELEBA_NOTE)
      for tau, paper in (("0.2", "60.31"), ("0.4", "48.58"), ("0.6", "14.35"), ("0.8", "21.07"))),
    Row("ImageNet-256", "FID, FM -> KTS a0 = 0.05", "11.70 -> 11.59", "05_semantics_guidance",
        ("fid_fm", "fid_launch"), "decrease", -0.11, 0.5, note=IMAGENET_NOTE),
    Row("ImageNet-256", "CLIP score, FM -> KTS a0 = 0.05 (cpu: classifier score)", "24.11 -> 24.34",
        "05_semantics_guidance", ("score_fm", "score_launch"), "increase", note=IMAGENET_NOTE),
    Row("ImageNet-256", "recall, FM -> KTS b0 = 0.05", "0.655 -> 0.657", "05_semantics_guidance",
        ("recall_fm", "recall_landing"), "increase", 0.002, 0.01, note=IMAGENET_NOTE),
    Row("EFM closed form (mechanism)", "late-KPE AUROC for copies", "claim: late energy drives copying",
        "02_efm_memorization", ("late_kpe_auroc",), "above", None, None, threshold=0.5, evidence="late_kpe_auroc_ci",
        note="the paper gives no number; > 0.5 means late energy separates copies. Measured on chapter 2's "
             "partially copying closed-form field (plain EFM copies every sample, so it has no negatives)"),
    Row("EFM closed form (theory)", "min R^2 of ||v*||^2 vs -log p_t under dominance",
        "claim: approximately affine", "02_efm_memorization", ("theory_r2_min",), "above", 1.0, 0.05,
        threshold=0.5, note="the paper's constants are not public; R^2 near 1 is the affine relation"),
)


def load_scale(results_dir: str | Path, scale: str) -> dict[str, Metrics]:
    """Metrics of every chapter that has a result file at ``scale``: {chapter: metrics}."""
    folder = Path(results_dir) / scale
    out: dict[str, Metrics] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        res: ChapterResults = read_results(path)
        out[res.chapter] = res.metrics
    return out


@dataclass
class ScoreboardEntry:
    """One row at one scale."""

    row: Row
    scale: str
    value: str
    verdict: str
    evidence: str = "-"


def scoreboard(results_dir: str | Path, scales: tuple[str, ...] = ("cpu", "paper", "smoke")
               ) -> list[ScoreboardEntry]:
    """Every row of ``ROWS`` at every scale (rows of scales never run say ``not run``)."""
    entries = []
    for scale in scales:
        chapters = load_scale(results_dir, scale)
        for row in ROWS:
            metrics = chapters.get(row.chapter)
            vals = row.values(metrics) if metrics is not None else None
            significant = row.significant(metrics) if metrics is not None else None
            entries.append(ScoreboardEntry(row, scale, row.format(vals), row.verdict(vals, significant),
                                           row.evidence_text(metrics) if metrics is not None else "-"))
    return entries
