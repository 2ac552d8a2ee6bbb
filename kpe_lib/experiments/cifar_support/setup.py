"""Set-up of the CIFAR-10 support chapter: the images, the flow model, the NFE-150 samples with their KPE and
the seven feature spaces (Mathematics §2, §6).

Each function does what one set-up cell of ``notebooks/03_cifar_support.md`` used to spell out, in the same
order and with the same random draws, so the chapter's numbers do not change:

* :func:`load_cifar_splits`: CIFAR-10 train and test images at the chapter's resolution, in [0, 1];
* :func:`train_flow_model`: the UNet trained (or read from the cache) on the images scaled to [-1, 1];
* :func:`sample_main`: Euler samples from seeded noise, with per-sample KPE and the straight-line bound
  ``KPE >= 1/2 ||x_N - x_0||^2`` (Mathematics §2);
* :func:`build_space` and :func:`encode_spaces`: the feature spaces local support is measured in, and the
  features of the samples and of the training images in each.

Example:
    >>> data = load_cifar_splits(None, size=16, n_train=2000, n_test=1000)                 # doctest: +SKIP
    >>> flow = train_flow_model(model_config, TrainConfig(steps=600), data.x_train, cache=cache,
    ...                         name="cifar16")                                             # doctest: +SKIP
    >>> main = sample_main(flow.velocity, 192, data.shape, nfe=150, seed=0)                 # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import pandas as pd
import torch

from kpe_lib.accelerate import accelerate
from kpe_lib.data import PartialDataWarning, load_cifar10
from kpe_lib.data.images import ImageData
from kpe_lib.distributed import sample_sharded
from kpe_lib.experiments.cifar_support.correlations import SpaceFeatures
from kpe_lib.metrics import (AutoencoderFeatures, ClassifierFeatures, FeatureSpace, HOGFeatures, InceptionFeatures,
                             PCAFeatures, PixelFeatures)
from kpe_lib.sampling import SampleResult
from kpe_lib.training import ClassifierTrainConfig, TrainConfig, cached_model, train_classifier
from kpe_lib.training.config import TrainResult

__all__ = ["CifarData", "FlowModel", "MainSamples", "SpaceSettings", "FeatureSet", "load_cifar_splits",
           "loss_window", "unet_config", "train_flow_model", "sample_main", "inception_reference", "build_space",
           "encode_spaces", "to_unit", "Stage"]

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
    return CifarData(train=train, test=test, x_train=2.0 * train.images - 1.0, resolution=size,
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


def unet_config(in_channels: int, width: int, channel_mult: Sequence[int], attn_levels: Sequence[int],
                num_res_blocks: int, dropout: float) -> dict[str, Any]:
    """The ``kpe_lib.models.build_model`` configuration of the chapter's unconditional UNet."""
    return {"kind": "unet", "in_channels": in_channels, "width": width, "channel_mult": list(channel_mult),
            "attn_levels": list(attn_levels), "num_res_blocks": num_res_blocks, "dropout": dropout}


