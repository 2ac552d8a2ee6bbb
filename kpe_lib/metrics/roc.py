"""ROC analysis of a per-sample score as a detector (e.g. late KPE as a detector of memorised samples).

The AUROC is the probability that a positive scores above a negative (ties count one half), computed as
the Mann-Whitney U statistic from average ranks; its interval is a paired bootstrap over samples
(Mathematics §5.7).

Example:
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kpe_lib.metrics._checks import as_vector
from kpe_lib.metrics.stats import bootstrap_ci

__all__ = ["roc_auc", "DetectorResult", "detector_auroc"]


def roc_auc(scores: torch.Tensor | np.ndarray, positive: torch.Tensor | np.ndarray) -> float:
    """Area under the ROC curve: P(score of a positive > score of a negative), ties counted 1/2.

    Computed as the Mann-Whitney U statistic from average ranks.

    Args:
        scores: (M,) detector scores (higher means "positive").
        positive: (M,) bool labels.

    Returns:
        AUROC in [0, 1]; NaN when one class is empty.
    """
    s = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64).ravel()
    y = np.asarray(positive.detach().cpu() if isinstance(positive, torch.Tensor) else positive).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores and positive must have the same length, got {s.shape} and {y.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class DetectorResult:
    """AUROC of a score for telling positives (e.g. memorised samples) from the rest (Mathematics §5.7).

    A dataclass of plain numbers, so ``kpe_lib.book`` results hold it as it is.

    Attributes:
        auroc: on all samples.
        ci_low, ci_high: percentile bootstrap interval at ``level``.
        n_pos: number of positives.
        n_neg: number of negatives.
        n_boot: bootstrap resamples drawn (those missing a class are left out of the interval).
        stderr: bootstrap standard error.
        level: coverage of the interval (0.95 by default).
    """

    auroc: float
    ci_low: float
    ci_high: float
    n_pos: int
    n_neg: int
    n_boot: int
    stderr: float
    level: float = 0.95

    @property
    def ci(self) -> tuple[float, float]:
        """``(ci_low, ci_high)``."""
        return self.ci_low, self.ci_high

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95% interval; only defined when the result was computed with ``level=0.95``."""
        if not np.isclose(self.level, 0.95):
            raise ValueError(f"ci95 is only available for level=0.95, this result has level={self.level}; use .ci")
        return self.ci


def detector_auroc(scores: torch.Tensor | np.ndarray, positive: torch.Tensor | np.ndarray, n_boot: int = 1000,
                   seed: int = 0, level: float = 0.95) -> DetectorResult:
    """AUROC of ``scores`` as a detector of ``positive``, with a seeded paired percentile bootstrap interval.

    Each resample draws samples with replacement, keeping every sample's score and label together; resamples
    with one class missing are dropped (Mathematics §5.7).

    Args:
        scores: (M,) finite detector scores (higher means "positive"), e.g. late KPE.
        positive: (M,) labels, bool or 0/1, e.g. memorised or not; both classes must occur.
        n_boot: bootstrap resamples (>= 1).
        seed: seed of the resampling indices (the same seed gives the same interval).
        level: coverage of the interval, in (0, 1).

    Returns:
        DetectorResult(auroc, ci_low, ci_high, n_pos, n_neg, n_boot, stderr, level).

    Raises:
        ValueError: ``scores`` not 1-D or not finite, ``positive`` of another length, not boolean or with
            one class empty, or a bad ``n_boot`` / ``level``.

    Example:
        >>> r = detector_auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True], n_boot=200)
        >>> r.auroc, r.n_pos, r.n_neg
        (0.75, 2, 2)
    """
    s = as_vector(scores, "scores")
    raw = np.asarray(positive.detach().cpu() if isinstance(positive, torch.Tensor) else positive)
    if raw.shape != s.shape:
        raise ValueError(f"positive must have the shape of scores {s.shape}, got {raw.shape}")
    if raw.dtype != bool and not np.isin(raw, (0, 1)).all():
        raise ValueError("positive must hold booleans (or 0/1): True for a positive (e.g. a memorised sample)")
    y = raw.astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"positive must contain both classes, got {n_pos} positive(s) and {n_neg} negative(s)")
    boot = bootstrap_ci(roc_auc, s, y, n_boot=n_boot, seed=seed, level=level)
    return DetectorResult(auroc=boot.value, ci_low=boot.ci[0], ci_high=boot.ci[1], n_pos=n_pos, n_neg=n_neg,
                          n_boot=boot.n_boot, stderr=boot.stderr, level=boot.level)
