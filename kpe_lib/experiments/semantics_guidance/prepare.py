"""Set-up of the semantics chapter: the CIFAR-10 backend's data and models, the paper-scale wiring check and
the FID reference set (Mathematics §5, §6).

Each function does what one set-up cell of ``notebooks/05_semantics_guidance.md`` used to spell out, in the
same order, so the chapter's numbers do not change:

* :func:`load_semantics_data` and :func:`train_cifar_backend`: CIFAR-10 at the chapter's resolution, the
  class-conditional UNet (CFG through a null class) and the classifier whose ``log p(y | x)`` stands in for
  CLIP, wrapped in a :class:`~kpe_lib.experiments.semantics_guidance.SemanticBackend`;
* :func:`check_paper_path`: the paper-scale code path (SiT + SD-VAE + CLIP) run on a few samples, either on
  the real weights or on tiny random configurations;
* :func:`fid_reference`: the real images that FID, precision and recall compare with, and the held-out real
  images that give the small-sample FID floor.

Example:
    >>> data = load_semantics_data(None, 16, n_train=None, n_test=1000)               # doctest: +SKIP
    >>> setup = train_cifar_backend(data, unet_config(32, [1, 2, 2], 1, [2], 0.0),    # doctest: +SKIP
    ...                             TrainConfig(steps=1500), ClassifierTrainConfig(width=16), cache=cache)
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import torch

from kpe_lib.accelerate import accelerate
from kpe_lib.data import PartialDataWarning, load_cifar10
from kpe_lib.data.images import ImageData
from kpe_lib.experiments.semantics_guidance import SemanticBackend, cifar_backend, load_reference_batch
from kpe_lib.metrics.quality import ReferenceSet, reference_set
from kpe_lib.metrics.semantic import SemanticResult
from kpe_lib.models.guidance import GuidedSamples, NoiseBatch, class_balanced_noise, sample_guided
from kpe_lib.training import ClassifierTrainConfig, TrainConfig, cached_model, train_classifier
from kpe_lib.training.classifier import ClassifierResult
from kpe_lib.training.config import TrainResult
from kpe_lib.training.shared import cifar_unet_config, shared_model_name

__all__ = ["SemanticsData", "CifarSetup", "PaperPathCheck", "FidReference", "load_semantics_data", "unet_config",
           "train_flow_model", "train_cifar_backend", "check_paper_path", "fid_reference", "loss_window"]

DATA_NOTE = "CIFAR-10 data_batch_1 (the training batch present here)"
Stage = Callable[[str], ContextManager[Any]]


def _no_stage(name: str) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclass
class SemanticsData:
    """CIFAR-10 as the chapter uses it.

    Attributes:
        train: the training images (N, 3, H, W) at the chapter's resolution, in [0, 1] up to resize overshoot.
        test: the test split's first images, same layout (classifier validation and FID reference).
        train_unit: ``train.images`` clamped to [0, 1], (N, 3, H, W) (what both networks are trained on).
    """

    train: ImageData
    test: ImageData
    train_unit: torch.Tensor

    @property
    def n_train(self) -> int:
        return int(self.train_unit.shape[0])


def load_semantics_data(data_root: str | os.PathLike | None, resolution: int, *, n_train: int | None,
                        n_test: int) -> SemanticsData:
    """Load the CIFAR-10 training and test images at side ``resolution`` (antialiased bilinear resize).

    A partial training split (only ``data_batch_1`` present) is expected and its warning silenced; the chapter
    says so in its text.

    Args:
        data_root: data folder (None: ``KPE_DATA``, else the user cache).
        resolution: image side H = W.
        n_train: training images to keep (None: all present).
        n_test: test images to keep (the first ones of the split).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialDataWarning)
        train = load_cifar10(data_root, split="train", n=n_train, size=resolution)
        test = load_cifar10(data_root, split="test", n=n_test, size=resolution)
    train_unit = train.images.clamp(0.0, 1.0)  # the resize can overshoot [0, 1] by 1e-7
    return SemanticsData(train=train, test=test, train_unit=train_unit)


