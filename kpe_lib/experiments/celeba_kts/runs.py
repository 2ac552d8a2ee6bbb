"""The chapter's runs: the memorising UNet, F_mem over training, and the sweeps of sampler configurations.

Every sweep samples the *same* noise ``x`` with a list of :class:`SamplerSpec` (Mathematics §3, §6) through
:func:`~kpe_lib.experiments.celeba_kts.configs.run_config`, in a fixed order, so that its results are paired
with the plain flow-matching (FM) run on that noise.

Example:
    >>> specs = tau_specs([0.2, 0.6], nfe=10)
    >>> [s.name for s in specs]
    ['tau=0.2', 'balanced']
    >>> new = run_configs(model, x0, specs, train, skip=evals)      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from kpe_lib.accelerate import accelerate
from kpe_lib.budget import budget_controls, matched_forms
from kpe_lib.energy_aware import late_power_threshold
from kpe_lib.experiments.celeba_kts.configs import (ConfigEval, SamplerSpec, Velocity, paired_fmem_change,
                                                    run_config, subset)
from kpe_lib.shaping import KTS, LANDING_FORMS, LAUNCH_FORMS
from kpe_lib.training import TrainConfig, TrainResult, cached_model

__all__ = ["unet_config", "checkpoint_configs", "train_checkpoints", "sampling_velocity", "fmem_over_training",
           "main_specs", "control_specs", "tau_specs", "form_specs", "run_configs", "SolverGrid", "run_solver_grid", "EnergyAwareRuns",
           "run_energy_aware", "EnergySplit", "energy_split"]


def unet_config(width: int, channel_mult: Sequence[int], attn_levels: Sequence[int], num_res_blocks: int,
                dropout: float) -> dict[str, Any]:
    """The ``kpe_lib.models.build_model`` configuration of the chapter's one-channel (grayscale) UNet."""
    return {"kind": "unet", "in_channels": 1, "width": width, "channel_mult": list(channel_mult),
            "attn_levels": list(attn_levels), "num_res_blocks": num_res_blocks, "dropout": dropout}


def checkpoint_configs(checkpoints: Sequence[int], *, batch_size: int, lr: float, ema_decay: float | None,
                       seed: int, checkpoint_every: int | None = None, bf16: bool = False,
                       compile: bool = False) -> list[TrainConfig]:
    """The ``TrainConfig`` of every snapshot of :func:`train_checkpoints`, in the order of ``checkpoints``.

    ``checkpoint_every`` (a run-length setting: not part of the cache key) saves a resumable checkpoint every
    this many steps inside each segment; ``bf16`` / ``compile`` train under bfloat16 autocast / through
    ``torch.compile`` (part of the run's identity; both off: the keys the cache always had).
    """
    return [TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                        checkpoint_every=checkpoint_every, bf16=bf16, compile=compile) for steps in checkpoints]


def train_checkpoints(model_config: dict[str, Any], x_train: torch.Tensor, checkpoints: Sequence[int], *,
                      batch_size: int, lr: float, ema_decay: float | None, seed: int, cache_dir: str | Path,
                      name: str, progress: bool = False, device: str = "cpu", checkpoint_every: int | None = None,
                      bf16: bool = False, compile: bool = False) -> dict[int, TrainResult]:
    """One training run with a snapshot at every step count in ``checkpoints`` (ascending).

    The model cache continues each call from the previous snapshot, so the snapshots are points on one
    run: the same weights, batches and optimiser state as a single run to the last count. Under
    ``torchrun`` every rank calls this and the run is trained with DistributedDataParallel
    (``scripts/pretrain.py``).

    Args:
        model_config: see :func:`unet_config`.
        x_train: (n, 1, 32, 32) training images in the model's space (centred pixels).
        checkpoints: step counts, ascending.
        batch_size, lr, ema_decay, seed, checkpoint_every, bf16, compile: see :func:`checkpoint_configs`.
        cache_dir: the model cache folder; name: the readable prefix of the cache entries.
        progress: tqdm bars while training; device: where to train.

    Returns:
        step count -> the ``TrainResult`` at that count.
    """
    configs = checkpoint_configs(checkpoints, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed,
                                 checkpoint_every=checkpoint_every, bf16=bf16, compile=compile)
    return {cfg.steps: cached_model(model_config, cfg, x_train, cache_dir=cache_dir, name=name, progress=progress,
                                    device=device) for cfg in configs}


