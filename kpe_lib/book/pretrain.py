"""Pre-train the flow models of chapters at a scale, on one GPU or on several with ``torchrun``, into the cache
the chapters read (``scripts/pretrain.py`` is the command line).

A chapter runs in one papermill kernel, so it trains on one device. Its flow models are cached by their full
configuration (``kpe_lib.training.cached_model``), so a run of this module with the chapter's parameters, under
``torchrun --nproc_per_node=K`` (every rank trains its slice of the global batch with DistributedDataParallel,
rank 0 writes the snapshots), leaves exactly the entries the chapter then finds::

    torchrun --nproc_per_node=8 scripts/pretrain.py --scale paper --chapters 03 04 --device cuda
    python -m kpe_lib run 04 --scale paper --device cuda          # reads the snapshots, trains nothing

The values are the chapter's own (:func:`chapter_values`: its parameters cell, the scale's file for the names it
declares, then the overrides, checked like the chapter checks them), and every model is trained by the study
function the chapter calls. Chapters 3, 4 and 5 (``sem_backend = "cifar"``) train flow models long enough to
matter; their small feature networks (autoencoders, classifiers) train in the chapter itself.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from kpe_lib.book.parameters import chapter_defaults, check_parameters
from kpe_lib.book.scales import as_root, discover_chapters, load_params, resolve_path, select_chapters
from kpe_lib.distributed import init_distributed
from kpe_lib.training import TrainConfig, TrainResult

__all__ = ["PRETRAINED_CHAPTERS", "PretrainedModel", "PretrainReport", "chapter_values", "pretrain"]

#: the chapters whose flow models this module trains, in book order
PRETRAINED_CHAPTERS = ("03_cifar_support", "04_celeba_kts", "05_semantics_guidance")


@dataclass(frozen=True)
class PretrainedModel:
    """One cache entry made (or found) for a chapter.

    Attributes:
        chapter: the chapter's file stem; name: the cache entry's readable prefix (``celeba-n1024``).
        steps: the snapshot's step count; new_steps: steps trained by this call (0: it was cached already).
        train_seconds: training wall time of the snapshot over all sessions (``TrainResult.seconds``).
        checkpoint: the snapshot file.
    """

    chapter: str
    name: str
    steps: int
    new_steps: int
    train_seconds: float
    checkpoint: Path | None


@dataclass
class PretrainReport:
    """What :func:`pretrain` did: the models, the chapters it had nothing to train for (and why), and the
    wall time of each chapter (data loading and training, this call)."""

    scale: str
    device: str
    world_size: int
    cache: Path
    models: list[PretrainedModel] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        """A fixed-width table, one row per snapshot, then each chapter's wall time and the skipped chapters."""
        lines = [f"pretrain at scale {self.scale} on {self.world_size} x {self.device} into {self.cache}",
                 f"{'chapter':<24} {'cache entry':<20} {'steps':>8} {'trained':>8} {'train s':>9}", "-" * 73]
        lines += [f"{m.chapter:<24} {m.name:<20} {m.steps:>8} {m.new_steps:>8} {m.train_seconds:>9.1f}"
                  for m in self.models]
        lines += [f"{chapter:<24} this call: {s:.1f} s" for chapter, s in self.seconds.items()]
        lines += [f"{chapter:<24} nothing to train: {why}" for chapter, why in self.skipped.items()]
        return "\n".join(lines)


