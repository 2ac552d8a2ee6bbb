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
    """AUROC of a score for telling positives (e.g. memorised samples) from the rest.

    Attributes:
        auroc: on all samples.
        stderr: bootstrap standard error.
        ci95: percentile bootstrap interval.
        n_pos: number of positives.
        n_neg: number of negatives.
    """

    auroc: float
    stderr: float
    ci95: tuple[float, float]
    n_pos: int
    n_neg: int


def detector_auroc(scores: torch.Tensor, positive: torch.Tensor, n_boot: int = 1000, seed: int = 0) -> DetectorResult:
    """AUROC with a paired bootstrap interval (resamples with one class missing are dropped)."""
    s = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64)
    y = np.asarray(torch.as_tensor(positive).detach().cpu()).astype(bool)
    boot = bootstrap_ci(lambda a, b: roc_auc(a, b), s, y, n_boot=n_boot, seed=seed)
    return DetectorResult(auroc=roc_auc(s, y), stderr=boot.stderr, ci95=boot.ci, n_pos=int(y.sum()),
                          n_neg=int((~y).sum()))