def sampling_velocity(run: TrainResult, device: str = "cpu", *, bf16: bool = False,
                      compile: bool = False) -> tuple[Velocity, int]:
    """The network to sample with (EMA if any) on ``device``, in eval mode and channels-last memory format
    (the same math, ~13% faster sampling of this UNet on CPU), then :func:`kpe_lib.accelerate.accelerate`
    (with both flags off: the module itself). Moves ``run``'s module in place.

    Returns:
        (velocity, number of parameters).
    """
    module = run.sampling_model.to(device).eval().to(memory_format=torch.channels_last)
    n_params = sum(p.numel() for p in module.parameters())
    return accelerate(module, bf16=bf16, compile=compile), n_params


def fmem_over_training(runs: Mapping[int, TrainResult], checkpoints: Sequence[int], x: torch.Tensor,
                       spec: SamplerSpec, train: torch.Tensor, final_eval: ConfigEval, *, n_boot: int, seed: int,
                       device: str = "cpu", bf16: bool = False, compile: bool = False,
                       batch_size: int | None = None, reference: Any = None) -> dict[int, ConfigEval]:
    """Plain sampling of the noise ``x`` (B', C, H, W) at every snapshot but the last; the last one is
    ``final_eval`` (the final model's run of the whole shared noise) restricted to its first B' samples
    (with a FID ``reference``, its stored Inception features and FID are sliced too).
    ``batch_size``: samples per forward pass (:func:`~kpe_lib.experiments.celeba_kts.configs.run_config`).

    Returns:
        step count -> evaluation, in the order of ``checkpoints``.
    """
    evals = {}
    for steps in checkpoints[:-1]:
        model, _ = sampling_velocity(runs[steps], device, bf16=bf16, compile=compile)
        evals[steps] = run_config(model, x, spec, train, n_boot=n_boot, seed=seed, batch_size=batch_size)
    n = x.shape[0]
    evals[checkpoints[-1]] = (final_eval if n == final_eval.samples.shape[0] else
                              subset(final_eval, n, train, reference=reference, n_boot=n_boot, seed=seed))
    return evals


def main_specs(main: Mapping[str, Sequence[float]], nfe: int, *, controls: bool = False) -> list[SamplerSpec]:
    """The KTS rows of the main table: name -> (alpha0, beta0), Euler with ``nfe`` steps (FM not included);
    with ``controls``, each followed by its two budget controls (:func:`control_specs`)."""
    specs = []
    for name, (a, b) in main.items():
        spec = SamplerSpec(name, KTS(a, b), nfe=nfe, group="main")
        specs += [spec, *control_specs(spec)] if controls else [spec]
    return specs


def control_specs(spec: SamplerSpec) -> list[SamplerSpec]:
    """The budget controls of a KTS configuration (Mathematics §3.5), same solver, NFE and grid, group
    ``"control"``: ``"<name> | constant budget"`` (``eta == T[eta_KTS]``) and ``"<name> | renormalised"``
    (``eta_KTS / T[eta_KTS]``, budget 1).

    Example:
        >>> [s.name for s in control_specs(SamplerSpec("balanced", KTS(0.01, 0.01)))]
        ['balanced | constant budget', 'balanced | renormalised']
    """
    if not isinstance(spec.gain, KTS) or spec.gain.is_identity or spec.is_energy_aware:
        raise ValueError(f"configuration {spec.name!r} is not a fixed, non-trivial KTS: it has no budget controls")
    c = budget_controls(spec.gain)
    return [dataclasses.replace(spec, name=f"{spec.name} | {label}", gain=gain, group="control")
            for label, gain in (("constant budget", c.constant), ("renormalised", c.renormalised))]


def tau_specs(taus: Sequence[float], nfe: int) -> list[SamplerSpec]:
    """Balanced KTS (``alpha0 = beta0 = 0.01``) at every ``tau_split``; 0.6 is named ``"balanced"`` (the main
    table's run)."""
    return [SamplerSpec("balanced" if abs(tau - 0.6) < 1e-12 else f"tau={tau:g}",
                        KTS(0.01, 0.01, tau_split=tau), nfe=nfe, group="tau_split") for tau in taus]


