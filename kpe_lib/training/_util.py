"""Small training utilities: progress bars, epoch-wise batch indices, per-step seeds."""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets


def progress_bar(progress: bool, **kwargs) -> tqdm:
    """A tqdm bar, off when ``progress`` is False, when env ``CI`` is set, or when stderr is not a terminal."""
    disable = (not progress) or bool(os.environ.get("CI")) or None
    return tqdm(disable=disable, dynamic_ncols=True, **kwargs)


class EpochSampler:
    """Batch indices that walk through successive seeded random permutations of ``range(n)``.

    Every sample is seen once per epoch; a batch larger than n, or crossing an epoch boundary, continues
    into the next permutation. ``state()`` / ``load()`` make a resumed run draw the same batches.
    """

    def __init__(self, n: int) -> None:
        self.n, self.perm, self.pos = n, torch.empty(0, dtype=torch.long), n

    def next(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """The next ``batch`` indices, (batch,) long, drawn with ``generator``."""
        parts, need = [], batch
        while need > 0:
            if self.pos >= self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=generator), 0
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos, need = self.pos + take, need - take
        return torch.cat(parts)

    def state(self) -> dict:
        return {"perm": self.perm.clone(), "pos": self.pos}

    def load(self, state: dict) -> None:
        self.perm, self.pos = state["perm"].long(), int(state["pos"])


def step_seed(seed: int, step: int) -> int:
    """Seed of the global RNG (dropout) at optimiser step ``step``: a function of (seed, step) alone."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


def seed_global_rng(seed: int, device: torch.device) -> None:
    """Seed the global RNG of the CPU (and of ``device`` when it is a GPU).

    Cheaper than ``torch.manual_seed``, which also queues a lazy seeding of every CUDA device with a
    stack trace (milliseconds per call, a noticeable share of a small model's training step).
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


@contextmanager
def private_global_rng(device: torch.device) -> Iterator[None]:
    """Run a block whose global-RNG draws (e.g. dropout) are reseeded inside, restoring the caller's RNG after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield
