"""The closing paragraph of the CIFAR-10 support chapter, every number and verdict from its arguments."""
from __future__ import annotations

from typing import Sequence

import pandas as pd

from kpe_lib.experiments.cifar_support.analysis import (ESTIMATOR_PAIR, PartialCorrelations, SampleQuality,
                                                        _median_rho)
from kpe_lib.experiments.cifar_support.correlations import SupportStudy
from kpe_lib.experiments.cifar_support.setup import FlowModel, MainSamples

__all__ = ["FID_RATIO_MAX", "RECALL_MIN", "reading"]

#: what the chapter asks of its model before its correlations describe images: FID at most this multiple of
#: the held-out real images' FID at the same counts, and recall above RECALL_MIN
FID_RATIO_MAX = 1.3
RECALL_MIN = 0.2


def reading(study: SupportStudy, names: Sequence[str], table: pd.DataFrame, *,
            partial: PartialCorrelations, quality: SampleQuality, flow: FlowModel, main: MainSamples,
            resolution: int, primary: str = "vae") -> str:
    """The closing paragraph (Markdown) of the chapter, every number and verdict from the arguments.

    Args:
        table: the chapter's "paper vs this run" table (:func:`kpe_lib.book.scoreboard.chapter_table`, index:
            claim, column ``verdict``); the verdicts quoted are those of the rows of ``primary``.
        primary: the declared primary space (:data:`kpe_lib.book.scoreboard.PRIMARY_SPACE`).

    It states the primary space's two verdicts with its rho and its norm-controlled partial rho, the median
    over spaces, in how many spaces the interval of rho lies entirely below or above zero, how the
    sample-norm partial correlation moves the median rho, and the FID, KID and recall against the real-image
    floor, with whether the model meets :data:`FID_RATIO_MAX` and :data:`RECALL_MIN`.
    """
    verdict = {est: table.loc[f"Spearman(KPE, {est} support), {primary}", "verdict"] for est in ESTIMATOR_PAIR}
    part = {(r["space"], r["estimator"]): r["rho | sample norm"] for r in partial.rows}
    n_neg = {est: sum(study.row(n, est).ci_high < 0 for n in names) for est in ESTIMATOR_PAIR}
    n_pos = {est: sum(study.row(n, est).ci_low > 0 for n in names) for est in ESTIMATOR_PAIR}
    n_part_pos = sum(v > 0 for v in part.values())
    partial_med = {est: partial.median(est) for est in ESTIMATOR_PAIR}
    lines = [
        f"**In this run** ({main.kpe.shape[0]} samples of a {flow.n_params / 1e6:.2f} M-parameter UNet trained for "
        f"{flow.fm.steps_done} steps at {resolution}x{resolution}, NFE {main.nfe}), in the declared primary space "
        f"({primary}): the kNN claim is *{verdict['knn']}* (rho {study.rho(primary, 'knn'):+.2f}, "
        f"{part[(primary, 'knn')]:+.2f} with the sample norm held fixed) and the KDE claim *{verdict['kde']}* "
        f"(rho {study.rho(primary, 'kde'):+.2f}, {part[(primary, 'kde')]:+.2f} with the norm held fixed). "
        f"The median over the {len(names)} spaces is {_median_rho(study, names, 'knn'):+.2f} (kNN) and "
        f"{_median_rho(study, names, 'kde'):+.2f} (KDE). The interval of rho lies entirely below zero in "
        f"{n_neg['knn']} of {len(names)} spaces with kNN and {n_neg['kde']} with the KDE, and "
        f"entirely above zero in {n_pos['knn']} and {n_pos['kde']}.",
        f"Holding the sample norm fixed moves the median rho over spaces to {partial_med['knn']:+.2f} (kNN) and "
        f"{partial_med['kde']:+.2f} (KDE), from {_median_rho(study, names, 'knn'):+.2f} and "
        f"{_median_rho(study, names, 'kde'):+.2f}; {n_part_pos} of the {len(part)} norm-controlled partial "
        f"correlations are positive.",
    ]
    if quality.fid is not None and len(quality.table) > 1:
        kid_floor = f" and a KID of {quality.kid.value:.3g} against {quality.kid_real.value:.3g}" \
            if quality.kid is not None and quality.kid_real is not None else ""
        ratio, recall = quality.fid / quality.fid_real, quality.pr.recall
        met = (ratio <= FID_RATIO_MAX, recall > RECALL_MIN)
        asks = (f"the FID within {FID_RATIO_MAX:g}x of the floor and the recall above {RECALL_MIN:g} that this "
                "chapter asks of its model")
        missed = {(True, False): "the FID is met but not the recall",
                  (False, True): "the recall is met but not the FID", (False, False): "neither is met"}
        regime = (f"{asks} are both met: its samples are images of the training distribution at this resolution, "
                  "although the model is far smaller than the paper's" if all(met) else
                  f"of {asks}, {missed[met]}: the correlations above describe a weaker model than the paper's")
        lines.append(f"The FID of the samples is {quality.fid:.0f} against a floor of {quality.fid_real:.0f} "
                     f"for held-out real images at the same counts ({ratio:.2f}x){kid_floor}, with recall "
                     f"{recall:.2f}: {regime}.")
    return "\n\n".join(lines)
