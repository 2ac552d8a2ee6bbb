"""Several devices with ``torchrun`` and ``torch.distributed``: shards, gathers and sharded sampling.

A chapter or script started as ``torchrun --nproc_per_node=K script.py`` runs K processes (ranks); each
calls :func:`init_distributed`, which joins the process group torchrun describes in the environment
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``) with NCCL on GPUs and gloo on CPUs. Without
torchrun (``WORLD_SIZE`` unset or 1) everything here is the single-process computation itself.

Rows are sharded contiguously: rank r of K holds rows ``[r n // K, (r + 1) n // K)`` of a set every rank
can rebuild (fixed noise drawn from a seeded generator), so gathering the shards in rank order gives the
rows in their original order. Per-sample sampling paths do not depend on the other rows of the batch, so
:func:`sample_sharded` returns the samples and KPE of one process (to the batch-size dependence of float
rounding inside the model). Training with DistributedDataParallel is in :mod:`kpe_lib.training.loop`.

Example::

    info = init_distributed()                 # under torchrun: rank, world size, this rank's device
    res = sample_sharded(model, x0, batch_size=500, n_steps=100, device=info.device)
    if info.is_main:
        save(res.x, res.kpe)                  # every rank holds all rows
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from kpe_lib.sampling import SampleResult, sample

__all__ = ["DistInfo", "dist_info", "init_distributed", "shard_range", "gather_rows", "barrier", "map_sharded",
           "sample_sharded", "concat_results"]

#: fields of SampleResult that hold one entry per sample along dim 0 (``energy`` holds samples along dim 1)
_ROW_FIELDS = ("x", "kpe", "kpe_raw", "kpe_early", "kpe_late")
_COLUMN_FIELDS = ("energy", "energy_raw")
_SAMPLE_KEYWORDS = frozenset(inspect.signature(sample).parameters)  # the rest are the model's keywords


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` (0 of 1 without torchrun) and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def dist_info(device: str | torch.device | None = None) -> DistInfo:
    """Rank and world size of the initialised process group (0 of 1 without one); ``device`` as given or CPU."""
    local = int(os.environ.get("LOCAL_RANK", "0")) if _active() else 0
    rank, world = (dist.get_rank(), dist.get_world_size()) if _active() else (0, 1)
    return DistInfo(rank, world, local, torch.device(device) if device is not None else torch.device("cpu"))


def init_distributed(device: str | None = None, backend: str | None = None) -> DistInfo:
    """Join the process group torchrun set up in the environment (no-op without one); pick this rank's device.

    Args:
        device: ``"cuda"`` (each rank takes GPU ``LOCAL_RANK``), ``"cpu"``, or None (CUDA when available).
        backend: ``"nccl"`` / ``"gloo"``; None picks NCCL for CUDA and gloo otherwise.

    Returns:
        DistInfo; ``device`` is ``cuda:LOCAL_RANK`` for CUDA.

    Raises:
        ValueError: ``device`` names neither cpu nor cuda, or cuda without a visible GPU.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kind = str(kind).split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or None; got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but torch sees no GPU (torch.cuda.is_available() is False)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not _active():
        dist.init_process_group(backend or ("nccl" if kind == "cuda" else "gloo"))
    dev = torch.device("cuda", local) if kind == "cuda" else torch.device("cpu")
    if kind == "cuda":
        torch.cuda.set_device(dev)
    return DistInfo(dist.get_rank() if _active() else 0, dist.get_world_size() if _active() else 1, local, dev)


def shard_range(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of rank ``rank`` among ``world_size`` for ``n`` rows (contiguous, sizes differ by <= 1)."""
    if world_size < 1 or not 0 <= rank < world_size or n < 0:
        raise ValueError(f"need n >= 0 and 0 <= rank < world_size; got n={n}, rank={rank}, world_size={world_size}")
    return rank * n // world_size, (rank + 1) * n // world_size


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _active() and dist.get_world_size() > 1:
        dist.barrier()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` (n_r, ...) along dim 0 in rank order; all ranks get the result.

    Shards may differ in length (padded for the collective and trimmed). Without a process group, ``x``.
    NCCL needs ``x`` on this rank's GPU, gloo on the CPU; the result is on ``x``'s device.
    """
    if not _active() or dist.get_world_size() == 1:
        return x
    world = dist.get_world_size()
    size = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    top = max(counts)
    padded = torch.zeros((top, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:c] for p, c in zip(parts, counts)])


def _collective_device(device: torch.device) -> torch.device:
    """Where a collective's tensors must live: the GPU for NCCL, the CPU for gloo."""
    if _active() and dist.get_backend() == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def map_sharded(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int | None = None
                ) -> torch.Tensor:
    """``fn`` over this rank's shard of ``x`` in batches, gathered: equals ``fn(x)`` row for row.

    For Inception features or any row-wise map: ``map_sharded(lambda b: inception_features(b, device=d), images,
    500)``. Memory is bounded by one batch of ``fn``'s activations.

    Args:
        fn: ``(b, ...) -> (b, ...)`` row-wise map.
        x: (n, ...) the full input, identical on every rank.
        batch_size: rows per call of ``fn`` (None: the whole shard at once).

    Returns:
        (n, ...) on the device of ``fn``'s output, rows in ``x``'s order.
    """
    info = dist_info()
    lo, hi = shard_range(x.shape[0], info.rank, info.world_size)
    step = batch_size or max(1, hi - lo)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")
    outs = [fn(x[s:min(s + step, hi)]) for s in range(lo, hi, step)]
    if not outs:  # an empty shard still takes part in the collective with an empty tensor
        probe = fn(x[:1])
        outs = [probe[:0]]
    local = torch.cat(outs)
    if info.world_size == 1:
        return local
    where = _collective_device(local.device)
    return gather_rows(local.to(where)).to(local.device)


