"""The two settings of the semantics chapter behind one interface (Mathematics §5, §6).

The paper measures semantic strength of a class-conditional ImageNet-256 latent flow model (SiT-XL/2
family, CFG 1.5) by CLIP score and margin. The companion runs the same analysis at two scales:

- ``cifar``: a class-conditional UNet trained on CIFAR-10 (pixel space) and a classifier trained on the
  same data; semantic score ``log p(y | x)`` and margin ``logit_y - max_{k != y} logit_k`` (Mathematics §5's
  classifier analogue of CLIP);
- ``sit``: the paper-scale latent transformer, the Stable Diffusion VAE decoder and CLIP
  (``kpe_lib.models.paper``).

A :class:`SemanticBackend` bundles what the chapter needs from either: the network and its guidance
wrapper (for ``kpe_lib.models.guidance.sample_guided``), the shape of one noise sample in the model's
space (where the sampler runs and where KPE is measured: pixels or VAE latents), the map from model space
to images in [0, 1], and the semantic scorer.

Example:
    >>> backend = cifar_backend(unet, classifier, CIFAR10_CLASSES, resolution=16)     # doctest: +SKIP
    >>> run = sample_guided(backend.model, x0, y, scale=1.5, guide=backend.guide)     # doctest: +SKIP
    >>> sem = backend.semantics(backend.to_images(run.x), run.labels)                 # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

import torch
from torch import nn

from kpe_lib.metrics import SemanticResult, semantic_scores
from kpe_lib.models.guidance import GuidedVelocity

__all__ = ["SemanticBackend", "cifar_backend", "paper_backend", "classifier_semantics", "unit_from_symmetric",
           "load_reference_batch"]

ADM_REFERENCE_HINT = ("the ADM ImageNet-256 reference batch VIRTUAL_imagenet256_labeled.npz, published with "
                      "guided-diffusion (Dhariwal & Nichol 2021, github.com/openai/guided-diffusion, evaluations/)")


@dataclass
class SemanticBackend:
    """Everything the semantics chapter needs from a class-conditional generator and a semantic scorer.

    Attributes:
        name: short name, e.g. "cifar-unet" or "sit-xl-2".
        model: the class-conditional network handed to ``guide``.
        guide: ``guide(model, w) -> v(x, t, y=labels)``, the classifier-free guided velocity.
        sample_shape: shape of one noise sample in the model's space, e.g. (3, 16, 16) or (4, 32, 32).
        num_classes: K (labels 0 .. K-1; the null class is the model's business).
        class_names: the K class names.
        to_images: model-space states (B, *sample_shape) -> images (B, 3, H, W) in [0, 1].
        semantics: ``(images, labels) -> SemanticResult`` (score and margin per sample).
        score_name, margin_name: what the two semantic numbers are, for tables and axes.
        protocol: the backend's settings for the results file.
    """

    name: str
    model: Any
    guide: Callable[[Any, float], Callable[..., torch.Tensor]]
    sample_shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]
    to_images: Callable[[torch.Tensor], torch.Tensor]
    semantics: Callable[[torch.Tensor, torch.Tensor], SemanticResult]
    score_name: str
    margin_name: str
    protocol: dict[str, Any] = field(default_factory=dict)


def unit_from_symmetric(x: torch.Tensor) -> torch.Tensor:
    """Pixels trained in [-1, 1] -> images in [0, 1]: ``(x + 1) / 2`` clipped (samples overshoot a little)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def classifier_semantics(classifier: nn.Module, batch_size: int = 512
                         ) -> Callable[[torch.Tensor, torch.Tensor], SemanticResult]:
    """A scorer ``(images, labels) -> SemanticResult`` from a classifier's logits (Mathematics §5).

    Args:
        classifier: ``classifier(images) -> logits (B, K)``, fed images as it was trained on them.
        batch_size: images per forward pass.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")

    @torch.no_grad()
    def score(images: torch.Tensor, labels: torch.Tensor) -> SemanticResult:
        device = next(classifier.parameters()).device
        logits = torch.cat([classifier(images[s:s + batch_size].to(device)).cpu()
                            for s in range(0, images.shape[0], batch_size)])
        return semantic_scores(logits, torch.as_tensor(labels).long().cpu())

    return score


def cifar_backend(model: nn.Module, classifier: nn.Module, class_names: Sequence[str], resolution: int,
                  channels: int = 3, protocol: dict[str, Any] | None = None) -> SemanticBackend:
    """The CPU-scale backend: a class-conditional pixel-space UNet trained on [-1, 1] images and a
    classifier trained on the same images in [0, 1].

    Args:
        model: class-conditional velocity ``model(x, t, y)`` with a ``num_classes`` null class (eval mode).
        classifier: logits of images in [0, 1] (eval mode).
        class_names: the K class names.
        resolution: image side of the model and the classifier.
        channels: image channels.
        protocol: extra settings recorded in ``backend.protocol``.

    Raises:
        ValueError: the model is not class-conditional, or its class count differs from ``class_names``.
    """
    k = getattr(model, "num_classes", None)
    if k is None or int(k) != len(class_names):
        raise ValueError(f"model must be class-conditional with num_classes = len(class_names) = {len(class_names)}; "
                         f"got num_classes={k}")
    return SemanticBackend(
        name="cifar-unet", model=model, guide=GuidedVelocity, sample_shape=(channels, resolution, resolution),
        num_classes=int(k), class_names=list(class_names), to_images=unit_from_symmetric,
        semantics=classifier_semantics(classifier), score_name="classifier log p(y|x)",
        margin_name="classifier margin (logits)", protocol=dict(protocol or {}))


def paper_backend(pipeline: Any) -> SemanticBackend:
    """The paper-scale backend from a ``kpe_lib.experiments.semantics_guidance.paper_pipeline.PaperPipeline`` (SiT + SD-VAE decoder + CLIP).

    The sampler runs, and KPE is measured, in the VAE latent space (``pipeline.sample_shape``, 4 x 32 x 32
    for SiT-XL/2); images come from the VAE decoder and the semantics from CLIP.

    Raises:
        ValueError: the pipeline lacks one of the fields the chapter needs.
    """
    needed = ("name", "model", "guide", "sample_shape", "num_classes", "class_names", "to_images", "semantics",
              "score_name", "margin_name")
    missing = [f for f in needed if not hasattr(pipeline, f)]
    if missing:
        raise ValueError(f"pipeline lacks {missing}; expected a kpe_lib.experiments.semantics_guidance.paper_pipeline.PaperPipeline")
    protocol = {"ema": True, **dict(getattr(pipeline, "protocol", {}) or {})}  # released SiT weights are EMA
    return SemanticBackend(
        name=pipeline.name, model=pipeline.model, guide=pipeline.guide, sample_shape=tuple(pipeline.sample_shape),
        num_classes=int(pipeline.num_classes), class_names=list(pipeline.class_names),
        to_images=pipeline.to_images, semantics=pipeline.semantics, score_name=pipeline.score_name,
        margin_name=pipeline.margin_name, protocol=protocol)


def load_reference_batch(path: str | os.PathLike | None, n: int | None = None, key: str = "arr_0") -> torch.Tensor:
    """Images of an ADM-style reference batch (``.npz`` with uint8 images (N, H, W, 3) under ``key``).

    The paper-scale FID reference of the semantics chapter (Mathematics §5 protocol, ImageNet-256): the file is
    read locally, never downloaded.

    Args:
        path: the ``.npz`` file.
        n: keep the first n images (None: all).
        key: the array holding the images.

    Returns:
        (n, 3, H, W) float32 images in [0, 1].

    Raises:
        FileNotFoundError: no file at ``path`` (the message says where to get it).
        ValueError: the key is missing, the array is not uint8 (N, H, W, 3), or n exceeds N.
    """
    if path is None or not Path(path).is_file():
        raise FileNotFoundError(f"FID reference batch not found at {path!r}: expected {ADM_REFERENCE_HINT}; "
                                "download it and pass its local path (sem_imagenet_ref)")
    with np.load(path) as z:
        if key not in z.files:
            raise ValueError(f"{path} has no array {key!r} (arrays: {z.files}); expected {ADM_REFERENCE_HINT}")
        arr = z[key]
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{path}:{key} must be uint8 images (N, H, W, 3); got {arr.dtype} {arr.shape}")
    if n is not None and not 1 <= n <= arr.shape[0]:
        raise ValueError(f"n must be in [1, {arr.shape[0]}] for {path}; got {n}")
    arr = arr[:n] if n is not None else arr
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
