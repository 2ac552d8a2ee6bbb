"""Configuration and result records of flow-matching training (Mathematics §1)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from kpe_lib._numbers import as_bool, as_float, as_int


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
        bf16: run the network's forward (and so its backward) under bfloat16 autocast on the training
            device; parameters, optimiser state and the loss stay float32. Part of the run's identity.
        compile: train through ``torch.compile`` of the network (the weights are the same module's).
            Part of the run's identity (compiled kernels round differently).
        device_noise: draw the noise x0 and the times t with a generator on the training device (no
            host-to-device copy per step; another random stream than the default, so part of the identity).
            Batch indices and label dropout stay on the CPU generator.
        sync_every: read the loss back to the host every this many steps (1: every step, the loss checked
            before each update). Larger values remove the per-step host sync; a non-finite loss is then
            reported at the next read-back, naming its step, and checkpoints are written after a read-back.
            Does not change the weights, so it is not part of the run's identity.

    The four options above are left out of :meth:`to_dict` (and so of cache keys, checkpoints and protocol
    records) while they hold their defaults, so runs without them keep the keys they always had.
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
    bf16: bool = False
    compile: bool = False
    device_noise: bool = False
    sync_every: int = 1

    RUN_LENGTH_FIELDS: ClassVar[tuple[str, ...]] = ("steps", "checkpoint_every", "sync_every")
    #: execution options added after the first cache keys: recorded only when they differ from these
    OPTION_DEFAULTS: ClassVar[dict[str, Any]] = {"bf16": False, "compile": False, "device_noise": False,
                                                 "sync_every": 1}

    def __post_init__(self) -> None:
        # Any integer / real type is accepted; numpy and tensor scalars are stored as Python numbers (so the
        # cache key and the checkpoint's configuration are the same for 10 and np.int64(10)); booleans refused.
        ints = {"steps": 0, "batch_size": 1, "seed": 0, "warmup_steps": 0, "sync_every": 1}
        for name, minimum in ints.items():
            self._set(name, as_int(getattr(self, name), f"TrainConfig.{name}", minimum=minimum))
        self._set("checkpoint_every", as_int(self.checkpoint_every, "TrainConfig.checkpoint_every", minimum=1,
                                             or_none=True))
        self._set("lr", as_float(self.lr, "TrainConfig.lr", minimum=0.0, open_min=True))
        self._set("p_uncond", as_float(self.p_uncond, "TrainConfig.p_uncond", minimum=0.0, maximum=1.0))
        self._set("ema_decay", as_float(self.ema_decay, "TrainConfig.ema_decay", minimum=0.0, maximum=1.0,
                                        open_max=True, or_none=True))
        self._set("grad_clip", as_float(self.grad_clip, "TrainConfig.grad_clip", minimum=0.0, open_min=True,
                                        or_none=True))
        for name in ("bf16", "compile", "device_noise"):
            self._set(name, as_bool(getattr(self, name), f"TrainConfig.{name}"))

    def _set(self, name: str, value: Any) -> None:
        # a Python int given for a float field is kept as given (an lr of 1 keeps the cache key it always had)
        if not (isinstance(value, float) and type(getattr(self, name)) is int):
            object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a plain dict, less the ``OPTION_DEFAULTS`` options that hold their default."""
        return {k: v for k, v in dataclasses.asdict(self).items()
                if not (k in self.OPTION_DEFAULTS and v == self.OPTION_DEFAULTS[k])}

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
