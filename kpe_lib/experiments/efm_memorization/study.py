"""The chapter's computations, stage by stage: data, exact EFM paths, the KTS sweep and CIFAR-10
(Mathematics §2-6). Each function is one visible cell of the chapter.

Every function keeps the chapter's operations, order and random draws: the sweep reuses the paths
already sampled for a configuration, every F_mem and AUROC bootstrap uses the chapter's ``seed``.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib import KTS, EmpiricalVelocity, SampleResult, sample
from kpe_lib.data import ImageData, PartialDataWarning, load_celeba, load_cifar10
from kpe_lib.experiments.efm_memorization.analysis import (CollapsedPath, PathDiagnostics, StateRecorder,
                                                           collapsed_path, commit_time, displacement_factors,
                                                           path_diagnostics, predicted_memorized)
from kpe_lib.metrics import MemorizationResult, memorization_fraction, nearest_neighbors

__all__ = ["rms", "ChapterData", "load_data", "RecordSteps", "record_steps", "PathStudy", "run_paths",
           "CollapseCheck", "collapse_check",           "landing_form_scale", "kts_configs", "SweepResult", "kts_sweep", "sweep_display",
           "CifarStudy", "cifar_study",
           "dataset_row"]

Stage = Callable[[str], ContextManager]
Config = tuple[str, str, KTS]          # (name, family, gain)


def _no_stage(name: str) -> ContextManager:
    return contextlib.nullcontext()


def rms(d, dim: int):
    """An L2 distance as a root-mean-square per coordinate (pixel units of [0, 1]): ``d / sqrt(dim)``."""
    return d / math.sqrt(dim)


@dataclass
class ChapterData:
    """The chapter's images in centred pixel space (Mathematics §6).

    Attributes:
        faces: CelebA training faces, 32x32 grayscale, training mean subtracted.
        heldout: the next faces of the train split, centred with the training mean.
        cifar: CIFAR-10 training images, RGB, one mean subtracted.
        train: ``faces.images`` in float64, (n, 1, 32, 32).
        n_train, dim: n and d = 1024 pixels.
        atom_gap: (n,) distance of every training face to its nearest other training face.
        sq_norm: (n,) ``||a_i||^2``.
    """

    faces: ImageData
    heldout: ImageData
    cifar: ImageData
    train: torch.Tensor
    n_train: int
    dim: int
    atom_gap: torch.Tensor
    sq_norm: torch.Tensor

    def summary(self) -> str:
        """Two lines: sizes, the subtracted mean and the median gap between training faces (RMS per pixel)."""
        return (f"CelebA: {self.n_train} training faces + {len(self.heldout)} held-out, {self.dim} pixels, mean "
                f"{self.faces.mean:.3f} subtracted; median gap to the nearest other training face "
                f"{rms(self.atom_gap.median(), self.dim):.3f} (RMS per pixel)\n"
                f"CIFAR-10: {len(self.cifar)} training images, {self.cifar.images[0].numel()} coordinates")


def load_data(data_root: str | None, n_train: int, n_heldout: int, n_cifar: int) -> ChapterData:
    """Load CelebA (training and held-out faces) and CIFAR-10, and the gaps between training faces.

    A partial local copy of a data set is accepted silently (``PartialDataWarning``); the held-out faces
    are the images after the first ``n_train`` (``index=1``).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDataWarning)
        faces = load_celeba(data_root, split="train", n=n_train, index=0)
        heldout = load_celeba(data_root, split="train", n=n_heldout, index=1, mean=faces.mean)
        cifar = load_cifar10(data_root, split="train", n=n_cifar, center=True)
    train = faces.images.double()
    # gap of every training image to its nearest other training image (Mathematics §5's d2 for an exact copy)
    atom_gap = nearest_neighbors(train, train, k=2).distances[:, 1]
    return ChapterData(faces=faces, heldout=heldout, cifar=cifar, train=train, n_train=train.shape[0],
                       dim=train[0].numel(), atom_gap=atom_gap, sq_norm=train.flatten(1).pow(2).sum(1))