def form_specs(nfe: int, cells: Sequence[Sequence[str]] | None = None,
               like: KTS = KTS(0.01, 0.01)) -> dict[tuple[str, str], SamplerSpec]:
    """Launch x landing forms (Mathematics §3) **at equal damping**: every pair's launch adds and its landing
    removes as much time as ``like``'s (``kpe_lib.budget.matched_forms``), so all share ``like``'s time
    budget; ``like``'s own pair (linear / exponential for the default) is ``like`` itself, named
    ``"balanced"``.

    Args:
        nfe: Euler steps.
        cells: the (launch, landing) pairs to run; None: all nine.
        like: the gain whose phase budgets every pair matches (balanced KTS).
    """
    pairs = [(lf, gf) for lf in LAUNCH_FORMS for gf in LANDING_FORMS] if cells is None else [tuple(c) for c in cells]
    out = {}
    for lf, gf in pairs:
        own = (lf, gf) == (like.launch, like.landing)
        out[lf, gf] = SamplerSpec("balanced" if own else f"{lf}/{gf}", like if own else matched_forms(like, lf, gf),
                                  nfe=nfe, group="forms")
    return out


def run_configs(velocity: Velocity, x: torch.Tensor, specs: Sequence[SamplerSpec], train: torch.Tensor, *,
                skip: Mapping[str, Any] | Sequence[str] = (), n_boot: int, seed: int,
                batch_size: int | None = None) -> dict[str, ConfigEval]:
    """Run ``specs`` in order on the noise ``x`` (B, C, H, W), leaving out names in ``skip`` (runs that
    exist already) and repeated names; ``batch_size`` samples per forward pass (None: all B).

    Returns:
        name -> evaluation of the configurations run, in the order of ``specs``.
    """
    out: dict[str, ConfigEval] = {}
    for spec in specs:
        if spec.name not in skip and spec.name not in out:
            out[spec.name] = run_config(velocity, x, spec, train, n_boot=n_boot, seed=seed, batch_size=batch_size)
    return out


@dataclass
class SolverGrid:
    """FM and balanced KTS in every solver x NFE x time-grid cell.

    Attributes:
        rows: one dict per cell: ``solver``, ``nfe``, ``grid``, ``F_mem FM %``, ``F_mem KTS %``, the paired
            ``change (points)`` and its 95% interval ``CI lo``, ``CI hi``.
        evals: cell ``"solver/nfe/grid"`` -> ``{"FM": ..., "KTS": ...}``.
    """

    rows: list[dict[str, Any]]
    evals: dict[str, dict[str, ConfigEval]]


def run_solver_grid(velocity: Velocity, x: torch.Tensor, fm_eval: ConfigEval, kts_eval: ConfigEval,
                    train: torch.Tensor, *, nfes: Sequence[int], main_nfe: int, n_boot: int, seed: int,
                    solvers: Sequence[str] = ("euler", "midpoint"),
                    grids: Sequence[str] = ("uniform", "cosine"), batch_size: int | None = None) -> SolverGrid:
    """FM against balanced KTS (``alpha0 = beta0 = 0.01``) per solver, NFE (velocity evaluations) and grid.

    The cell (euler, ``main_nfe``, uniform) is not sampled again: it is ``fm_eval`` / ``kts_eval`` (the main
    table's runs) restricted to the first B' samples.

    Args:
        x: (B', C, H, W) the first samples of the shared noise.
        fm_eval, kts_eval: the main table's FM and balanced runs on the whole shared noise.
        batch_size: samples per forward pass (None: all B').
    """
    rows, evals = [], {}
    for solver in solvers:
        for nfe in nfes:
            for kind in grids:
                cell = f"{solver}/{nfe}/{kind}"
                pair = {}
                for label, (a, b) in {"FM": (0.0, 0.0), "KTS": (0.01, 0.01)}.items():
                    if (solver, nfe, kind) == ("euler", main_nfe, "uniform"):  # the main table's runs
                        pair[label] = subset(fm_eval if label == "FM" else kts_eval, len(x), train,
                                             n_boot=n_boot, seed=seed)
                        continue
                    spec = SamplerSpec(f"{label} {cell}", KTS(a, b), solver=solver, nfe=nfe, grid_kind=kind,
                                       group="solver")
                    pair[label] = run_config(velocity, x, spec, train, n_boot=n_boot, seed=seed,
                                             batch_size=batch_size)
                    if pair[label].nfe != nfe:
                        raise RuntimeError(f"{spec.name} used {pair[label].nfe} evaluations, not {nfe}")
                evals[cell] = pair
                d = paired_fmem_change(pair["FM"].memorization, pair["KTS"].memorization, n_boot=n_boot, seed=seed)
                rows.append({"solver": solver, "nfe": nfe, "grid": kind,
                             "F_mem FM %": 100 * pair["FM"].memorization.value,
                             "F_mem KTS %": 100 * pair["KTS"].memorization.value,
                             "change (points)": 100 * d.value, "CI lo": 100 * d.ci[0], "CI hi": 100 * d.ci[1]})
    return SolverGrid(rows=rows, evals=evals)


