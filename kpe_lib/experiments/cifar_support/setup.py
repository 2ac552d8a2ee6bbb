"""Set-up of the CIFAR-10 support chapter: the images, the flow model, the samples with their KPE and the
feature spaces (Mathematics §2, §6).

Each function does what one set-up cell of ``notebooks/03_cifar_support.md`` used to spell out, in the same
order and with the same random draws, so the chapter's numbers do not change:

* :func:`load_cifar_splits`: CIFAR-10 train and test images at the chapter's resolution, in [0, 1];
* :func:`train_flow_model`: the UNet trained (or read from the cache) on the images scaled to [-1, 1]; with
  labels it is the class-conditional model chapter 5 guides (:func:`shared_model_name`: one cache entry);
* :func:`sample_main`: Euler samples from seeded noise (class-balanced labels at guidance 1 for a
  class-conditional model), with per-sample KPE and the straight-line bound
  ``KPE >= 1/2 ||x_N - x_0||^2`` (Mathematics §2).

The feature spaces local support is measured in: :mod:`kpe_lib.experiments.cifar_support.spaces`.

Example:
    >>> data = load_cifar_splits(None, size=16, n_train=2000, n_test=1000)                 # doctest: +SKIP
    >>> flow = train_flow_model(model_config, TrainConfig(steps=1500, p_uncond=0.1), data.x_train,
    ...                         data.train.labels, cache=cache, name=shared_model_name(16))  # doctest: +SKIP
    >>> main = sample_main(flow.velocity, 512, data.shape, nfe=50, seed=0, num_classes=10)  # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from kpe_lib.accelerate import accelerate
from kpe_lib.data import PartialDataWarning, load_cifar10
from kpe_lib.data.images import ImageData
from kpe_lib.distributed import sample_sharded
from kpe_lib.sampling import SampleResult
from kpe_lib.training import TrainConfig, cached_model
from kpe_lib.training.config import TrainResult
from kpe_lib.training.shared import cifar_unet_config, shared_model_name

__all__ = ["CifarData", "FlowModel", "MainSamples", "load_cifar_splits", "loss_window", "unet_config",
           "shared_model_name", "train_flow_model", "sample_main", "to_unit", "Stage"]

Stage = Callable[[str], ContextManager[Any]]


def _no_stage(name: str) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass
class CifarData:
    """CIFAR-10 as the chapter uses it.

    Attributes:
        train: the training images (n, C, H, W) in [0, 1] and their labels.
        test: the first test images, same layout (classifier validation, the held-out FID floor).
        x_train: (n, C, H, W) the training images scaled to [-1, 1], the flow model's space.
        resolution: image side H = W.
        grayscale: whether the images are BT.601 luma (C = 1).
    """

    train: ImageData
    test: ImageData
    x_train: torch.Tensor
    resolution: int
    grayscale: bool

    @property
    def train_unit(self) -> torch.Tensor:
        """(n, C, H, W) training images in [0, 1], what every feature space sees."""
        return self.train.images

    @property
    def n_train(self) -> int:
        return int(self.train_unit.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train_unit.shape[1:])

    def summary(self) -> str:
        """One line: image counts and shape."""
        c, h, w = self.shape
        return f"{self.n_train} training images, {c} x {h} x {w}; {len(self.test)} test images"


def load_cifar_splits(data_root: str | os.PathLike | None, *, size: int, n_train: int | None, n_test: int,
                      grayscale: bool = False) -> CifarData:
    """Load CIFAR-10 train and test images at side ``size`` (antialiased bilinear resize), in [0, 1].

    A partial training split (only ``data_batch_1`` present) is expected and its warning silenced; the
    chapter says so in its text.

    Args:
        data_root: data folder (None: ``KPE_DATA``, else the user cache).
        size: image side.
        n_train: training images to keep (None: all present).
        n_test: test images to keep (the first ones of the split).
        grayscale: BT.601 luma, 1 channel.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDataWarning)
        train = load_cifar10(data_root, split="train", n=n_train, size=size, grayscale=grayscale)
        test = load_cifar10(data_root, split="test", n=n_test, size=size, grayscale=grayscale)
    # clamped: the resize can overshoot [0, 1] by 1e-7; chapter 5 trains the shared model on the same tensor
    return CifarData(train=train, test=test, x_train=2.0 * train.images.clamp(0.0, 1.0) - 1.0, resolution=size,
                     grayscale=grayscale)