@dataclass
class RecordSteps:
    """Where the paths are recorded.

    Attributes:
        tau_steps: ``tau_split -> grid index`` of every split the chapter uses.
        steps: recorded step indices: every ``every``-th, the last step N - 1 and every split.
        times: their times ``grid[steps]`` (floats).
    """

    tau_steps: dict[float, int]
    steps: list[int]
    times: list[float]


def record_steps(grid: torch.Tensor, taus: Sequence[float], every: int) -> RecordSteps:
    """The recording plan on a grid (N + 1,); raises ValueError if a ``tau_split`` is not a grid node."""
    n = grid.numel() - 1
    tau_steps = {tau: int(round(tau * n)) for tau in taus}
    if not all(abs(float(grid[i]) - tau) < 1e-12 for tau, i in tau_steps.items()):
        raise ValueError(f"tau_split must be a grid node, got {list(taus)} on {n} steps")
    steps = sorted(set(range(0, n, every)) | {n - 1} | set(tau_steps.values()))
    return RecordSteps(tau_steps=tau_steps, steps=steps, times=[float(grid[i]) for i in steps])


@dataclass
class PathStudy:
    """Plain (``eta = 1``) and landing paths from the same noise, with the closed form along them.

    Attributes:
        plain, landing: the two SampleResults (x (B, ...), kpe (B,), energy (N, B), ...).
        diag: ``{"EFM": ..., "landing": ...}`` PathDiagnostics at ``RecordSteps.times`` ((K, B) each).
        x_tau: ``tau_split -> `` the plain paths' states there, (B, ...) on the CPU (before any landing).
    """

    plain: SampleResult
    landing: SampleResult
    diag: dict[str, PathDiagnostics]
    x_tau: dict[float, torch.Tensor]


def run_paths(efm: EmpiricalVelocity, x0: torch.Tensor, grid: torch.Tensor, landing: KTS, steps: RecordSteps,
              stage: Stage = _no_stage) -> PathStudy:
    """Sample ``x0`` (B, ...) plainly and with ``landing`` (Euler on ``grid``), recording the states at
    ``steps.times``, and evaluate speed, envelope and posterior weights there (Mathematics §4).

    ``stage`` times the two parts (e.g. ``ctx.stage``)."""
    with stage("paths: sample and record"):
        rec_plain, rec_land = StateRecorder(efm, steps.times), StateRecorder(efm, steps.times)
        res_plain = sample(rec_plain, x0, grid=grid)             # eta = 1
        res_land = sample(rec_land, x0, grid=grid, gain=landing)
    with stage("paths: diagnostics"):
        diag = {"EFM": path_diagnostics(efm, *rec_plain.stacked()),
                "landing": path_diagnostics(efm, *rec_land.stacked())}
    x_tau = {tau: rec_plain.states[float(grid[i])].cpu() for tau, i in steps.tau_steps.items()}
    return PathStudy(plain=res_plain, landing=res_land, diag=diag, x_tau=x_tau)


@dataclass
class CollapseCheck:
    """The collapsed-path analysis of the plain and landing paths (package docstring).

    Attributes:
        atom: (B,) training index each plain path ends on.
        commit: ``{"EFM": ..., "landing": ...}`` (B,) first recorded time with max weight >= 1/2.
        j_tau: index of ``tau0`` among the recorded times.
        d_start: (B,) ``||a_k - x(tau0)||`` of the plain paths.
        prediction: ``collapsed_path`` of the landing from ``d_start``, distances (N + 1 - s, B).
        one_hot: (B,) whether the plain paths' weights are one-hot (> 1 - 1e-12) at ``tau0``.
        rel_err: relative error of the predicted final distance of the landing paths, one-hot paths only.
        speed_ratio: median speed at the last recorded time ``t_last`` over speed at t = 0, per run.
        tau0, t_last: the split the prediction starts at and the last recorded time.
    """

    atom: torch.Tensor
    commit: dict[str, torch.Tensor]
    j_tau: int
    d_start: torch.Tensor
    prediction: CollapsedPath
    one_hot: torch.Tensor
    rel_err: torch.Tensor
    speed_ratio: dict[str, float]
    tau0: float
    t_last: float

    def summary(self) -> str:
        """Two lines: median commit time, share of one-hot paths and the formula's error; the speed ratios."""
        return (f"median commit time (max weight > 1/2): {float(self.commit['EFM'].median()):.2f}; "
                f"one-hot at tau_split = {self.tau0}: {float(self.one_hot.float().mean()):.1%} of paths, "
                f"collapsed-path formula max relative error {float(self.rel_err.max()):.1e}\n"
                f"median speed at t = {self.t_last:.2f} over speed at t = 0: EFM {self.speed_ratio['EFM']:.2f}, "
                f"landing (unshaped) {self.speed_ratio['landing']:.2f}")