@dataclass
class EnergyAwareRuns:
    """The energy-aware landings and their fixed-landing references.

    Attributes:
        names: every configuration, in run order (fixed landings, decided rules, continuous rules).
        evals: name -> evaluation of the configurations run here.
        thresholds: energy-aware name -> its mean-late-power threshold.
        decided: names of the rules decided once at ``decide_at`` (calibrated on the window before it).
    """

    names: list[str]
    evals: dict[str, ConfigEval]
    thresholds: dict[str, float]
    decided: list[str]


def run_energy_aware(velocity: Velocity, x: torch.Tensor, fm_eval: ConfigEval, train: torch.Tensor, *,
                     fixed_landings: Sequence[float], decided: Sequence[Sequence[float]],
                     continuous: Sequence[Sequence[float]], decide_at: float | None, nfe: int,
                     skip: Mapping[str, Any] | Sequence[str] = (), n_boot: int, seed: int,
                     batch_size: int | None = None) -> EnergyAwareRuns:
    """Fixed landings ``KTS(beta0=b)`` and energy-aware landings (``kpe_lib.energy_aware``) on the noise ``x``.

    Each rule ``(beta0, q)`` damps the paths whose running mean late power exceeds the ``q``-quantile of
    the FM run's (``fm_eval``, same noise): in ``decided`` the switch is set once at ``decide_at`` (the
    quantile over ``[tau_split, decide_at)``), in ``continuous`` re-evaluated at every step (the quantile
    over the whole late phase). Fixed landings already in ``skip`` are not run again.

    Args:
        x: (B', C, H, W) the ablations' noise; fm_eval: the FM run on it.
        batch_size: samples per forward pass (None: all B'); the thresholds are fixed before sampling, so
            every path's switch is the same in any batch.
    """
    names, evals, thresholds, once = [], {}, {}, []
    for beta0 in fixed_landings:
        name = f"landing {beta0:g}"
        if name not in skip and name not in evals:
            spec = SamplerSpec(name, KTS(beta0=beta0), nfe=nfe, group="energy-aware")
            evals[name] = run_config(velocity, x, spec, train, n_boot=n_boot, seed=seed, batch_size=batch_size)
        names.append(name)
    for beta0, q in decided:
        thr = late_power_threshold(fm_eval, q, until=decide_at)
        name = f"EA b={beta0:g} q={q:g}"
        spec = SamplerSpec(name, KTS(beta0=beta0), threshold=thr, decide_at=decide_at, nfe=nfe,
                           group="energy-aware")
        evals[name] = run_config(velocity, x, spec, train, n_boot=n_boot, seed=seed, batch_size=batch_size)
        thresholds[name] = thr
        once.append(name)
        names.append(name)
    for beta0, q in continuous:
        thr = late_power_threshold(fm_eval, q)
        name = f"EA b={beta0:g} q={q:g} continuous"
        spec = SamplerSpec(name, KTS(beta0=beta0), threshold=thr, nfe=nfe, group="energy-aware (continuous)")
        evals[name] = run_config(velocity, x, spec, train, n_boot=n_boot, seed=seed, batch_size=batch_size)
        thresholds[name] = thr
        names.append(name)
    return EnergyAwareRuns(names=names, evals=evals, thresholds=thresholds, decided=once)


@dataclass
class EnergySplit:
    """The KPE of memorised against non-memorised samples of one run (Mathematics §2, §5).

    Attributes:
        memorised: (B,) bool, the run's memorised samples.
        grouped: both groups are non-empty (else the ratios are NaN).
        late_ratio: mean late KPE of the memorised samples over that of the others.
        total_ratio: the same for the total KPE.
    """

    memorised: torch.Tensor
    grouped: bool
    late_ratio: float
    total_ratio: float

    @property
    def n_memorised(self) -> int:
        return int(self.memorised.sum())


def energy_split(ev: ConfigEval) -> EnergySplit:
    """Split ``ev``'s per-sample KPE (B,) by its own memorisation outcome."""
    mem = ev.memorization.memorized
    grouped = 0 < int(mem.sum()) < ev.samples.shape[0]
    late = float(ev.kpe_late[mem].mean() / ev.kpe_late[~mem].mean()) if grouped else math.nan
    total = float(ev.kpe[mem].mean() / ev.kpe[~mem].mean()) if grouped else math.nan
    return EnergySplit(memorised=mem, grouped=grouped, late_ratio=late, total_ratio=total)
