"""The feature spaces of the CIFAR-10 support chapter (Mathematics §5): each is fitted on (or applied to) the
training images in [0, 1], and encodes the samples and the training reference.

* :func:`build_space`: one space (pixels, PCA, autoencoder, VAE, HOG, Inception, classifier);
* :func:`encode_spaces`: every space the chapter asks for, with a table of their sizes and costs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch

from kpe_lib.experiments.cifar_support.correlations import SpaceFeatures
from kpe_lib.experiments.cifar_support.setup import CifarData, Stage, _no_stage
from kpe_lib.metrics import (AutoencoderFeatures, ClassifierFeatures, FeatureSpace, HOGFeatures, InceptionFeatures,
                             PCAFeatures, PixelFeatures)
from kpe_lib.metrics.quality import reference_set
from kpe_lib.training import train_classifier
from kpe_lib.training.shared import cifar_classifier_config

__all__ = ["SpaceSettings", "FeatureSet", "build_space", "inception_reference", "encode_spaces"]


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
        clf = train_classifier(train_unit, data.train.labels, cifar_classifier_config(s.clf_width, s.clf_steps,
                               s.seed), val_images=test.images[:1000],
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
        cache: the chapter's cache folder: the Inception features of real images are kept under ``fid/``
            (:meth:`encode_real`); None: encoded every time.
    """

    spaces: dict[str, FeatureSpace]
    features: dict[str, SpaceFeatures]
    table: pd.DataFrame
    n_inception_ref: int
    cache: Path | None = None

    def encode_real(self, name: str, images: torch.Tensor) -> torch.Tensor:
        """(N, D) features of real images (N, C, H, W) in [0, 1] in space ``name``. Inception features are read
        from, or written to, the cache (keyed by the images' content, ``metrics.quality.reference_set``): the
        same network on the same images, so a rebuild skips the slowest encoding of the chapter."""
        if name != "inception" or self.cache is None:
            return self.spaces[name](images)
        space = self.spaces[name]
        return reference_set(images, cache_dir=self.cache / "fid", device=getattr(space, "device", "cpu")).features

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

    The Inception space's reference is the training subset ``inception_ref`` (0.15-0.22 s per image on a
    CPU), its features cached (:meth:`FeatureSet.encode_real`); every other space uses all training images.

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
    out = FeatureSet(spaces=spaces, features=features, table=pd.DataFrame(), n_inception_ref=len(inception_ref),
                     cache=settings.cache)
    for name in names:
        cpu = time.process_time()
        with stage(f"features: {name}"):
            space = spaces[name] = build_space(name, data, settings)
            ref_images = data.train_unit[inception_ref] if name == "inception" else data.train_unit
            features[name] = SpaceFeatures(
                name, query=space(images), ref=out.encode_real(name, ref_images),
                note=(f"reference: {len(ref_images)} of {n_train} training images (random)"
                      if len(ref_images) < n_train else ""))
        rows.append({"space": name, "implementation": space.name, "dim": features[name].query.shape[1],
                     "reference items": features[name].ref.shape[0],
                     "fitting / encoding CPU s": round(time.process_time() - cpu, 1)})
    out.table = pd.DataFrame(rows).set_index("space")
    return out