def sample_sharded(velocity: Callable[..., torch.Tensor], x0: torch.Tensor, *, batch_size: int | None = None,
                   device: str | torch.device | None = None, **kwargs: Any) -> SampleResult:
    """:func:`kpe_lib.sample` of fixed noise ``x0``, sharded over ranks and batched, gathered on every rank.

    Each rank samples its rows of ``x0`` (:func:`shard_range`) in batches of ``batch_size`` on ``device``;
    the final states, KPE (total, raw, early, late) and per-step energies are gathered in row order. With
    one process and ``batch_size`` None or >= len(x0) this is ``sample(velocity, x0.to(device), **kwargs)``.

    Args:
        velocity: ``v(x, t, **extras)`` as for ``sample``.
        x0: (n, ...) noise, the same on every rank (draw it from a seeded generator).
        batch_size: samples per ``sample`` call (bounds memory; None: the whole shard).
        device: where to sample (None: ``x0``'s device); results are returned on ``x0``'s device.
        **kwargs: ``sample``'s keywords (``n_steps``, ``gain``, ``solver``, ...) and model keywords. A model
            keyword that is a tensor with one row per sample (class labels ``y`` (n,)) is cut into the same
            rows as ``x0``; ``record_trajectory`` and ``diagnostics`` are refused (their per-step tensors are
            not gathered).

    Returns:
        SampleResult with all n rows (``nfe`` of one batch, as ``sample`` counts it).
    """
    for name in ("record_trajectory", "diagnostics", "callback"):
        if kwargs.get(name):
            raise ValueError(f"sample_sharded does not support {name}=...; call kpe_lib.sample on one batch")
    if not isinstance(x0, torch.Tensor) or x0.ndim < 1 or x0.shape[0] < 1:
        raise ValueError(f"x0 must be a tensor (n, ...) with n >= 1; got {type(x0).__name__}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None; got {batch_size!r}")
    info = dist_info()
    run_on = torch.device(device) if device is not None else x0.device

    def rows(a: int, b: int) -> dict[str, Any]:  # the keywords of rows a:b (per-sample model tensors cut)
        return {k: (v[a:b].to(run_on) if k not in _SAMPLE_KEYWORDS and isinstance(v, torch.Tensor) and v.ndim >= 1
                    and v.shape[0] == x0.shape[0] else v) for k, v in kwargs.items()}

    if info.world_size == 1 and (batch_size is None or batch_size >= x0.shape[0]):
        res = sample(velocity, x0.to(run_on), **rows(0, x0.shape[0]))
        return _moved(res, x0.device)
    lo, hi = shard_range(x0.shape[0], info.rank, info.world_size)
    step = batch_size or max(1, hi - lo)
    parts = [sample(velocity, x0[s:min(s + step, hi)].to(run_on), **rows(s, min(s + step, hi)))
             for s in range(lo, hi, step)]
    if not parts:  # fewer rows than ranks: run one row to learn the shapes, contribute none
        probe = sample(velocity, x0[:1].to(run_on), **rows(0, 1))
        parts = [_sliced(probe, 0)]
    local = concat_results(parts)
    if info.world_size == 1:
        return _moved(local, x0.device)
    where = _collective_device(run_on)
    for name in _ROW_FIELDS:
        if getattr(local, name) is not None:
            setattr(local, name, gather_rows(getattr(local, name).to(where)).to(x0.device))
    for name in _COLUMN_FIELDS:
        if getattr(local, name) is not None:
            rows = getattr(local, name).T.contiguous().to(where)
            setattr(local, name, gather_rows(rows).T.contiguous().to(x0.device))
    return local


def concat_results(parts: Sequence[SampleResult]) -> SampleResult:
    """Consecutive batches of one sampling run as one result, rows in the order of ``parts``.

    The per-sample fields (``x`` (B_i, ...), ``kpe``, ``kpe_raw``, ``kpe_early``, ``kpe_late`` (B_i,)) are
    concatenated along dim 0 and the per-step energies (N, B_i) along dim 1; ``nfe``, ``grid``, the solver and
    the energy settings are the first batch's (the batches of one run share them). Trajectories and path
    diagnostics are not joined (None): record them on one batch.

    Raises:
        ValueError: no batch, or batches on different grids.
    """
    if not parts:
        raise ValueError("parts must hold at least one SampleResult")
    first = parts[0]
    if any(p.grid.shape != first.grid.shape or not torch.equal(p.grid.cpu(), first.grid.cpu()) for p in parts[1:]):
        raise ValueError("parts must come from one sampling run: their time grids differ")
    out: dict[str, Any] = {}
    for names, dim in ((_ROW_FIELDS, 0), (_COLUMN_FIELDS, 1)):
        for name in names:
            out[name] = (None if getattr(first, name) is None
                         else torch.cat([getattr(p, name) for p in parts], dim=dim))
    return SampleResult(**out, nfe=first.nfe, grid=first.grid, trajectory=None, solver=first.solver,
                        energy_rule=first.energy_rule, tau_split=first.tau_split, energy_norm=first.energy_norm)


def _moved(res: SampleResult, device: torch.device) -> SampleResult:
    for name in (*_ROW_FIELDS, *_COLUMN_FIELDS):
        value = getattr(res, name)
        if value is not None:
            setattr(res, name, value.to(device))
    return res


def _sliced(res: SampleResult, n: int) -> SampleResult:
    for name in _ROW_FIELDS:
        if getattr(res, name) is not None:
            setattr(res, name, getattr(res, name)[:n])
    for name in _COLUMN_FIELDS:
        if getattr(res, name) is not None:
            setattr(res, name, getattr(res, name)[:, :n])
    return res
