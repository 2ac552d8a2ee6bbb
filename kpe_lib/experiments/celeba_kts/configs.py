"""The KTS benchmark on a trained image flow: sampler configurations, F_mem, KPE and FID (Mathematics §3, 5, 6).

One trained model, one fixed batch of noise, many sampler configurations: plain flow matching (FM), the
KTS variants of the paper's CelebA table and ablations (Mathematics §6), and the energy-aware landing
(``kpe_lib.energy_aware``). Because every configuration starts from the *same* noise, differences between
configurations are paired: :func:`paired_fmem_change` bootstraps the change of F_mem over the samples.

Example:
    >>> spec = SamplerSpec("balanced", KTS(alpha0=0.01, beta0=0.01))
    >>> ev = run_config(model, x0, spec, train)                     # doctest: +SKIP
    >>> ev.memorization.value, ev.kpe.mean()                         # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from kpe_lib.budget import ConstantGain, RenormalisedGain, discrete_time_budget, time_budget
from kpe_lib.distributed import concat_results, sample_sharded
from kpe_lib.energy_aware import EnergyAwareLanding, sample_energy_aware
from kpe_lib.metrics import (BootstrapResult, FrechetReference, MemorizationResult, bootstrap_ci,
                             inception_features, memorization_fraction)
from kpe_lib.metrics.device_stats import paired_fid_change_device
from kpe_lib.metrics.paired import PairedChange
from kpe_lib.shaping import KTS
from kpe_lib.solvers import SOLVERS

Velocity = Callable[..., torch.Tensor]
#: the gains a configuration may use: KTS, or one of its budget controls (Mathematics §3.5)
SpecGain = KTS | ConstantGain | RenormalisedGain

__all__ = ["SamplerSpec", "ConfigEval", "run_config", "paired_fmem_change", "to_unit_range", "fid_of_images",
           "paired_fid_change", "PairedFidChanges", "pareto_mask", "summary_row", "subset"]


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler configuration.

    Attributes:
        name: label used in tables and figures.
        gain: the gain (Mathematics §3): a ``KTS`` (the default ``KTS()`` is plain FM), or one of its budget
            controls (Mathematics §3.5), a ``ConstantGain`` or a ``RenormalisedGain`` of a KTS.
        solver: ``"euler"`` or ``"midpoint"`` (any of ``kpe_lib.solvers.SOLVERS``).
        nfe: velocity evaluations per sample; the step count is ``nfe / stages`` (**[choice]**: the paper's
            "NFE" is read literally, so a two-stage solver takes half as many steps at equal cost).
        grid_kind: ``"uniform"`` or ``"cosine"``.
        threshold: None for the fixed KTS; else the mean-late-power threshold of the energy-aware landing
            (``kpe_lib.energy_aware``), which then damps only the paths above it with ``gain``'s landing (a KTS).
        decide_at: for the energy-aware landing, the time its switch is decided once (None: re-evaluated
            at every late evaluation).
        group: free label of the experiment the configuration belongs to (``"main"``, ``"tau"``, ...).
    """

    name: str
    gain: SpecGain = KTS()
    solver: str = "euler"
    nfe: int = 100
    grid_kind: str = "uniform"
    threshold: float | None = None
    decide_at: float | None = None
    group: str = "main"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {tuple(SOLVERS)}, got {self.solver!r}")
        stages = SOLVERS[self.solver].stages
        if isinstance(self.nfe, bool) or not isinstance(self.nfe, int) or self.nfe < stages or self.nfe % stages:
            raise ValueError(f"nfe must be a positive multiple of the {self.solver} solver's {stages} stage(s), "
                             f"got {self.nfe!r}")
        if not (isinstance(self.gain, (KTS, ConstantGain))
                or isinstance(self.gain, RenormalisedGain) and isinstance(self.gain.gain, KTS)):
            raise ValueError("gain must be a KTS, a ConstantGain or a RenormalisedGain of a KTS, got "
                             f"{type(self.gain).__name__}")
        if self.threshold is not None:
            if not isinstance(self.gain, KTS):
                raise ValueError("the energy-aware landing (threshold) needs a KTS gain")
            self.landing_rule  # validates the energy-aware settings
        elif self.decide_at is not None:
            raise ValueError("decide_at needs a threshold (it belongs to the energy-aware landing)")

    @property
    def n_steps(self) -> int:
        """Solver steps: ``nfe`` divided by the solver's stages."""
        return self.nfe // SOLVERS[self.solver].stages

    @property
    def kts(self) -> KTS | None:
        """The KTS schedule behind the gain: the gain itself, the one a ``RenormalisedGain`` divides, or None
        for a constant gain."""
        if isinstance(self.gain, RenormalisedGain):
            return self.gain.gain
        return self.gain if isinstance(self.gain, KTS) else None

    @property
    def control(self) -> str | None:
        """``"constant budget"`` / ``"renormalised"`` for a budget control, None for a KTS gain."""
        return {ConstantGain: "constant budget", RenormalisedGain: "renormalised"}.get(type(self.gain))

    @property
    def budget(self) -> float:
        """The continuous time budget ``T[eta] = int_0^1 eta dt`` of the gain (Mathematics §3.5)."""
        return time_budget(self.gain)

    @property
    def tau_split(self) -> float:
        """The phase boundary of the gain (splits KPE into early and late)."""
        return self.gain.tau_split

    @property
    def is_energy_aware(self) -> bool:
        return self.threshold is not None

    @property
    def landing_rule(self) -> EnergyAwareLanding:
        """The energy-aware landing (only when ``threshold`` is set)."""
        if self.threshold is None:
            raise ValueError(f"configuration {self.name!r} has no threshold: it is a fixed KTS")
        return EnergyAwareLanding(threshold=self.threshold, kts=self.gain, decide_at=self.decide_at)

    def describe(self) -> dict[str, Any]:
        """The fields as a plain dict (for tables and the results protocol)."""
        return dataclasses.asdict(self)


