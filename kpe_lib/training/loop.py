"""Flow-matching training: Adam, EMA, gradient clipping, seeded batches, checkpoint and resume (Mathematics §1).

Determinism: one ``torch.Generator`` (CPU, seeded by ``config.seed``) draws the batch permutations, the
times t ~ U[0, 1], the noise x0 ~ N(0, I) and the label dropout (with ``config.device_noise`` the noise and
times come from a generator on the device instead); the global RNG, which dropout layers use, is reseeded at
every step from (seed, step) inside a private RNG context. A checkpoint stores the generator states, so on
the CPU a run interrupted and resumed reaches bit-identical weights.

Several processes (``torchrun``, :mod:`kpe_lib.distributed`): when a process group is initialised the model
is wrapped in DistributedDataParallel. Every rank draws the same global batch (indices, noise, times) and
trains on its contiguous slice of ``batch_size / world_size`` rows; DDP averages the gradients, so a step
equals the one-process step on the whole batch up to float rounding (dropout masks are drawn per rank).
Rank 0 alone writes checkpoints; every rank resumes from the same file.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from kpe_lib.distributed import barrier, dist_info
from kpe_lib.training._util import EpochSampler, private_global_rng, progress_bar, seed_global_rng, step_seed
from kpe_lib.training.checkpoint import FLOW_FORMAT, CheckpointError, atomic_save, canonical, \
    config_differences, data_fingerprint, load_checkpoint
from kpe_lib.training.config import TrainConfig, TrainResult
from kpe_lib.training.loss import cfm_loss

_CHECKPOINT_KEYS = ("config", "step", "model", "ema", "optimizer", "generator", "sampler", "losses", "seconds")


def model_config_of(model: nn.Module) -> dict[str, Any]:
    """``model.config`` for the project's models; else the class name and parameter count."""
    config = getattr(model, "config", None)
    if isinstance(config, dict):
        return canonical(config)
    return {"class": f"{type(model).__module__}.{type(model).__qualname__}",
            "num_params": sum(p.numel() for p in model.parameters())}


def run_identity(full: dict[str, Any]) -> dict[str, Any]:
    """The part of a full configuration that must match to resume (drops the run-length fields)."""
    train = {k: v for k, v in full["train"].items() if k not in TrainConfig.RUN_LENGTH_FIELDS}
    return {"model": full["model"], "train": train, "data": full["data"]}


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


def _check_inputs(model: nn.Module, data: torch.Tensor, labels: torch.Tensor | None) -> None:
    if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] < 1 or not data.is_floating_point():
        raise ValueError("data must be a floating-point tensor of shape (N, ...) with N >= 1; got "
                         f"{type(data).__name__} {tuple(getattr(data, 'shape', ()))}")
    bad = int((~torch.isfinite(data)).sum())
    if bad:  # caught here, not reported later as a diverged training
        raise ValueError(f"data contains {bad} NaN or infinite value(s) of {data.numel()}; the training set "
                         "must be finite")
    if labels is None:
        return
    k = getattr(model, "num_classes", None)
    if k is None:
        raise ValueError("labels were given but the model is not class-conditional (it has no num_classes)")
    labels = torch.as_tensor(labels)
    if labels.shape != (data.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({data.shape[0]},); got "
                         f"{tuple(labels.shape)} {labels.dtype}")
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"labels must lie in [0, {k - 1}] (index {k} is the null class); "
                         f"got [{int(labels.min())}, {int(labels.max())}]")


def _rank_seed(seed: int, rank: int) -> int:
    """Per-rank seed of the global RNG (dropout): rank 0 keeps the one-process seed."""
    return seed if rank == 0 else (seed + rank * 0x9E3779B97F4A7C15) % (2**63 - 1)