def collapse_check(paths: PathStudy, atom: torch.Tensor, train: torch.Tensor, grid: torch.Tensor, landing: KTS,
                   steps: RecordSteps, tau0: float) -> CollapseCheck:
    """Commit times, and the collapsed-path formula against the landing paths' final distances.

    The landing's distance to the face ``a_k`` of each plain path (``atom``, (B,)) is predicted from the plain
    state at ``tau0`` alone with ``collapsed_path`` and compared with the sampled landing paths."""
    commit = {k: commit_time(d.max_weight, d.t, 0.5) for k, d in paths.diag.items()}
    j_tau = steps.times.index(float(grid[steps.tau_steps[tau0]]))
    d_start = (train[atom].flatten(1) - paths.x_tau[tau0].flatten(1)).norm(dim=1)
    pred = collapsed_path(d_start, grid, landing, steps.tau_steps[tau0])
    d_final_land = (train[atom].flatten(1) - paths.landing.x.cpu().flatten(1)).norm(dim=1)
    one_hot = paths.diag["EFM"].max_weight[j_tau] > 1 - 1e-12           # weights already one-hot at tau_split
    rel_err = ((pred.distance[-1] - d_final_land).abs() / d_final_land)[one_hot]
    speed_ratio = {k: float((d.speed[-1] / d.speed[0]).median()) for k, d in paths.diag.items()}
    return CollapseCheck(atom=atom, commit=commit, j_tau=j_tau, d_start=d_start, prediction=pred, one_hot=one_hot,
                         rel_err=rel_err, speed_ratio=speed_ratio, tau0=tau0, t_last=steps.times[-1])


def landing_form_scale(k_rate: float = 3.0) -> dict[str, float]:
    """Landing form -> ``1 - eta(1)`` per unit ``beta0`` (exponential: ``e^k - 1``; Mathematics §3)."""
    return {"exponential": math.expm1(k_rate), "linear": 1.0, "constant": 1.0}


def kts_configs(beta0_sweep: Sequence[float], tau_sweep: Sequence[float], landing_beta0: float, eta_end: float,
                launch_alpha0: Sequence[float], balanced: float, k_rate: float = 3.0) -> list[Config]:
    """The chapter's sampler configurations ``(name, family, KTS)``, in table order: plain EFM, the beta0
    sweep (tau_split 0.6), the tau_split sweep, three landing forms with the same ``eta(1) = eta_end``,
    launch only, and the balanced setting ``alpha0 = beta0 = balanced``."""
    form_scale = landing_form_scale(k_rate)
    configs = [("EFM (eta = 1)", "plain", KTS())]
    configs += [(f"landing beta0={b:g}", "beta0 sweep", KTS(beta0=b)) for b in beta0_sweep if b > 0]
    configs += [(f"landing beta0={landing_beta0:g}, tau_split={tau:g}", "tau_split",
                 KTS(beta0=landing_beta0, tau_split=tau)) for tau in tau_sweep]
    configs += [(f"{form} landing, eta(1)={eta_end:g}", "landing form",
                 KTS(beta0=(1 - eta_end) / form_scale[form], landing=form)) for form in form_scale]
    configs += [(f"launch alpha0={a:g}", "launch", KTS(alpha0=a)) for a in launch_alpha0]
    configs += [(f"balanced alpha0=beta0={balanced:g}", "balanced", KTS(alpha0=balanced, beta0=balanced))]
    return configs