@dataclass
class ConfigEval:
    """What one configuration produced on the shared noise.

    Attributes:
        spec: the configuration.
        samples: final states (B, C, H, W) in the model's space (centred pixels).
        memorization: F_mem with its bootstrap interval and per-sample evidence (Mathematics §5).
        kpe, kpe_early, kpe_late: (B,) shaped-velocity KPE and its phase split at ``tau_split`` (Mathematics §2).
        energy: (N, B) per-step energy profile of the shaped velocity.
        energy_raw: (N, B) the same for the unshaped velocity.
        grid: the time grid, (N + 1,).
        tau_split: the early/late boundary used.
        nfe: velocity evaluations per sample.
        seconds: wall time of sampling and F_mem.
        damped: (B,) bool for an energy-aware configuration (switch on at the end), else None.
        fid: FID once computed (:func:`fid_of_images`), else None.
        features: (B, 2048) Inception features of the samples once computed, else None.
    """

    spec: SamplerSpec
    samples: torch.Tensor
    memorization: MemorizationResult
    kpe: torch.Tensor
    kpe_early: torch.Tensor
    kpe_late: torch.Tensor
    energy: torch.Tensor
    energy_raw: torch.Tensor
    grid: torch.Tensor
    tau_split: float
    nfe: int
    seconds: float
    damped: torch.Tensor | None = None
    fid: float | None = None
    features: torch.Tensor | None = None