def unet_config(width: int, channel_mult: Sequence[int], num_res_blocks: int, attn_levels: Sequence[int],
                dropout: float, num_classes: int = 10, in_channels: int = 3) -> dict[str, Any]:
    """The class-conditional UNet's configuration for ``cached_model`` (a null class is added by the model):
    :func:`kpe_lib.training.shared.cifar_unet_config`, as chapter 3 builds it, so both chapters share one model."""
    return cifar_unet_config(in_channels, width, channel_mult, attn_levels, num_res_blocks, dropout, num_classes)


def loss_window(losses: np.ndarray) -> tuple[int, float, float]:
    """``(window, first, last)``: the moving-mean window ``max(1, min(100, n // 5))`` of a loss curve (n,)
    and the mean loss over its first and its last ``window`` steps."""
    window = max(1, min(100, len(losses) // 5))
    return window, losses[:window].mean(), losses[-window:].mean()


@dataclass
class CifarSetup:
    """The trained CIFAR-10 backend and what the chapter reports about its training.

    Attributes:
        data: the images (:class:`SemanticsData`).
        fm: the flow model's training result (losses, EMA, cache state).
        clf: the classifier's training result (accuracies, cache state).
        backend: the :class:`SemanticBackend` (EMA UNet + classifier scorer).
        model_config: the UNet configuration; train_config: its training settings.
        losses: (steps,) CFM loss per step.
        window, loss_first, loss_last: see :func:`loss_window`.
    """

    data: SemanticsData
    fm: TrainResult
    clf: ClassifierResult
    backend: SemanticBackend
    model_config: dict[str, Any]
    train_config: TrainConfig
    clf_config: ClassifierTrainConfig
    losses: np.ndarray
    window: int
    loss_first: float
    loss_last: float

    @property
    def train_seconds(self) -> dict[str, Any]:
        """Training wall times and cache hits, for the results protocol."""
        return {"flow_model": round(self.fm.seconds, 1), "flow_model_from_cache": self.fm.new_steps == 0,
                "classifier": round(self.clf.seconds, 1), "classifier_from_cache": self.clf.cached}

    def model_line(self) -> str:
        """One sentence on the flow model: size, steps, data, loss drop, sampling weights."""
        fm, res = self.fm, self.data.train_unit.shape[-1]
        n_params = sum(p.numel() for p in self.fm.sampling_model.parameters())
        return (f"class-conditional UNet, {n_params / 1e6:.2f} M parameters, {fm.steps_done} steps of batch "
                f"{self.train_config.batch_size} on {self.data.n_train} images at {res}x{res}; CFM loss "
                f"{self.loss_first:.3f} (first {self.window} steps) -> {self.loss_last:.3f} (last {self.window}); "
                f"sampling with {'the EMA' if fm.ema is not None else 'the raw'} weights")

    def classifier_line(self) -> str:
        """One sentence on the classifier: width, steps, train and held-out accuracy."""
        return (f"classifier (width {self.clf_config.width}, {self.clf_config.steps} steps): accuracy train "
                f"{self.clf.train_accuracy:.3f}, held-out test (1,000 images) {self.clf.val_accuracy:.3f}")

    def timing_line(self) -> str:
        """Training wall times of the cache entries and whether this run trained or read the cache."""
        fm, clf = self.fm, self.clf
        return (f"training wall time when the cache entries were made: flow model {fm.seconds:.0f} s, classifier "
                f"{clf.seconds:.0f} s (this run: {'cache' if fm.new_steps == 0 else 'trained'} / "
                f"{'cache' if clf.cached else 'trained'})")


def train_flow_model(data: SemanticsData, model_config: dict[str, Any], train_config: TrainConfig, *,
                     cache: Path, device: str = "cpu", progress: bool | None = None) -> TrainResult:
    """Train (or read from the cache) the class-conditional UNet: the CFM velocity of the images scaled to
    [-1, 1], (N, 3, H, W), with label dropout to the null class (``train_config.p_uncond``).

    Under ``torchrun`` every rank calls this and the model trains with DistributedDataParallel
    (``scripts/pretrain.py``); the cache entry is ``<cache>/models/cifar<H>-cond-<key>``, the one chapter 3
    trains or reads with the same configuration (its ``x_train`` is the same tensor).
    """
    res = data.train_unit.shape[-1]
    return cached_model(model_config, train_config, 2.0 * data.train_unit - 1.0, data.train.labels,
                        cache_dir=cache / "models", name=shared_model_name(res), progress=progress, device=device)


def train_cifar_backend(data: SemanticsData, model_config: dict[str, Any], train_config: TrainConfig,
                        clf_config: ClassifierTrainConfig, *, cache: Path, device: str = "cpu",
                        progress: bool | None = None, bf16: bool = False,
                        stage: Stage = _no_stage) -> CifarSetup:
    """Train (or read from the cache) the class-conditional UNet and the classifier, and build the backend.

    The UNet: :func:`train_flow_model`; the classifier is trained on the same images in [0, 1] and validated
    on the first 1,000 test images.

    Args:
        data: the images from :func:`load_semantics_data`.
        model_config: from :func:`unet_config`.
        train_config: the flow model's training settings.
        clf_config: the classifier's training settings.
        cache: the chapter's cache folder (models under ``models/``, classifiers under ``classifiers/``).
        device: torch device of training and sampling.
        progress: tqdm bars during training.
        bf16: sample the UNet under bfloat16 autocast (:func:`kpe_lib.accelerate.accelerate`; states and KPE
            stay float32 / float64); off: the module itself.
        stage: ``stage(name)`` context manager timing a stage (e.g. ``ctx.stage``).
    """
    train, test, train_unit = data.train, data.test, data.train_unit
    res = train_unit.shape[-1]
    with stage("train flow model"):
        fm = train_flow_model(data, model_config, train_config, cache=cache, device=device, progress=progress)
    with stage("train classifier"):
        clf = train_classifier(train_unit, train.labels, clf_config, val_images=test.images[:1000],
                               val_labels=test.labels[:1000], cache_dir=cache / "classifiers",
                               name=f"cifar{res}-clf", progress=progress, device=device)
    unet = accelerate(fm.sampling_model.to(device).eval(), bf16=bf16)
    backend = cifar_backend(unet, clf.model.to(device).eval(), train.class_names, res,
                            protocol={"model": model_config, "train": train_config.to_dict(),
                                      "ema": fm.ema is not None, "classifier_width": clf_config.width,
                                      "classifier_steps": clf_config.steps, "n_train": data.n_train,
                                      "data": DATA_NOTE})
    losses = np.asarray(fm.losses)
    window, first, last = loss_window(losses)
    return CifarSetup(data=data, fm=fm, clf=clf, backend=backend, model_config=model_config,
                      train_config=train_config, clf_config=clf_config, losses=losses, window=window,
                      loss_first=first, loss_last=last)


@dataclass
class PaperPathCheck:
    """A few samples through the paper-scale code path (SiT + SD-VAE decoder + CLIP).

    Attributes:
        backend: the paper backend (pretrained at ``sem_backend = "sit"``, tiny random otherwise).
        noise: the class-balanced noise (n, *sample_shape) and its labels.
        run_w1: 3 Euler steps at guidance 1 (conditional model, one network call per step).
        run_w: 3 Euler steps at the chapter's guidance.
        images: (n, 3, H, W) decoded images of ``run_w`` in [0, 1].
        sem: CLIP score and margin of ``images``.
    """

    backend: SemanticBackend
    noise: NoiseBatch
    run_w1: GuidedSamples
    run_w: GuidedSamples
    images: torch.Tensor
    sem: SemanticResult

    @property
    def n(self) -> int:
        return int(self.noise.x0.shape[0])


def check_paper_path(pretrained: bool, guidance: float, *, seed: int, device: str = "cpu",
                     sit_ckpt: str | None = None, vae_dir: str | None = None, clip_path: str | None = None,
                     clip_arch: str | None = None, class_names: str | None = None,
                     bf16: bool = False) -> PaperPathCheck:
    """Run the paper-scale pipeline on a few samples: one per class (pretrained) or 4 (tiny random models).

    Args:
        pretrained: load SiT-XL/2, the SD-VAE decoder and CLIP from the local paths below; False builds
            ``tiny_paper_pipeline(seed)`` (a wiring check whose numbers mean nothing).
        guidance: the CFG scale of the second run.
        seed: the tiny models' seed; the noise uses ``seed + 7``.
        device: torch device.
        sit_ckpt, vae_dir, clip_path, clip_arch, class_names, bf16: see ``load_paper_pipeline``.
    """
    from kpe_lib.experiments.semantics_guidance import paper_backend
    from kpe_lib.experiments.semantics_guidance.paper_pipeline import load_paper_pipeline, tiny_paper_pipeline

    if pretrained:
        pipeline = load_paper_pipeline(sit_ckpt, vae_dir, clip_path, device=device, clip_arch=clip_arch,
                                       class_names=class_names, bf16=bf16)
    else:
        pipeline = tiny_paper_pipeline(seed=seed)
    paper = paper_backend(pipeline)
    n_check = paper.num_classes if pretrained else 4
    check = class_balanced_noise(n_check, paper.sample_shape, paper.num_classes, seed=seed + 7)
    run_w1 = sample_guided(paper.model, check.x0.to(device), check.labels.to(device), scale=1.0, n_steps=3,
                           guide=paper.guide)
    run_w = sample_guided(paper.model, check.x0.to(device), check.labels.to(device), scale=guidance,
                          n_steps=3, guide=paper.guide)
    images = paper.to_images(run_w.x)
    sem = paper.semantics(images, check.labels)
    return PaperPathCheck(backend=paper, noise=check, run_w1=run_w1, run_w=run_w, images=images, sem=sem)


@dataclass
class FidReference:
    """The real images of the FID / precision / recall protocol.

    Attributes:
        reference: Inception features and statistics of the first ``fid_ref`` reference images.
        real_held_out: (m, 3, H, W) the next real images in [0, 1], scored like a generated set (FID floor).
        description: ``{"reference": sentence}``, copied into every quality protocol.
    """

    reference: ReferenceSet
    real_held_out: torch.Tensor
    description: dict[str, str] = field(default_factory=dict)


def fid_reference(test_images: torch.Tensor | None, fid_ref: int, fid_samples: int, *, resolution: int,
                  imagenet_ref: str | None = None, cache: Path, device: str = "cpu") -> FidReference:
    """The FID reference set: the CIFAR-10 test images (``test_images`` given) or the ADM ImageNet-256 batch.

    Args:
        test_images: (N, 3, H, W) CIFAR-10 test images in [0, 1] with N >= fid_ref + fid_samples, or None for
            the paper-scale reference ``imagenet_ref``.
        fid_ref: reference images (the first ones).
        fid_samples: held-out real images after them (the small-sample FID floor).
        resolution: image side (for the description).
        imagenet_ref: path of ``VIRTUAL_imagenet256_labeled.npz`` (paper scale).
        cache: the chapter's cache folder (features under ``fid/``).
        device: where Inception runs.
    """
    if test_images is not None:
        ref_images = test_images[:fid_ref]
        real_held_out = test_images[fid_ref:fid_ref + fid_samples]
        description = {"reference": f"CIFAR-10 test split, first {fid_ref} images, {resolution}x"
                                    f"{resolution} (antialiased resize of the 32x32 originals)"}
    else:
        ref_images = load_reference_batch(imagenet_ref, n=fid_ref + fid_samples)
        real_held_out = ref_images[fid_ref:]
        ref_images = ref_images[:fid_ref]
        description = {"reference": f"ADM ImageNet-256 reference batch, first {fid_ref} images"}
    reference = reference_set(ref_images, description, cache_dir=cache / "fid", device=device)
    return FidReference(reference=reference, real_held_out=real_held_out, description=description)