def chapter_values(chapter: str, scale: str, *, root: str | Path | None = None, device: str = "cpu",
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The parameters ``chapter`` runs with at ``scale``: its parameters cell, updated with the scale's file
    for the names it declares (what the runner injects) and with the ``overrides`` it declares.

    Raises:
        ParameterError: a value of a type the chapter does not take (``check_parameters``).
    """
    defaults, _ = chapter_defaults(chapter, root)
    given = load_params(root, scale, device, overrides)
    values = {**defaults, **{k: v for k, v in given.items() if k in defaults}}
    check_parameters(values, chapter, root)
    return values


def _cifar(p: Mapping[str, Any], cache: Path, device: str, progress: bool) -> list[tuple[str, TrainResult]]:
    """Chapter 3's class-conditional UNet (chapter 5's too where their settings agree), as its model cell
    trains it."""
    from kpe_lib.accelerate import resolve_bf16
    from kpe_lib.experiments import cifar_support as cs

    p = {**p, "cifar_bf16": resolve_bf16(p["cifar_bf16"], device)}  # as the chapter resolves "auto"
    data = cs.load_cifar_splits(p["data_root"], size=p["cifar_resolution"], n_train=p["cifar_n_train"], n_test=1,
                                grayscale=p["cifar_grayscale"])  # the test images do not enter the model
    model_config = cs.unet_config(data.shape[0], p["cifar_unet_width"], p["cifar_channel_mult"],
                                  p["cifar_attn_levels"], p["cifar_num_res_blocks"], p["cifar_dropout"],
                                  num_classes=len(data.train.class_names))
    train_config = TrainConfig(steps=p["cifar_train_steps"], batch_size=p["cifar_batch_size"], lr=p["cifar_lr"],
                               ema_decay=p["cifar_ema_decay"], warmup_steps=p["cifar_warmup_steps"],
                               p_uncond=p["cifar_p_uncond"], seed=p["seed"],
                               checkpoint_every=p["cifar_checkpoint_every"],
                               bf16=p["cifar_bf16"], compile=p["cifar_compile"])
    name = cs.shared_model_name(p["cifar_resolution"])
    flow = cs.train_flow_model(model_config, train_config, data.x_train, data.train.labels, cache=cache, name=name,
                               device=device, progress=progress)
    return [(name, flow.fm)]


def _celeba(p: Mapping[str, Any], cache: Path, device: str, progress: bool) -> list[tuple[str, TrainResult]]:
    """Chapter 4's memorising UNet at every snapshot of ``celeba_checkpoints``, as its training cell makes them."""
    from kpe_lib.accelerate import resolve_bf16
    from kpe_lib.data import load_celeba
    from kpe_lib.experiments import celeba_kts as study

    p = {**p, "celeba_bf16": resolve_bf16(p["celeba_bf16"], device)}  # as the chapter resolves "auto"
    train = load_celeba(p["data_root"], split="train", n=p["celeba_n_train"], index=p["celeba_index"])
    model_config = study.unet_config(p["celeba_unet_width"], p["celeba_channel_mult"], p["celeba_attn_levels"],
                                     p["celeba_num_res_blocks"], p["celeba_dropout"])
    name = f"celeba-n{train.images.shape[0]}"
    runs = study.train_checkpoints(model_config, train.images, sorted(int(s) for s in p["celeba_checkpoints"]),
                                   batch_size=p["celeba_batch_size"], lr=p["celeba_lr"],
                                   ema_decay=p["celeba_ema_decay"], seed=p["seed"], device=device,
                                   cache_dir=cache / "models", name=name, progress=progress,
                                   checkpoint_every=p["celeba_checkpoint_every"], bf16=p["celeba_bf16"],
                                   compile=p["celeba_compile"])
    return [(name, run) for run in runs.values()]


def _semantics(p: Mapping[str, Any], cache: Path, device: str, progress: bool) -> list[tuple[str, TrainResult]]:
    """Chapter 5's class-conditional UNet (the ``cifar`` backend), as its model cell trains it: chapter 3's
    entry where their settings agree (then this finds it cached)."""
    from kpe_lib.accelerate import resolve_bf16
    from kpe_lib.training.shared import shared_model_name
    from kpe_lib.experiments.semantics_guidance import prepare

    p = {**p, "sem_bf16": resolve_bf16(p["sem_bf16"], device)}  # as the chapter resolves "auto"
    data = prepare.load_semantics_data(p["data_root"], p["sem_resolution"], n_train=p["sem_n_train"], n_test=1)
    model_config = prepare.unet_config(p["sem_unet_width"], p["sem_channel_mult"], p["sem_num_res_blocks"],
                                       p["sem_attn_levels"], p["sem_dropout"])
    train_config = TrainConfig(steps=p["sem_train_steps"], batch_size=p["sem_batch_size"], lr=p["sem_lr"],
                               ema_decay=p["sem_ema_decay"], warmup_steps=p["sem_warmup_steps"],
                               p_uncond=p["sem_p_uncond"], seed=p["seed"], checkpoint_every=p["sem_checkpoint_every"],
                               bf16=p["sem_bf16"])
    fm = prepare.train_flow_model(data, model_config, train_config, cache=cache, device=device, progress=progress)
    return [(shared_model_name(p["sem_resolution"]), fm)]