def loss_window(losses: np.ndarray) -> tuple[int, float, float]:
    """``(window, first, last)`` of a loss curve (n,): the window ``max(1, min(50, n // 5))`` and the mean
    loss over the first and over the last ``window`` steps."""
    window = max(1, min(50, len(losses) // 5))
    return window, losses[:window].mean(), losses[-window:].mean()


@dataclass
class FlowModel:
    """The trained flow model and what the chapter reports about its training.

    Attributes:
        fm: the training result (losses, EMA, steps done, cache state).
        velocity: the sampling module (EMA weights when kept), on the device, eval mode, accelerated.
        model_config: the UNet configuration; train_config: its training settings.
        n_params: parameter count of the sampling module.
        losses: (steps,) CFM loss per step.
        window, loss_first, loss_last: see :func:`loss_window`.
    """

    fm: TrainResult
    velocity: torch.nn.Module
    model_config: dict[str, Any]
    train_config: TrainConfig
    n_params: int
    losses: np.ndarray
    window: int
    loss_first: float
    loss_last: float

    def summary(self) -> str:
        """One line: size, steps, loss drop, sampling weights."""
        w = self.window
        return (f"UNet: {self.n_params / 1e6:.2f} M parameters; {self.fm.steps_done} steps of batch "
                f"{self.train_config.batch_size}; CFM loss {self.loss_first:.3f} (first {w} steps) -> "
                f"{self.loss_last:.3f} (last {w}); sampling with "
                f"{'the EMA' if self.fm.ema is not None else 'the raw'} weights")


unet_config = cifar_unet_config  # the chapter's name for it


def train_flow_model(model_config: dict[str, Any], train_config: TrainConfig, x_train: torch.Tensor,
                     labels: torch.Tensor | None = None, *, cache: Path, name: str, device: str = "cpu",
                     progress: bool | None = None, bf16: bool = False, compile: bool = False,
                     stage: Stage = _no_stage) -> FlowModel:
    """Train (or read from the cache) the flow model on ``x_train`` and prepare it for sampling.

    Args:
        model_config: the UNet configuration for ``cached_model``.
        train_config: its training settings (``seed`` seeds the weights and the batches).
        x_train: (n, C, H, W) training images in [-1, 1].
        labels: (n,) their classes for a class-conditional model (``model_config["num_classes"]``; label dropout
            to the null class with probability ``train_config.p_uncond``), None for an unconditional one.
        cache: the chapter's cache folder (models under ``models/``).
        name: the cache entry's name.
        device: torch device of training and sampling (under ``torchrun``: DDP, ``scripts/pretrain.py``).
        progress: tqdm bars during training.
        bf16, compile: :func:`kpe_lib.accelerate.accelerate` options for sampling (both off: the module itself).
        stage: ``stage(name)`` context manager timing the training (e.g. ``ctx.stage``).
    """
    with stage("train flow model"):
        fm = cached_model(model_config, train_config, x_train, labels, cache_dir=cache / "models", name=name,
                          progress=progress, device=device)
    velocity = fm.sampling_model.to(device).eval()
    n_params = sum(p.numel() for p in velocity.parameters())
    velocity = accelerate(velocity, bf16=bf16, compile=compile)
    losses = np.asarray(fm.losses)
    window, first, last = loss_window(losses)
    return FlowModel(fm=fm, velocity=velocity, model_config=model_config, train_config=train_config,
                     n_params=n_params, losses=losses, window=window, loss_first=first, loss_last=last)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) samples in the flow model's [-1, 1] space -> images in [0, 1] (clamped)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


@dataclass
class MainSamples:
    """The main analysis' samples: Euler from seeded noise, with their energies.

    Attributes:
        x0: (M, C, H, W) the starting noise (CPU, float32).
        labels: (M,) the class each sample was asked to be (class-conditional model), or None.
        res: the sampler's full result (grid, per-step energy, early / late split).
        x1: (M, C, H, W) the final samples x_N on the CPU, float32, in [-1, 1] up to overshoot.
        kpe: (M,) per-sample KPE (Euler left sum, Mathematics §2), on the CPU.
        samples_unit: (M, C, H, W) the samples as images in [0, 1], what every feature space sees.
        straight: (M,) float64 straight-line bound ``1/2 ||x_N - x_0||^2``.
        excess: (M,) ``kpe / straight``, >= 1 (Cauchy-Schwarz), 1 only for a straight constant-speed path.
        nfe: the Euler steps asked for.
    """

    x0: torch.Tensor
    labels: torch.Tensor | None
    res: SampleResult
    x1: torch.Tensor
    kpe: torch.Tensor
    samples_unit: torch.Tensor
    straight: torch.Tensor
    excess: torch.Tensor
    nfe: int

    @property
    def sample_norm(self) -> torch.Tensor:
        """(M,) ``||x_N||``, each sample's distance from mid-grey in the flow model's space."""
        return self.x1.flatten(1).norm(dim=1)

    def summary(self) -> str:
        """One line: KPE median and spread, early share, ratio to the straight-line bound."""
        kpe, res = self.kpe, self.res
        return (f"{kpe.shape[0]} samples, NFE {res.nfe}: KPE median {kpe.median():.0f} "
                f"(5-95%: {kpe.quantile(0.05):.0f} - {kpe.quantile(0.95):.0f}); "
                f"early share {float((res.kpe_early / kpe).mean()):.2f}; "
                f"KPE / straight-line bound: median {self.excess.median():.3f}, max {self.excess.max():.3f}")


def sample_main(velocity: torch.nn.Module, n: int, shape: Sequence[int], *, nfe: int, seed: int,
                device: str = "cpu", batch_size: int | None = None, num_classes: int | None = None,
                stage: Stage = _no_stage) -> MainSamples:
    """Euler-sample ``n`` images from noise drawn with generator seed ``seed + 1``, uniform grid, no shaping.

    A class-conditional model (``num_classes`` K) is sampled at guidance 1 with class-balanced labels ``i mod K``
    (the conditional velocity ``v(x, t, y)``, one network call per step): every class in equal shares, the
    marginal the training set approximates; the KPE is that of the conditional path.

    Args:
        velocity: the flow model's sampling module.
        n: number of samples M.
        shape: (C, H, W) of one image.
        nfe: Euler steps.
        seed: the chapter seed (the noise generator is seeded ``seed + 1``).
        device: torch device of sampling (the noise is drawn on the CPU).
        batch_size: samples per forward pass (``cifar_sample_batch``; None: all M at once). Each path depends
            on its own noise only, so the samples and KPE do not depend on it beyond float rounding.
        num_classes: K of a class-conditional model, None for an unconditional one.
        stage: ``stage(name)`` context manager timing the sampling.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(n, *shape, generator=gen)
    labels = None if num_classes is None else torch.arange(n) % num_classes
    extras = {} if labels is None else {"y": labels}
    with stage("sample NFE main"):
        res = sample_sharded(velocity, x0, batch_size=batch_size, device=device, n_steps=nfe, solver="euler",
                             **extras)
    x1 = res.x.detach().cpu().float()
    kpe = res.kpe.detach().cpu()
    straight = 0.5 * (x1 - x0).flatten(1).pow(2).sum(1).double()
    return MainSamples(x0=x0, labels=labels, res=res, x1=x1, kpe=kpe, samples_unit=to_unit(x1), straight=straight,
                       excess=kpe / straight, nfe=nfe)