def run_config(velocity: Velocity, x0: torch.Tensor, spec: SamplerSpec, train: torch.Tensor, *,
               n_boot: int = 1000, seed: int = 0, batch_size: int | None = None, **model_kwargs: Any) -> ConfigEval:
    """Sample ``x0`` with one configuration and measure F_mem and KPE.

    Args:
        velocity: the trained field ``v(x, t)``.
        x0: the shared noise, (B, C, H, W).
        spec: the configuration.
        train: the training set in the model's space (n, C, H, W), for F_mem (Mathematics §5, d1/d2 < 1/3).
        n_boot: bootstrap resamples of F_mem.
        seed: bootstrap seed.
        batch_size: samples per forward pass (``celeba_sample_batch``; None: all B at once). Every path, and
            the energy-aware switch of every path, depends on its own noise only, so the result does not
            depend on it beyond float rounding.
        **model_kwargs: passed to the velocity, the same for every batch.

    Returns:
        ConfigEval.
    """
    if not isinstance(spec, SamplerSpec):
        raise ValueError(f"spec must be a SamplerSpec, got {type(spec).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    start = time.perf_counter()
    kwargs = dict(n_steps=spec.n_steps, grid_kind=spec.grid_kind, solver=spec.solver, **model_kwargs)
    damped = None
    if spec.is_energy_aware:  # a fresh monitor per batch: the switch of a path reads that path alone
        step = batch_size or x0.shape[0]
        outs = [sample_energy_aware(velocity, x0[s:s + step], spec.landing_rule, **kwargs)
                for s in range(0, x0.shape[0], step)]
        res, damped = concat_results([o.result for o in outs]), torch.cat([o.damped for o in outs])
    else:
        res = sample_sharded(velocity, x0, batch_size=batch_size, gain=None if spec.gain.is_identity else spec.gain,
                             tau_split=spec.tau_split, **kwargs)
    mem = memorization_fraction(res.x.detach().cpu(), train.detach().cpu(), n_boot=n_boot, seed=seed)
    return ConfigEval(spec=spec, samples=res.x.detach().cpu(), memorization=mem, kpe=res.kpe.cpu(),
                      kpe_early=res.kpe_early.cpu(), kpe_late=res.kpe_late.cpu(), energy=res.energy.cpu(),
                      energy_raw=res.energy_raw.cpu(), grid=res.grid, tau_split=res.tau_split, nfe=res.nfe,
                      seconds=time.perf_counter() - start, damped=damped)


def subset(ev: ConfigEval, n: int, train: torch.Tensor, *, reference: FrechetReference | None = None,
           n_boot: int = 1000, seed: int = 0) -> ConfigEval:
    """The first ``n`` samples of an evaluation (F_mem recomputed on them), e.g. to reuse a run of the
    shared noise in an ablation that uses only its first ``n`` samples. Per-sample paths do not depend on
    the batch, so this equals running those samples alone (up to the batch-size dependence of float
    rounding in the model). With a ``reference``, stored Inception features are sliced too and the FID is
    recomputed from them (no image is embedded again); without one, features and FID are dropped."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= ev.samples.shape[0]:
        raise ValueError(f"n must be an integer in [1, {ev.samples.shape[0]}], got {n!r}")
    samples = ev.samples[:n]
    mem = memorization_fraction(samples, train.detach().cpu(), n_boot=n_boot, seed=seed)
    features = ev.features[:n] if reference is not None and ev.features is not None else None
    return dataclasses.replace(
        ev, samples=samples, memorization=mem, kpe=ev.kpe[:n], kpe_early=ev.kpe_early[:n], kpe_late=ev.kpe_late[:n],
        energy=ev.energy[:, :n], energy_raw=ev.energy_raw[:, :n],
        damped=None if ev.damped is None else ev.damped[:n], features=features,
        fid=None if features is None else reference.fid(features))


def paired_fmem_change(base: MemorizationResult, other: MemorizationResult, n_boot: int = 1000,
                       seed: int = 0) -> BootstrapResult:
    """Change of F_mem, ``other - base``, bootstrapped over the paired samples (same noise in both).

    Resampling pairs keeps the correlation between the two runs, so the interval is much tighter than
    the two separate intervals suggest.
    """
    a, b = base.memorized, other.memorized
    if a.shape != b.shape:
        raise ValueError(f"both results must hold the same samples (paired), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    diff = b.double().numpy() - a.double().numpy()
    return bootstrap_ci(np.mean, diff, n_boot=n_boot, seed=seed, level=0.95)


def to_unit_range(samples: torch.Tensor, mean: float | torch.Tensor) -> torch.Tensor:
    """Model space (pixels minus the training mean) back to [0, 1]: add the mean, clip."""
    m = mean.to(samples) if isinstance(mean, torch.Tensor) else float(mean)
    return (samples + m).clamp(0.0, 1.0)


def paired_fid_change(reference: FrechetReference, base: torch.Tensor | np.ndarray,
                      other: torch.Tensor | np.ndarray, n_boot: int = 200, seed: int = 0,
                      device: str | None = None) -> BootstrapResult:
    """FID(other) - FID(base), bootstrapped by resampling the same sample indices in both sets.

    The two feature sets must come from the same noise, row for row (paired). Resampling with repeats
    inflates each FID a little, but alike for both, so the interval of the difference is what to read.
    ``device`` (e.g. ``"cuda"``) runs the replicates in float64 torch there
    (:func:`kpe_lib.metrics.device_stats.paired_fid_change_device`, the same resamples); None: numpy on the CPU.
    """
    if device is not None:
        if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
            raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
        d = paired_fid_change_device(reference, base, other, n_boot=n_boot, seed=seed, level=0.95, device=device)
        return BootstrapResult(value=d.change, stderr=d.stderr, ci=d.ci, level=d.level, n_boot=n_boot)
    (fa, ga), (fb, gb) = reference.project(base), reference.project(other)
    if fa.shape != fb.shape:
        raise ValueError(f"base and other must be paired feature sets of the same shape, got {fa.shape}, {fb.shape}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")

    def change(fa: np.ndarray, ga: np.ndarray, fb: np.ndarray, gb: np.ndarray) -> float:
        return reference.fid_projected(fb, gb) - reference.fid_projected(fa, ga)

    return bootstrap_ci(change, fa, ga, fb, gb, n_boot=n_boot, seed=seed, level=0.95)


@dataclass
class PairedFidChanges:
    """Paired FID bootstraps ``FID(other) - FID(base)`` against one reference, each pair computed once.

    The chapter needs the same pair more than once: a table's ``dfid`` column and the scoreboard test of the
    same configuration (:func:`~kpe_lib.experiments.celeba_kts.readings.chapter_tests`), and the ablations'
    reference table when the ablations use every sample (then they hold the main table's evaluations
    themselves). At the paper scale one bootstrap costs minutes, so :meth:`change` keeps every result,
    keyed by the identity of the two feature tensors (which it holds, so an identity is never reused).

    Attributes:
        reference: the reference Gaussian.
        n_boot, seed: resamples and resampling seed (numpy's indices, the same on every device).
        device: None: numpy on the CPU (:meth:`FrechetReference.paired_change`); else float64 torch there
            (:func:`kpe_lib.metrics.device_stats.paired_fid_change_device`, the same resamples).
        computed: bootstraps actually run (a pair asked for again is not counted).
    """

    reference: FrechetReference
    n_boot: int = 200
    seed: int = 0
    device: str | None = None
    computed: int = 0
    _done: dict[tuple[int, int], tuple[Any, Any, PairedChange]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 2:
            raise ValueError(f"n_boot must be an integer >= 2, got {self.n_boot!r}")

    def check(self, n_boot: int, seed: int) -> None:
        """Raise ValueError unless this holds bootstraps of ``n_boot`` resamples with ``seed``."""
        if (n_boot, seed) != (self.n_boot, self.seed):
            raise ValueError(f"changes holds bootstraps with n_boot={self.n_boot}, seed={self.seed}; asked for "
                             f"n_boot={n_boot}, seed={seed}")

    def change(self, base: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray) -> PairedChange:
        """The paired change from ``base`` (m, D) to ``other`` (m, D) features, rows from the same noise."""
        key = (id(base), id(other))
        done = self._done.get(key)
        if done is not None and done[0] is base and done[1] is other:
            return done[2]
        if self.device is None:
            result = self.reference.paired_change(base, other, n_boot=self.n_boot, seed=self.seed)
        else:
            result = paired_fid_change_device(self.reference, base, other, n_boot=self.n_boot, seed=self.seed,
                                              device=self.device)
        self.computed += 1
        self._done[key] = (base, other, result)
        return result


def fid_of_images(images01: torch.Tensor, reference: FrechetReference, batch_size: int | None = None,
                  device: str = "cpu") -> tuple[float, torch.Tensor]:
    """FID of images in [0, 1] against the reference, and their Inception features (one pass).

    The protocol is ``kpe_lib.metrics.fid``'s (TF-Inception pool_3, bilinear to 299, Mathematics §5), the Frechet
    distance computed exactly by :meth:`kpe_lib.metrics.FrechetReference.fid`; the caller states the counts,
    solver and NFE beside the number. Keep the features for :func:`paired_fid_change`.
    """
    feats = inception_features(images01, batch_size=batch_size, device=device, progress=False)
    return reference.fid(feats), feats


def pareto_mask(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.ndarray:
    """Points not dominated when both coordinates are minimised (FID and F_mem), as a bool array.

    A point is dominated when another is no worse in both coordinates and better in at least one.
    NaN points are never on the front.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError(f"x and y must be 1-d of the same length, got {xa.shape} and {ya.shape}")
    ok = np.isfinite(xa) & np.isfinite(ya)
    front = ok.copy()
    for i in np.flatnonzero(ok):
        dominated = ok & (xa <= xa[i]) & (ya <= ya[i]) & ((xa < xa[i]) | (ya < ya[i]))
        front[i] = not dominated.any()
    return front


def summary_row(ev: ConfigEval, base: ConfigEval | None = None, n_boot: int = 1000, seed: int = 0
                ) -> dict[str, Any]:
    """One table row: configuration, its gain's parameters (None where a control has none), its time budget
    (continuous ``budget`` and the grid's ``budget_grid``, Mathematics §3.5) and ``eta1 = eta(1)``, F_mem (%)
    with SE and 95% interval, paired change against ``base``, mean KPE total/early/late, FID (None when not
    computed)."""
    s, m = ev.spec, ev.memorization
    k = s.kts
    row: dict[str, Any] = {
        "config": s.name, "group": s.group, "control": s.control,
        "alpha0": None if k is None else k.alpha0, "beta0": None if k is None else k.beta0,
        "tau_split": s.tau_split, "launch": None if k is None else k.launch,
        "landing": None if k is None else k.landing, "solver": s.solver, "nfe": s.nfe, "grid": s.grid_kind,
        "budget": s.budget, "budget_grid": discrete_time_budget(s.gain, ev.grid, s.solver),
        "eta1": float(s.gain(1.0)), "energy_aware": s.is_energy_aware,
        "fmem_pct": 100 * m.value, "fmem_se_pct": 100 * m.stderr,
        "fmem_ci_lo_pct": 100 * m.ci95[0], "fmem_ci_hi_pct": 100 * m.ci95[1],
        "kpe": float(ev.kpe.mean()), "kpe_early": float(ev.kpe_early.mean()), "kpe_late": float(ev.kpe_late.mean()),
        "fid": ev.fid, "n_samples": int(ev.samples.shape[0]),
    }
    if ev.damped is not None:
        row["damped_pct"] = 100 * float(ev.damped.double().mean())
    if base is not None:
        d = paired_fmem_change(base.memorization, m, n_boot=n_boot, seed=seed)
        row.update(dfmem_pct=100 * d.value, dfmem_ci_lo_pct=100 * d.ci[0], dfmem_ci_hi_pct=100 * d.ci[1])
    if not all(math.isfinite(v) for v in (row["kpe"], row["kpe_early"], row["kpe_late"])):
        raise ValueError(f"configuration {s.name!r} produced a non-finite KPE")
    return row