_TRAINERS: dict[str, Callable[[Mapping[str, Any], Path, str, bool], list[tuple[str, TrainResult]]]] = {
    "03_cifar_support": _cifar, "04_celeba_kts": _celeba, "05_semantics_guidance": _semantics}


def _nothing_to_train(chapter: str, p: Mapping[str, Any]) -> str | None:
    if chapter == "05_semantics_guidance" and p.get("sem_backend") != "cifar":
        return f"sem_backend = {p.get('sem_backend')!r} samples released weights"
    return None


def pretrain(chapters: Sequence[str] | None = None, scale: str = "cpu", *, device: str | None = None,
             overrides: Mapping[str, Any] | None = None, root: str | Path | None = None, progress: bool = False,
             log: Callable[[str], None] | None = print) -> PretrainReport:
    """Train (or find cached) the flow models of ``chapters`` at ``scale``; under ``torchrun``, on every rank.

    Args:
        chapters: names, numbers or slugs among :data:`PRETRAINED_CHAPTERS` (None: all three).
        scale: the parameter file ``notebooks/params/<scale>.yml``.
        device: ``"cuda"`` (each rank its ``LOCAL_RANK`` GPU), ``"cpu"``, or None (CUDA when available); as
            :func:`kpe_lib.distributed.init_distributed`. It does not enter the cache keys.
        overrides: parameter values replacing the scale's (``--set``), e.g. ``{"cache_dir": "/scratch/kpe"}``;
            each must be declared by a selected chapter.
        root: the project root the chapters' relative ``cache_dir`` and ``data_root`` are read against.
        progress: tqdm bars while training (rank 0 only).
        log: where rank 0 reports each chapter (None: silent).

    Returns:
        PretrainReport (the same on every rank).

    Raises:
        ValueError: a chapter that trains no flow model, an override no selected chapter declares, or
            chapters whose ``cache_dir`` differ.
    """
    root = as_root(root)
    selected = [c.name for c in select_chapters(discover_chapters(root), list(chapters or PRETRAINED_CHAPTERS))]
    other = [c for c in selected if c not in _TRAINERS]
    if other:
        raise ValueError(f"chapters {other} train no flow model to pre-train; choose among {list(PRETRAINED_CHAPTERS)}")
    info = init_distributed(device)
    values = {c: chapter_values(c, scale, root=root, device=info.device.type, overrides=overrides) for c in selected}
    unread = sorted(set(overrides or {}) - set().union(*(set(v) for v in values.values())))
    if unread:
        raise ValueError(f"--set {unread}: no selected chapter ({', '.join(selected)}) declares "
                         f"{'it' if len(unread) == 1 else 'them'}")
    caches = {c: resolve_path(v["cache_dir"], root) for c, v in values.items()}
    if len(set(caches.values())) > 1:
        raise ValueError(f"the chapters' cache_dir differ ({ {c: str(p) for c, p in caches.items()} }); "
                         "pre-train them one at a time")
    cache = next(iter(caches.values()))
    say = log if (log is not None and info.is_main) else (lambda _: None)
    report = PretrainReport(scale=scale, device=str(info.device), world_size=info.world_size, cache=cache)
    for chapter in selected:
        p = values[chapter]
        why = _nothing_to_train(chapter, p)
        if why is not None:
            report.skipped[chapter] = why
            say(f"{chapter}: nothing to train ({why})")
            continue
        say(f"{chapter}: training on {info.world_size} process(es) into {cache / 'models'}")
        start = time.perf_counter()
        for name, run in _TRAINERS[chapter](p, cache, str(info.device), progress and info.is_main):
            report.models.append(PretrainedModel(chapter=chapter, name=name, steps=run.steps_done,
                                                 new_steps=run.new_steps, train_seconds=round(run.seconds, 1),
                                                 checkpoint=run.checkpoint))
        report.seconds[chapter] = round(time.perf_counter() - start, 1)
    return report
