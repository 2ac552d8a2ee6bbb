"""Kinetic path energy against local training support: the correlation table (Mathematics §5, 6).

The paper's CIFAR-10 claim (Mathematics §6): at NFE 150, per-sample KPE is rank-correlated with the local
density of the training set around the generated sample, Spearman rho ~ -0.65 with a kNN estimate and
-0.64 with a KDE, strongest in VAE-latent and descriptor spaces: high-energy trajectories land where
the training data is sparse. This module turns per-sample KPE and the features of samples and training
items into that table, one row per feature space x estimator x estimator setting.

Choices the paper leaves open (Mathematics §6, "What is not public"), made here and recorded in every row:

* **[choice]** kNN support = ``log(k / (n V_d r_k^d))`` with r_k the distance to the k-th nearest
  training item (``kpe_lib.metrics.knn_support``); k = 5 unless told.
* **[choice]** KDE support = isotropic Gaussian KDE log density with bandwidth ``h = factor * rule(ref)``,
  rule = Scott by default here (``kpe_lib.metrics.kde_bandwidth``), factor 1 unless told; the chapter uses
  ``"knn_median"`` (the median 5-NN distance of the reference): with Scott's rule in 32+ dimensions the KDE
  ranks samples exactly as the 1-NN distance does.
* KPE groups (the lowest and highest share of the samples by KPE) come from :mod:`kpe_lib.metrics.groups`.

Example:
    >>> import torch
    >>> ref = torch.randn(500, 3)
    >>> query = torch.randn(40, 3) * torch.linspace(0.5, 3, 40)[:, None]
    >>> kpe = query.norm(dim=1)                       # far from the data <-> high energy
    >>> study = support_correlations(kpe, [SpaceFeatures("toy", query, ref)], n_boot=200)
    >>> study.rho("toy", "knn") < 0
    True
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from kpe_lib.metrics import kde_bandwidth, kde_support, knn_support, spearman_with_ci
from kpe_lib.metrics._checks import as_matrix, as_vector

__all__ = ["SpaceFeatures", "SupportCorrelation", "SupportStudy",
           "support_correlations", "partial_spearman", "support_tests", "ESTIMATORS"]

ESTIMATORS = ("knn", "kde")
BANDWIDTH_RULES = ("knn_median", "scott", "silverman")


@dataclass(frozen=True)
class SpaceFeatures:
    """Generated-sample and training features in one feature space.

    Attributes:
        name: the space's name (e.g. ``"pixels"``, ``"vae32"``).
        query: (M, D) features of the generated samples, in the order of the KPE vector.
        ref: (n, D) features of the training items (the support reference).
        note: anything a reader must know, e.g. ``"reference: 400 of 10,000 training images"``.
    """

    name: str
    query: torch.Tensor
    ref: torch.Tensor
    note: str = ""


@dataclass(frozen=True)
class SupportCorrelation:
    """One row of the table: Spearman(KPE, log support) in one space with one estimator setting.

    Attributes:
        space: feature space name.
        estimator: ``"knn"`` or ``"kde"``.
        setting: ``"k=5"`` or ``"h=1*scott"`` (the bandwidth factor times the rule).
        rho: Spearman rank correlation between KPE and the log support density.
        ci_low, ci_high: percentile bootstrap interval of rho.
        stderr: bootstrap standard error.
        pvalue: two-sided p-value (scipy.stats.spearmanr).
        n: number of samples.
        dim: feature dimension D.
        n_ref: number of training items in the reference.
        rule: the estimator's full description (``SupportResult.rule``).
        note: the space's note.
    """

    space: str
    estimator: str
    setting: str
    rho: float
    ci_low: float
    ci_high: float
    stderr: float
    pvalue: float
    n: int
    dim: int
    n_ref: int
    rule: str
    note: str = ""


@dataclass
class SupportStudy:
    """All correlations of one run, with the per-sample support values behind them.

    Attributes:
        rows: one SupportCorrelation per space x estimator x setting, in the order computed.
        log_density: ``{(space, estimator, setting): (M,) float64}`` log support of every sample.
        kpe: (M,) the KPE the correlations were computed with (float64).
        level: coverage of the bootstrap intervals.
    """

    rows: list[SupportCorrelation]
    log_density: dict[tuple[str, str, str], torch.Tensor]
    kpe: torch.Tensor
    level: float = 0.95
    _default: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)

    def _key(self, space: str, estimator: str, setting: str | None) -> tuple[str, str, str]:
        if setting is None:
            if (space, estimator) not in self._default:
                known = sorted({(r.space, r.estimator) for r in self.rows})
                raise ValueError(f"no rows for space={space!r}, estimator={estimator!r}; known: {known}")
            setting = self._default[(space, estimator)]
        key = (space, estimator, setting)
        if key not in self.log_density:
            raise ValueError(f"no row for {key}; known: {sorted(self.log_density)}")
        return key

    def row(self, space: str, estimator: str, setting: str | None = None) -> SupportCorrelation:
        """The row of a space and estimator; ``setting=None`` picks the primary (first) setting."""
        key = self._key(space, estimator, setting)
        return next(r for r in self.rows if (r.space, r.estimator, r.setting) == key)

    def rho(self, space: str, estimator: str, setting: str | None = None) -> float:
        """Spearman rho of a space and estimator (primary setting unless told)."""
        return self.row(space, estimator, setting).rho

    def support(self, space: str, estimator: str, setting: str | None = None) -> torch.Tensor:
        """(M,) log support of every sample for a space and estimator (primary setting unless told)."""
        return self.log_density[self._key(space, estimator, setting)]

    def table(self):
        """Every row as a pandas DataFrame (columns = SupportCorrelation fields)."""
        import pandas as pd

        return pd.DataFrame([asdict(r) for r in self.rows])

    def summary(self, digits: int = 2):
        """One row per space: primary kNN and KDE rho with their intervals, as printable strings.

        Returns:
            pandas DataFrame indexed by space with columns ``kNN rho [CI]``, ``KDE rho [CI]``, ``dim``,
            ``n_ref``, ``note``.
        """
        import pandas as pd

        records = []
        for space in dict.fromkeys(r.space for r in self.rows):
            rec: dict[str, object] = {"space": space}
            for est, label in (("knn", "kNN"), ("kde", "KDE")):
                if (space, est) in self._default:
                    r = self.row(space, est)
                    rec[f"{label} rho [{round(100 * self.level)}% CI]"] = (
                        f"{r.rho:+.{digits}f} [{r.ci_low:+.{digits}f}, {r.ci_high:+.{digits}f}]")
                    rec["dim"], rec["n_ref"], rec["note"] = r.dim, r.n_ref, r.note
            records.append(rec)
        return pd.DataFrame(records).set_index("space")


def _settings(ks: Iterable[int], bandwidth_factors: Iterable[float], bandwidth_rule: str
              ) -> list[tuple[str, str, int | float]]:
    ks, factors = list(ks), list(bandwidth_factors)
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"ks must be positive integers, got {ks!r}")
    for f in factors:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not (math.isfinite(f) and f > 0):
            raise ValueError(f"bandwidth_factors must be positive finite numbers, got {factors!r}")
    if not ks and not factors:
        raise ValueError("give at least one k (ks) or one bandwidth factor (bandwidth_factors)")
    if bandwidth_rule not in BANDWIDTH_RULES:
        raise ValueError(f"bandwidth_rule must be one of {BANDWIDTH_RULES}, got {bandwidth_rule!r}")
    return ([("knn", f"k={k}", k) for k in ks]
            + [("kde", f"h={f:g}*{bandwidth_rule}", float(f)) for f in factors])


def support_correlations(kpe: torch.Tensor | np.ndarray, spaces: Sequence[SpaceFeatures],
                         ks: Iterable[int] = (5,), bandwidth_factors: Iterable[float] = (1.0,),
                         bandwidth_rule: str = "scott", n_boot: int = 1000, seed: int = 0,
                         level: float = 0.95) -> SupportStudy:
    """Spearman(KPE, local training support) per feature space and estimator, with bootstrap intervals.

    For each space, the log support of every generated sample is estimated from the training features
    by kNN (one row per k in ``ks``) and by Gaussian KDE (one row per factor in ``bandwidth_factors``,
    bandwidth ``factor * bandwidth_rule(ref)``); each is rank-correlated with the KPE (Mathematics §5). The
    first k and the first factor are the *primary* settings that :meth:`SupportStudy.rho` and
    :meth:`SupportStudy.summary` report. A negative rho means high-KPE samples sit where the training
    data is sparse, the paper's claim.

    Args:
        kpe: (M,) per-sample KPE.
        spaces: features of the same M samples (``query``) and of the training items (``ref``) per space.
        ks: kNN neighbour ranks; empty to skip kNN.
        bandwidth_factors: multiples of the rule's bandwidth; empty to skip the KDE.
        bandwidth_rule: ``"knn_median"`` (median 5-NN distance), ``"scott"`` or ``"silverman"`` (isotropic,
            ``kpe_lib.metrics.kde_bandwidth``).
        n_boot: bootstrap resamples per row (Mathematics §5: 1,000).
        seed: bootstrap seed (the same resampling indices for every row).
        level: interval coverage.

    Returns:
        SupportStudy.

    Raises:
        ValueError: mismatched lengths or dimensions, duplicate space names, bad settings.
    """
    energy = as_vector(kpe, "kpe")
    spaces = list(spaces)
    if not spaces:
        raise ValueError("spaces must hold at least one SpaceFeatures")
    names = [s.name for s in spaces]
    if len(set(names)) != len(names):
        raise ValueError(f"space names must be unique, got {names}")
    settings = _settings(ks, bandwidth_factors, bandwidth_rule)
    rows: list[SupportCorrelation] = []
    log_density: dict[tuple[str, str, str], torch.Tensor] = {}
    default: dict[tuple[str, str], str] = {}
    for space in spaces:
        q, r = as_matrix(space.query, f"{space.name}.query"), as_matrix(space.ref, f"{space.name}.ref")
        if q.shape[0] != energy.shape[0]:
            raise ValueError(f"space {space.name!r} has {q.shape[0]} query rows but kpe has {energy.shape[0]} "
                             "samples; they must match one to one")
        if q.shape[1] != r.shape[1]:
            raise ValueError(f"space {space.name!r}: query and ref dimensions differ ({q.shape[1]} vs {r.shape[1]})")
        base_h = kde_bandwidth(r, bandwidth_rule) if any(s[0] == "kde" for s in settings) else None
        for estimator, setting, value in settings:
            if estimator == "knn":
                if value > r.shape[0]:
                    raise ValueError(f"k={value} exceeds the {r.shape[0]} reference items of space {space.name!r}")
                res = knn_support(q, r, k=int(value))
            else:
                res = kde_support(q, r, bandwidth=float(value) * base_h)
            dens = res.log_density.to(torch.float64)
            if not bool(torch.isfinite(dens).all()):
                raise ValueError(f"space {space.name!r}, {setting}: non-finite log density (a sample coincides "
                                 "with a training item at distance 0, or the KDE underflowed)")
            rho = spearman_with_ci(energy, dens.numpy(), n_boot=n_boot, seed=seed, level=level)
            rule = res.rule if estimator == "knn" else f"{res.rule}; h = {value:g} x {bandwidth_rule} rule"
            rows.append(SupportCorrelation(space=space.name, estimator=estimator, setting=setting, rho=rho.value,
                                           ci_low=rho.ci[0], ci_high=rho.ci[1], stderr=rho.stderr,
                                           pvalue=rho.pvalue, n=rho.n, dim=int(q.shape[1]), n_ref=int(r.shape[0]),
                                           rule=rule, note=space.note))
            log_density[(space.name, estimator, setting)] = dens
            default.setdefault((space.name, estimator), setting)
    return SupportStudy(rows=rows, log_density=log_density, kpe=torch.from_numpy(energy), level=level,
                        _default=default)


def partial_spearman(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray,
                     control: torch.Tensor | np.ndarray) -> float:
    """Spearman correlation of ``a`` and ``b`` with ``control`` partialled out.

    The partial Pearson correlation of the average ranks,
    ``(r_ab - r_ac r_bc) / sqrt((1 - r_ac^2) (1 - r_bc^2))``, which equals the Pearson correlation of the
    residuals of rank(a) and rank(b) after a least-squares fit on rank(c). Used to ask whether the
    KPE-support correlation survives once a nuisance both depend on (e.g. the sample's norm) is held fixed.

    Args:
        a, b, control: (n,) arrays, n >= 4.

    Returns:
        The partial rank correlation in [-1, 1] (NaN when ``control`` ranks explain ``a`` or ``b`` fully).
    """
    import scipy.stats

    x, y, z = as_vector(a, "a"), as_vector(b, "b"), as_vector(control, "control")
    if not x.shape == y.shape == z.shape or x.shape[0] < 4:
        raise ValueError(f"a, b and control must be 1-D of the same length >= 4, got {x.shape}, {y.shape}, {z.shape}")
    r = np.corrcoef(np.stack([scipy.stats.rankdata(v) for v in (x, y, z)]))
    r_ab, r_ac, r_bc = r[0, 1], r[0, 2], r[1, 2]
    denom = math.sqrt(max((1 - r_ac ** 2) * (1 - r_bc ** 2), 0.0))
    return float((r_ab - r_ac * r_bc) / denom) if denom > 1e-12 else float("nan")


def support_tests(study: SupportStudy, names: Sequence[str], record: Callable[..., dict]
                  ) -> dict[str, dict[str, dict]]:
    """The test behind every scoreboard row of the chapter: ``{"spearman_knn": {space: record}, "spearman_kde":
    {...}}`` (stored as ``metrics["tests"]``; the rows read ``tests.spearman_<estimator>.<space>``).

    Each record is ``record("bootstrap CI (Spearman)", p=..., ci95=[lo, hi], n=..., ...)`` of the primary
    setting's Spearman rho: the p-value of ``scipy.stats.spearmanr`` and the percentile bootstrap interval over
    samples that :func:`support_correlations` computed (no new computation, nothing random). The chapter
    passes ``record = kpe_lib.book.verdicts.evidence`` (a study module does not import the book tier).

    Example:
        >>> import torch
        >>> ref = torch.randn(200, 2)
        >>> q = torch.randn(30, 2) * torch.linspace(0.5, 3, 30)[:, None]
        >>> st = support_correlations(q.norm(dim=1), [SpaceFeatures("toy", q, ref)], n_boot=100)
        >>> support_tests(st, ["toy"], lambda test, **kw: dict(kw, test=test))["spearman_knn"]["toy"]["test"]
        'bootstrap CI (Spearman)'
    """
    out: dict[str, dict[str, dict]] = {}
    for est in ESTIMATORS:
        out[f"spearman_{est}"] = {}
        for name in names:
            r = study.row(name, est)
            out[f"spearman_{est}"][name] = record("bootstrap CI (Spearman)", p=r.pvalue, ci95=[r.ci_low, r.ci_high],
                                                  n=r.n, setting=r.setting, n_ref=r.n_ref)
    return out
