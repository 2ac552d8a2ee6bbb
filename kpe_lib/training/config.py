"""Configuration and result records of flow-matching training (Mathematics §1)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Settings of ``train_flow_matching``.

    ``steps`` and ``checkpoint_every`` only say how long to run and how often to save: they are not part
    of a run's identity, so a checkpoint written by a 900-step run can be continued to 1,500 steps (the
    learning rate has no schedule that depends on the total, so the first 900 steps of both runs agree).

    Attributes:
        steps: total optimiser steps to reach (>= 0).
        batch_size: samples per step; batches walk through seeded random permutations of the data.
        lr: Adam learning rate.
        ema_decay: decay of the exponential moving average of the weights, or None for no EMA.
        grad_clip: max global gradient norm, or None for no clipping.
        seed: seeds the batch/time/noise generator, the per-step dropout seeds, and (in ``cached_model``)
            the initial weights.
        p_uncond: probability that a label is replaced by the null class (classifier-free guidance
            training); used only when labels are given.
        warmup_steps: linear learning-rate warm-up from lr / warmup_steps to lr (0: none).
        checkpoint_every: save a checkpoint every this many steps (None: only at the end).
    """

    steps: int = 1000
    batch_size: int = 128
    lr: float = 1e-4
    ema_decay: float | None = 0.999
    grad_clip: float | None = 1.0
    seed: int = 0
    p_uncond: float = 0.1
    warmup_steps: int = 0
    checkpoint_every: int | None = None

    RUN_LENGTH_FIELDS: ClassVar[tuple[str, ...]] = ("steps", "checkpoint_every")

    def __post_init__(self) -> None:
        checks = [
            ("steps", isinstance(self.steps, int) and self.steps >= 0, "an integer >= 0"),
            ("batch_size", isinstance(self.batch_size, int) and self.batch_size >= 1, "an integer >= 1"),
            ("lr", isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "a finite number > 0"),
            ("ema_decay", self.ema_decay is None or 0.0 <= self.ema_decay < 1.0, "None or in [0, 1)"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "None or > 0"),
            ("seed", isinstance(self.seed, int) and self.seed >= 0, "an integer >= 0"),
            ("p_uncond", 0.0 <= self.p_uncond <= 1.0, "in [0, 1]"),
            ("warmup_steps", isinstance(self.warmup_steps, int) and self.warmup_steps >= 0, "an integer >= 0"),
            ("checkpoint_every", self.checkpoint_every is None
             or (isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1), "None or an integer >= 1"),
        ]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"TrainConfig.{name} must be {allowed}; got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict."""
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """The fields that define the training run (everything but ``RUN_LENGTH_FIELDS``)."""
        return {k: v for k, v in self.to_dict().items() if k not in self.RUN_LENGTH_FIELDS}

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        return self.lr * min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else self.lr


@dataclass
class TrainResult:
    """Outcome of ``train_flow_matching`` / ``cached_model``.

    Attributes:
        model: the trained network (in eval mode).
        ema: its EMA copy (eval mode), or None when ``ema_decay`` is None.
        losses: the CFM loss of every step from step 1 to ``steps_done`` (earlier sessions included).
        steps_done: optimiser steps the weights have seen.
        seconds: training wall time over all sessions.
        new_steps: steps taken by this call (0 for a cache hit).
        config: the full configuration ``{"model": ..., "train": ..., "data": fingerprint}``.
        checkpoint: the checkpoint file holding this state, if any.
    """

    model: nn.Module
    ema: nn.Module | None
    losses: list[float]
    steps_done: int
    seconds: float
    new_steps: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def sampling_model(self) -> nn.Module:
        """The weights to sample with: the EMA when there is one, else the trained model."""
        return self.ema if self.ema is not None else self.model