@dataclass
class SweepResult:
    """The KTS sweep.

    Attributes:
        table: one row per configuration (index ``configuration``): the gain, the factor ``F`` left at
            t = 1, F_mem with its bootstrap error and interval, the analytic F_mem, mean KPE (total, early,
            late), median d1 and median held-out distance (RMS per pixel).
        per_sample: configuration -> ``memorized`` (B,) bool, ``kpe``/``late``/``early`` (B,), ``x`` (B, ...),
            ``nearest`` (B,) training index.
        runs: gain -> SampleResult (the reused plain and landing runs included).
        heldout_real: (n,) distance of each training face to its nearest held-out face.
    """

    table: pd.DataFrame
    per_sample: dict[str, dict[str, torch.Tensor]]
    runs: dict[KTS, SampleResult]
    heldout_real: torch.Tensor


def kts_sweep(efm: EmpiricalVelocity, x0: torch.Tensor, grid: torch.Tensor, configs: Sequence[Config],
              train: torch.Tensor, heldout: torch.Tensor, *, reuse: Mapping[KTS, SampleResult],
              tau_steps: Mapping[float, int], x_tau: Mapping[float, torch.Tensor], atom: torch.Tensor,
              atom_gap: torch.Tensor, tau0: float, n_boot: int, seed: int) -> SweepResult:
    """Sample every configuration from the same noise and measure copying and closeness to held-out faces.

    Args:
        efm, x0, grid: the closed form, the noise (B, ...) and the Euler grid (N + 1,).
        configs: ``kts_configs(...)``.
        train: (n, ...) training faces; heldout: (m, ...) held-out faces.
        reuse: runs already sampled, by gain (the plain and landing paths).
        tau_steps: ``tau_split -> grid index``; x_tau: the plain paths' states there, (B, ...).
        atom: (B,) training index each plain path ends on; atom_gap: (n,) gaps between training faces.
        tau0: landings with ``tau_split >= tau0`` start after the paths collapsed and get an analytic F_mem
            (``predicted_memorized``, Mathematics §5).
        n_boot, seed: bootstrap of F_mem.
    """
    ho_real = nearest_neighbors(train, heldout, k=1).distances[:, 0]   # real faces vs the held-out set
    runs, rows, per_sample = dict(reuse), [], {}
    dim = train[0].numel()
    for name, family, gain in configs:
        res = runs.get(gain) or sample(efm, x0, grid=grid, gain=gain)
        runs[gain] = res
        x_end = res.x.cpu()
        m = memorization_fraction(x_end, train, n_boot=n_boot, seed=seed)
        ho = nearest_neighbors(x_end, heldout, k=1).distances[:, 0]
        s = tau_steps.get(gain.tau_split)
        factor = float(displacement_factors(grid, gain, start=s)[-1]) if s is not None else float("nan")
        predicted = float("nan")
        if gain.tau_split >= tau0:                            # landing starts after the paths collapsed
            d0 = (train[atom].flatten(1) - x_tau[gain.tau_split].flatten(1)).norm(dim=1)
            predicted = float(predicted_memorized(d0, atom_gap[atom], factor).double().mean())
        per_sample[name] = {"memorized": m.memorized, "kpe": res.kpe.cpu(), "late": res.kpe_late.cpu(),
                            "early": res.kpe_early.cpu(), "x": x_end, "nearest": m.nearest_index}
        rows.append({"configuration": name, "family": family, "alpha0": gain.alpha0, "beta0": gain.beta0,
                     "tau_split": gain.tau_split, "landing": gain.landing, "eta(t_N-1)": gain(float(grid[-2])),
                     "F (left at t=1)": factor, "F_mem": m.value, "F_mem se": m.stderr,
                     "F_mem ci": m.ci95, "F_mem predicted": predicted, "KPE": float(res.kpe.mean()),
                     "KPE early": float(res.kpe_early.mean()), "KPE late": float(res.kpe_late.mean()),
                     "d1 (RMS)": float(rms(m.nearest_distance.median(), dim)),
                     "held-out dist (RMS)": float(rms(ho.median(), dim))})
    return SweepResult(table=pd.DataFrame(rows).set_index("configuration"), per_sample=per_sample, runs=runs,
                       heldout_real=ho_real)


