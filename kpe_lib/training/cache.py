"""A disk cache of trained flow models keyed by their full configuration.

Layout: ``<cache_dir>/<name>-<key>/step<S>.pt`` where ``key`` hashes the model config, the train config
without its run-length fields, and the data fingerprint. Every requested step count S leaves a finished
snapshot, so asking for 900, then 1,200, then 1,500 steps trains 1,500 steps in all (each run continues
from the largest earlier snapshot, which gives the same weights as training from scratch). A run in
progress lives in ``partial-step<S>.pt`` and is resumed if interrupted. A damaged snapshot or partial file is
named in a ``CheckpointError``; deleting it as told makes the next run resume from the previous snapshot (or
start over).
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from kpe_lib._files import atomic_path
from kpe_lib.distributed import barrier, dist_info
from kpe_lib.models import build_model
from kpe_lib.training._util import private_global_rng, seed_global_rng
from kpe_lib.training.checkpoint import FLOW_FORMAT, config_hash, data_fingerprint, load_checkpoint
from kpe_lib.training.config import TrainConfig, TrainResult
from kpe_lib.training.loop import model_config_of, train_flow_matching

_SNAPSHOT = re.compile(r"^step(\d{9})\.pt$")


def default_cache_dir() -> Path:
    """``$KPE_CACHE/models`` when the env var is set, else ``~/.cache/kpe_lib/models``."""
    root = os.environ.get("KPE_CACHE")
    return Path(root) / "models" if root else Path.home() / ".cache" / "kpe_lib" / "models"


def cache_key(model_config: dict[str, Any], train_config: TrainConfig, data: torch.Tensor,
              labels: torch.Tensor | None = None) -> str:
    """The 16-hex-digit key of a (model config, train config, data) triple; ``model_config`` as built."""
    return config_hash({"model": model_config, "train": train_config.identity(),
                        "data": data_fingerprint(data, labels)})


def cached_model(model_config: dict[str, Any], train_config: TrainConfig, data: torch.Tensor,
                 labels: torch.Tensor | None = None, cache_dir: str | Path | None = None, name: str = "model",
                 progress: bool = True, device: str | torch.device | None = None) -> TrainResult:
    """Return the model ``train_flow_matching`` would produce, training only what is not on disk yet.

    The initial weights are drawn with the global RNG seeded by ``train_config.seed`` (the caller's RNG
    state is left untouched), so the result is a function of the configuration and the data alone.

    Args:
        model_config: ``{"kind": ..., ...}`` for ``kpe_lib.models.build_model``; missing arguments take
            the constructor defaults (and hash as such).
        train_config: training settings; ``train_config.steps`` is the step count wanted.
        data: (N, ...) training set; labels: (N,) or None (see ``train_flow_matching``).
        cache_dir: folder of the cache (default ``default_cache_dir()``).
        name: a readable prefix of the entry's folder name (letters, digits, ``-_.``).
        progress: progress bar while training.
        device: where to train / put the model (default CPU).

    Returns:
        TrainResult; ``new_steps`` is 0 when the cache already held ``steps`` steps, ``checkpoint`` the
        snapshot file.

    Example::

        res = cached_model({"kind": "mlp"}, TrainConfig(steps=2000, lr=1e-3), points, name="moons")
        sample(res.sampling_model, torch.randn(1000, 2), n_steps=100).kpe   # second call: no training
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must be letters, digits, '-', '_' or '.'; got {name!r}")
    device = torch.device(device) if device is not None else torch.device("cpu")
    with private_global_rng(torch.device("cpu")):
        seed_global_rng(train_config.seed, torch.device("cpu"))  # weights are drawn on the CPU
        model = build_model(model_config)
    key = cache_key(model_config_of(model), train_config, data, labels)
    run_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    run_dir = run_dir / f"{name}-{key}"
    run_dir.mkdir(parents=True, exist_ok=True)
    steps = train_config.steps
    final = run_dir / f"step{steps:09d}.pt"
    main = dist_info().is_main  # under torchrun rank 0 alone touches the files; the others wait for it
    hit = final.exists()
    barrier()  # every rank has decided before rank 0 may create the final file
    if hit:  # a cache hit: loads and verifies, trains nothing
        return train_flow_matching(model, data, labels, train_config, checkpoint=final, progress=False,
                                   device=device)

    partial = run_dir / f"partial-step{steps:09d}.pt"
    earlier = sorted(int(m.group(1)) for f in run_dir.iterdir() if (m := _SNAPSHOT.match(f.name)))
    earlier = [s for s in earlier if s < steps]
    partial_step = int(load_checkpoint(partial, FLOW_FORMAT)["step"]) if partial.exists() else -1
    if earlier and earlier[-1] > partial_step:
        snapshot = run_dir / f"step{earlier[-1]:09d}.pt"
        load_checkpoint(snapshot, FLOW_FORMAT)  # a damaged snapshot is named here, not as the partial copy of it
        if main:
            with atomic_path(partial) as tmp:  # a name unique to this process: two runs never share a half copy
                shutil.copyfile(snapshot, tmp)
    barrier()
    result = train_flow_matching(model, data, labels, train_config, checkpoint=partial, progress=progress,
                                 device=device)
    if main:
        os.replace(partial, final)
    barrier()
    result.checkpoint = final
    return result