def train_flow_matching(model: nn.Module, data: torch.Tensor, labels: torch.Tensor | None = None,
                        config: TrainConfig | None = None, checkpoint: str | Path | None = None,
                        progress: bool = True, callback: Callable[[int, float], None] | None = None,
                        device: str | torch.device | None = None) -> TrainResult:
    """Train ``model`` with the CFM loss on the linear path, x_t = (1 - t) x0 + t x1 (Mathematics §1).

    Args:
        model: a velocity ``model(x, t)`` (or ``model(x, t, y=labels)`` when labels are given); trained in
            place.
        data: training set x1, (N, ...) float; moved to ``device`` once.
        labels: (N,) class indices in [0, K) for a class-conditional model (null class K used with
            probability ``config.p_uncond``), or None.
        config: training settings (default ``TrainConfig()``); ``bf16``, ``compile``, ``device_noise`` and
            ``sync_every`` select the fast paths (all off by default).
        checkpoint: a file path. If it exists the run resumes from it (its configuration must match, bar
            ``steps`` / ``checkpoint_every`` / ``sync_every``); it is (re)written every ``checkpoint_every``
            steps and at the end (by rank 0 only under torchrun).
        progress: show a tqdm bar with the loss (also off when env CI is set, stderr is no terminal, or on
            ranks other than 0).
        callback: called as ``callback(step, loss)`` after each step (after that step's checkpoint); with
            ``sync_every > 1`` the calls of a window come at its read-back.
        device: where to train (default: the model's device).

    Returns:
        TrainResult with the model and EMA in eval mode, the loss history (the loss of the global batch)
        and step counts.

    Raises:
        FloatingPointError: the loss became NaN or infinite (raised before that step's update when
            ``sync_every`` is 1, else at the next read-back).
        ValueError: a checkpoint written with another configuration (differing keys named), one past
            ``config.steps``, or a ``batch_size`` not divisible by the number of ranks.
            ``CheckpointError`` (a ValueError) for an unreadable checkpoint file.

    Example::

        res = train_flow_matching(TimeMLP(), points, config=TrainConfig(steps=2000, lr=1e-3),
                                  checkpoint="runs/moons.pt")   # run again to resume / extend
        res.losses[-1], res.sampling_model
    """
    config = config or TrainConfig()
    _check_inputs(model, data, labels)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    info = dist_info(device)
    rank, world = info.rank, info.world_size
    if config.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size={config.batch_size} must be divisible by the number of ranks "
                         f"({world}): each rank trains on batch_size / world_size rows")
    model.to(device)
    full = {"model": model_config_of(model), "train": canonical(config.to_dict()),
            "data": data_fingerprint(data, labels)}

    ema = copy.deepcopy(model).requires_grad_(False) if config.ema_decay is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed) if config.device_noise else None
    sampler = EpochSampler(data.shape[0])
    step, losses, seconds_before = 0, [], 0.0

    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.exists():
        ck = load_checkpoint(path, FLOW_FORMAT)
        absent = [k for k in _CHECKPOINT_KEYS if k not in ck]
        if noise_gen is not None and "noise_generator" not in ck:
            absent.append("noise_generator")
        if absent:
            raise CheckpointError(f"checkpoint file {path} lacks {', '.join(absent)}; delete it to start over")
        diffs = config_differences(run_identity(ck["config"]), run_identity(full))
        if diffs:
            raise ValueError(f"checkpoint {path} was written with a different configuration; differing keys "
                             f"(checkpoint -> now): {'; '.join(diffs)}. Use another checkpoint path or delete it.")
        if ck["step"] > config.steps:
            raise ValueError(f"checkpoint {path} is at step {ck['step']}, past config.steps={config.steps}; "
                             "training cannot be rewound")
        model.load_state_dict(ck["model"])
        if ema is not None:
            ema.load_state_dict(ck["ema"])
        optimizer.load_state_dict(ck["optimizer"])
        generator.set_state(ck["generator"])
        if noise_gen is not None:
            noise_gen.set_state(ck["noise_generator"])
        sampler.load(ck["sampler"])
        step, losses, seconds_before = int(ck["step"]), ck["losses"].tolist(), float(ck["seconds"])

    saved_step = step if path is not None and path.exists() else -1

    def save(elapsed: float) -> None:
        nonlocal saved_step
        saved_step = step
        if rank == 0:
            state = {"format": FLOW_FORMAT, "config": full, "step": step, "model": model.state_dict(),
                     "ema": ema.state_dict() if ema is not None else None, "optimizer": optimizer.state_dict(),
                     "generator": generator.get_state(), "sampler": sampler.state(),
                     "losses": torch.tensor(losses, dtype=torch.float64), "seconds": elapsed}
            if noise_gen is not None:
                state["noise_generator"] = noise_gen.get_state().cpu()
            atomic_save(state, path)
        barrier()  # no rank runs ahead of (or exits before) the file it may resume from

    net: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(net) if config.compile else net
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if config.bf16 else contextlib.nullcontext
    data_dev = data.to(device)
    labels_dev = torch.as_tensor(labels).long().to(device) if labels is not None else None
    b = config.batch_size
    lo, hi = rank * b // world, (rank + 1) * b // world
    pending: list[torch.Tensor] = []  # device losses not read back yet (sync_every > 1)

    def read_back() -> None:
        if not pending:
            return
        values = torch.stack(pending).tolist()
        first = step - len(values) + 1
        pending.clear()
        for j, value in enumerate(values):
            if not math.isfinite(value):
                raise FloatingPointError(f"the CFM loss is {value} at step {first + j}: training diverged; lower "
                                         "config.lr or set config.grad_clip (the last checkpoint predates it)")
        losses.extend(values)
        bar.update(len(values))
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
        if callback is not None:
            for j, value in enumerate(values):
                callback(first + j, value)

    start_step, start = step, time.perf_counter()
    bar = progress_bar(progress and rank == 0, total=config.steps, initial=step, desc="flow matching", unit="step")
    model.train()
    with private_global_rng(device), bar:
        while step < config.steps:
            # dropout masks depend on (seed, step, rank) only
            seed_global_rng(_rank_seed(step_seed(config.seed, step), rank), device)
            idx = sampler.next(b, generator)[lo:hi].to(device)
            x1 = data_dev[idx]
            shape = (b, *x1.shape[1:])
            if noise_gen is None:
                x0 = torch.randn(shape, generator=generator, dtype=x1.dtype)[lo:hi].to(device)
                t = torch.rand(b, generator=generator)[lo:hi].to(device)
            else:
                x0 = torch.randn(shape, generator=noise_gen, dtype=x1.dtype, device=device)[lo:hi]
                t = torch.rand(b, generator=noise_gen, device=device)[lo:hi]
            extras = {}
            if labels_dev is not None:
                drop = (torch.rand(b, generator=generator)[lo:hi] < config.p_uncond).to(device)
                extras["y"] = torch.where(drop, torch.full_like(idx, model.num_classes), labels_dev[idx])
            for group in optimizer.param_groups:
                group["lr"] = config.lr_at(step)
            with autocast():
                loss = cfm_loss(forward, x1, x0, t, **extras)
            record = loss.detach()
            if world > 1:  # the loss of the global batch: the mean of the equal-sized slices' means
                record = record.clone()
                torch.distributed.all_reduce(record)
                record = record / world
            if config.sync_every == 1:
                loss_value = record.item()
                if not math.isfinite(loss_value):  # stop before the update: the last checkpoint stays usable
                    raise FloatingPointError(f"the CFM loss is {loss_value} at step {step + 1}: training diverged; "
                                             "lower config.lr or set config.grad_clip")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema_update(ema, model, config.ema_decay)
            step += 1
            checkpoint_now = path is not None and config.checkpoint_every and step % config.checkpoint_every == 0
            if config.sync_every == 1:
                losses.append(loss_value)
                bar.update(1)
                if step % 10 == 0 or step == config.steps:
                    bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.4f}")
                if checkpoint_now:
                    save(seconds_before + time.perf_counter() - start)
                if callback is not None:
                    callback(step, losses[-1])
            else:
                pending.append(record.float())
                if checkpoint_now or step % config.sync_every == 0 or step == config.steps:
                    read_back()
                if checkpoint_now:
                    save(seconds_before + time.perf_counter() - start)
        read_back()
    seconds = seconds_before + time.perf_counter() - start
    if path is not None and saved_step != step:
        save(seconds)
    model.eval()
    if ema is not None:
        ema.eval()
    return TrainResult(model=model, ema=ema, losses=losses, steps_done=step, seconds=seconds,
                       new_steps=step - start_step, config=full, checkpoint=path)