def sweep_display(sweep: pd.DataFrame) -> pd.DataFrame:
    """The sweep table as shown: F_mem columns in percent (1 decimal), the rest rounded."""
    show = sweep.drop(columns=["family", "F_mem ci"]).copy()
    for c in ("F_mem", "F_mem se", "F_mem predicted"):
        show[c] = (100 * show[c]).round(1)
    return show.round({"eta(t_N-1)": 3, "F (left at t=1)": 4, "KPE": 0, "KPE early": 0, "KPE late": 0,
                       "d1 (RMS)": 3, "held-out dist (RMS)": 3})


@dataclass
class CifarStudy:
    """The closed-form analysis on CIFAR-10.

    Attributes:
        train: (n, 3, 32, 32) float64 training images.
        plain, landing: SampleResults of the plain and landing paths from the same noise.
        diag: PathDiagnostics of the plain paths at the recorded times, (K, B) each.
        mem, mem_landing: F_mem of the two.
        commit: (B,) commit times (max weight >= 1/2).
        gap: (n,) gap of every training image to its nearest other one.
    """

    train: torch.Tensor
    plain: SampleResult
    landing: SampleResult
    diag: PathDiagnostics
    mem: MemorizationResult
    mem_landing: MemorizationResult
    commit: torch.Tensor
    gap: torch.Tensor


def cifar_study(images: torch.Tensor, grid: torch.Tensor, landing: KTS, times: Sequence[float], n_samples: int,
                generator: torch.Generator, *, device: str, n_boot: int, seed: int) -> CifarStudy:
    """Sample ``n_samples`` noise draws (from ``generator``) through the CIFAR-10 closed form, plainly
    (recording at ``times``) and with ``landing``, and measure commit times and F_mem of both."""
    ctrain = images.double()
    cefm = EmpiricalVelocity(ctrain, dtype=torch.float64, device=device)
    cx0 = torch.randn(n_samples, *ctrain.shape[1:], generator=generator, dtype=torch.float64).to(device)
    crec = StateRecorder(cefm, times)
    cres = sample(crec, cx0, grid=grid)
    cres_land = sample(cefm, cx0, grid=grid, gain=landing)
    cdiag = path_diagnostics(cefm, *crec.stacked())
    del crec
    cmem = memorization_fraction(cres.x.cpu(), ctrain, n_boot=n_boot, seed=seed)
    cmem_land = memorization_fraction(cres_land.x.cpu(), ctrain, n_boot=n_boot, seed=seed)
    return CifarStudy(train=ctrain, plain=cres, landing=cres_land, diag=cdiag, mem=cmem, mem_landing=cmem_land,
                      commit=commit_time(cdiag.max_weight, cdiag.t, 0.5),
                      gap=nearest_neighbors(ctrain, ctrain, k=2).distances[:, 1])


def dataset_row(name: str, data: torch.Tensor, commit_t: torch.Tensor, m: MemorizationResult,
                m_land: MemorizationResult, res: SampleResult, gap: torch.Tensor, landing_beta0: float) -> dict:
    """One row of the data-set comparison: commit-time quantiles, F_mem without and with the landing,
    mean KPE against the collapsed-straight-line value ``1/2 (mean ||a||^2 + d)``, median gap (RMS)."""
    n, d = data.shape[0], data[0].numel()
    q = np.quantile(commit_t.numpy(), [0.1, 0.5, 0.9])
    theory_kpe = 0.5 * (float(data.flatten(1).pow(2).sum(1).mean()) + d)
    return {"dataset": name, "n": n, "d": d, "commit time median [10%, 90%]": f"{q[1]:.2f} [{q[0]:.2f}, {q[2]:.2f}]",
            "F_mem EFM (%)": f"{100 * m.value:.1f} [{100 * m.ci95[0]:.1f}, {100 * m.ci95[1]:.1f}]",
            f"F_mem landing beta0={landing_beta0:g} (%)":
                f"{100 * m_land.value:.1f} [{100 * m_land.ci95[0]:.1f}, {100 * m_land.ci95[1]:.1f}]",
            "mean KPE": round(float(res.kpe.mean()), 0), "1/2(mean||a||^2 + d)": round(theory_kpe, 0),
            "median gap (RMS)": round(float(rms(gap.median(), d)), 3), "samples": res.x.shape[0]}