def train_flow_model(model_config: dict[str, Any], train_config: TrainConfig, x_train: torch.Tensor, *,
                     cache: Path, name: str, device: str = "cpu", progress: bool | None = None,
                     bf16: bool = False, compile: bool = False, stage: Stage = _no_stage) -> FlowModel:
    """Train (or read from the cache) the flow model on ``x_train`` and prepare it for sampling.

    Args:
        model_config: the UNet configuration for ``cached_model``.
        train_config: its training settings (``seed`` seeds the weights and the batches).
        x_train: (n, C, H, W) training images in [-1, 1].
        cache: the chapter's cache folder (models under ``models/``).
        name: the cache entry's name.
        device: torch device of training and sampling (under ``torchrun``: DDP, ``scripts/pretrain.py``).
        progress: tqdm bars during training.
        bf16, compile: :func:`kpe_lib.accelerate.accelerate` options for sampling (both off: the module itself).
        stage: ``stage(name)`` context manager timing the training (e.g. ``ctx.stage``).
    """
    with stage("train flow model"):
        fm = cached_model(model_config, train_config, x_train, cache_dir=cache / "models", name=name,
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
        res: the sampler's full result (grid, per-step energy, early / late split).
        x1: (M, C, H, W) the final samples x_N on the CPU, float32, in [-1, 1] up to overshoot.
        kpe: (M,) per-sample KPE (Euler left sum, Mathematics §2), on the CPU.
        samples_unit: (M, C, H, W) the samples as images in [0, 1], what every feature space sees.
        straight: (M,) float64 straight-line bound ``1/2 ||x_N - x_0||^2``.
        excess: (M,) ``kpe / straight``, >= 1 (Cauchy-Schwarz), 1 only for a straight constant-speed path.
        nfe: the Euler steps asked for.
    """

    x0: torch.Tensor
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
                device: str = "cpu", batch_size: int | None = None, stage: Stage = _no_stage) -> MainSamples:
    """Euler-sample ``n`` images from noise drawn with generator seed ``seed + 1``, uniform grid, no shaping.

    Args:
        velocity: the flow model's sampling module.
        n: number of samples M.
        shape: (C, H, W) of one image.
        nfe: Euler steps.
        seed: the chapter seed (the noise generator is seeded ``seed + 1``).
        device: torch device of sampling (the noise is drawn on the CPU).
        batch_size: samples per forward pass (``cifar_sample_batch``; None: all M at once). Each path depends
            on its own noise only, so the samples and KPE do not depend on it beyond float rounding.
        stage: ``stage(name)`` context manager timing the sampling.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    x0 = torch.randn(n, *shape, generator=gen)
    with stage("sample NFE main"):
        res = sample_sharded(velocity, x0, batch_size=batch_size, device=device, n_steps=nfe, solver="euler")
    x1 = res.x.detach().cpu().float()
    kpe = res.kpe.detach().cpu()
    straight = 0.5 * (x1 - x0).flatten(1).pow(2).sum(1).double()
    return MainSamples(x0=x0, res=res, x1=x1, kpe=kpe, samples_unit=to_unit(x1), straight=straight,
                       excess=kpe / straight, nfe=nfe)


@dataclass(frozen=True)
class SpaceSettings:
    """What the feature spaces are fitted with (the chapter's ``cifar_*`` parameters of the same names).

    Attributes:
        pca_components: principal components kept (capped at n and C H W).
        ae_latent, ae_steps: latent size and training steps of the autoencoder and of the VAE.
        clf_width, clf_steps: classifier width W and training steps.
        seed: seeds the autoencoders and the classifier.
        device: torch device of the networks: the autoencoder's and the VAE's training and encoding, the
            classifier's training, the Inception network (the cache keys do not depend on it).
        cache: the chapter's cache folder (``autoencoders/``, ``classifiers/``).
        progress: tqdm bars of the training loops; bar: the tqdm switch of the encoders.
    """

    pca_components: int
    ae_latent: int
    ae_steps: int
    clf_width: int
    clf_steps: int
    seed: int
    cache: Path
    device: str = "cpu"
    progress: bool | None = False
    bar: bool | None = False


def build_space(name: str, data: CifarData, settings: SpaceSettings) -> FeatureSpace:
    """Fit (or load) one feature space on the training images.

    Args:
        name: ``pixels``, ``pca``, ``autoencoder``, ``vae``, ``hog``, ``inception`` or ``classifier``.
        data: the images; the fitted spaces see ``data.train_unit`` (n, C, H, W) in [0, 1].
        settings: the spaces' settings.

    Returns:
        The space, a callable (B, C, H, W) -> (B, D). The classifier space carries
        ``accuracy = (train, held-out)``, its accuracy on the training images and on the first 1,000 test images.

    Raises:
        ValueError: an unknown name.
    """
    s, train_unit = settings, data.train_unit
    n_train, (c, h, w) = data.n_train, data.shape
    if name == "pixels":
        return PixelFeatures()
    if name == "pca":
        return PCAFeatures(train_unit, n_components=min(s.pca_components, n_train, c * h * w))
    if name in ("autoencoder", "vae"):
        return AutoencoderFeatures(train_unit, latent_dim=s.ae_latent, variational=name == "vae", steps=s.ae_steps,
                                   seed=s.seed, cache=s.cache / "autoencoders", progress=s.bar, device=s.device)
    if name == "hog":
        cell = max(2, data.resolution // 4)
        return HOGFeatures(pixels_per_cell=(cell, cell), cells_per_block=(2, 2), progress=s.bar)
    if name == "inception":
        return InceptionFeatures(value_range=(0.0, 1.0), device=s.device, progress=s.bar)
    if name == "classifier":
        test = data.test
        clf = train_classifier(train_unit, data.train.labels, ClassifierTrainConfig(width=s.clf_width,
                               steps=s.clf_steps, seed=s.seed), val_images=test.images[:1000],
                               val_labels=test.labels[:1000], cache_dir=s.cache / "classifiers",
                               name=f"cifar{data.resolution}-clf", progress=s.progress, device=s.device)
        space = ClassifierFeatures(clf.model)
        space.accuracy = (clf.train_accuracy, clf.val_accuracy)
        return space
    raise ValueError(f"unknown feature space {name!r}")


def inception_reference(n_train: int, n_ref: int, seed: int) -> torch.Tensor:
    """(min(n_ref, n_train),) indices of the random training images that form the Inception reference
    (a permutation drawn with generator seed ``seed + 2``)."""
    ref_gen = torch.Generator().manual_seed(seed + 2)
    return torch.randperm(n_train, generator=ref_gen)[:min(n_ref, n_train)]


@dataclass
class FeatureSet:
    """The feature spaces and the features of samples and training images in each.

    Attributes:
        spaces: name -> fitted space (a callable on (B, C, H, W) images in [0, 1]).
        features: name -> :class:`SpaceFeatures` (query: (M, D) samples, ref: (n_ref, D) training images).
        table: one row per space: implementation, dim, reference items, fitting / encoding CPU seconds.
        n_inception_ref: training images in the Inception reference.
    """

    spaces: dict[str, FeatureSpace]
    features: dict[str, SpaceFeatures]
    table: pd.DataFrame
    n_inception_ref: int

    @property
    def classifier_accuracy(self) -> tuple[float, float] | None:
        """(train, held-out test) accuracy of the classifier space, None without one."""
        return self.spaces["classifier"].accuracy if "classifier" in self.spaces else None

    def summary(self) -> str:
        """The classifier's accuracies (empty without a classifier space)."""
        acc = self.classifier_accuracy
        if acc is None:
            return ""
        return f"classifier accuracy: train {acc[0]:.3f}, held-out test (1,000 images) {acc[1]:.3f}"


def encode_spaces(names: Sequence[str], data: CifarData, images: torch.Tensor, settings: SpaceSettings,
                  inception_ref: torch.Tensor, *, stage: Stage = _no_stage) -> FeatureSet:
    """Fit every space in ``names`` (in that order) and encode the samples and the training images.

    The Inception space's reference is the training subset ``inception_ref`` (0.15 s per image on a CPU);
    every other space uses all training images.

    Args:
        names: the spaces, see :func:`build_space`.
        data: the images.
        images: (M, C, H, W) generated samples in [0, 1].
        settings: the spaces' settings.
        inception_ref: indices of the Inception reference (:func:`inception_reference`).
        stage: ``stage(name)`` context manager timing each space (``"features: <name>"``).
    """
    spaces: dict[str, FeatureSpace] = {}
    features: dict[str, SpaceFeatures] = {}
    rows = []
    n_train = data.n_train
    for name in names:
        cpu = time.process_time()
        with stage(f"features: {name}"):
            space = spaces[name] = build_space(name, data, settings)
            ref_images = data.train_unit[inception_ref] if name == "inception" else data.train_unit
            features[name] = SpaceFeatures(
                name, query=space(images), ref=space(ref_images),
                note=(f"reference: {len(ref_images)} of {n_train} training images (random)"
                      if len(ref_images) < n_train else ""))
        rows.append({"space": name, "implementation": space.name, "dim": features[name].query.shape[1],
                     "reference items": features[name].ref.shape[0],
                     "fitting / encoding CPU s": round(time.process_time() - cpu, 1)})
    return FeatureSet(spaces=spaces, features=features, table=pd.DataFrame(rows).set_index("space"),
                      n_inception_ref=len(inception_ref))
