"""Late energy as a memorisation detector: the chapter's two populations of copies and non-copies, the
AUROC of every score and their table (Mathematics §5)."""
from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import torch

from kpe_lib import SampleResult
from kpe_lib.metrics import DetectorResult, MemorizationResult, detector_auroc

__all__ = ["SCORE_NAMES", "detector_populations", "detector_aurocs", "detector_table"]

SCORE_NAMES = {"late": "late KPE", "kpe": "total KPE", "early": "early KPE",
               "gap": "gap of the copied face (not an energy)"}


def detector_populations(landing_samples: Mapping[str, torch.Tensor], face_gap: torch.Tensor,
                         mem_mix: MemorizationResult, res_mix: SampleResult) -> list[tuple[str, dict]]:
    """The two populations of the detector check, ``[(name, {"memorized": (B,) bool, score: (B,), ...})]``.

    ``"EFM + landing"``: the sweep's per-sample record of the landing run plus ``gap`` (B,), the isolation
    of each path's face; ``"mixture field"``: F_mem verdicts and KPE of the partially memorising field."""
    return [("EFM + landing", dict(landing_samples, gap=face_gap)),
            ("mixture field", {"memorized": mem_mix.memorized, "kpe": res_mix.kpe.cpu(),
                               "late": res_mix.kpe_late.cpu(), "early": res_mix.kpe_early.cpu()})]


def detector_aurocs(populations: Sequence[tuple[str, Mapping[str, torch.Tensor]]], n_boot: int, seed: int,
                    min_class: int = 5) -> dict[tuple[str, str], DetectorResult]:
    """AUROC of every score (late, total, early KPE; gap) for telling copies from the rest, per population.

    A population with fewer than ``min_class`` copies or non-copies is skipped, and so is a score it lacks.
    Returns ``{(population, score): DetectorResult}`` in population, then score order."""
    detectors = {}
    for pop, ps in populations:
        y = ps["memorized"]
        for score in SCORE_NAMES:
            if score not in ps or min(int(y.sum()), int((~y).sum())) < min_class:
                continue
            detectors[(pop, score)] = detector_auroc(ps[score], y, n_boot=n_boot, seed=seed)
    return detectors


def detector_table(detectors: Mapping[tuple[str, str], DetectorResult]) -> pd.DataFrame:
    """The detector table: counts, AUROC (3 decimals) and its 95% interval per (population, score)."""
    rows = [{"population": pop, "score": SCORE_NAMES[score], "copies": r.n_pos, "non-copies": r.n_neg,
             "AUROC": round(r.auroc, 3), "95% CI": f"[{r.ci95[0]:.3f}, {r.ci95[1]:.3f}]"}
            for (pop, score), r in detectors.items()]
    return pd.DataFrame(rows).set_index(["population", "score"])
