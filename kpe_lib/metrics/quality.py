"""FID and precision/recall of several sample sets against one reference set (Mathematics §5).

Comparing sampler settings (plain flow matching against KTS launch and landing, Mathematics §6) needs the same
reference features for every setting: this module computes the reference set's Inception pool features
once (optionally cached on disk, keyed by the images' bytes and the feature network), then gives each
generated set its FID (Frechet distance of the Gaussians of the 2048-d pool features) and its k-NN
precision and recall (Kynkaanniemi et al. 2019, k = 3) on those same features. Every result carries its
protocol (feature network, reference description and count, generated count, plus the caller's solver,
NFE, EMA, ...), as Mathematics §5 asks of every FID printed.

The Frechet distance is computed exactly by ``kpe_lib.metrics.FrechetReference``, whose reference
square root is computed once per reference set.

Example:
    >>> ref = reference_set(test_images, {"reference_split": "CIFAR-10 test", "resolution": 16})  # doctest: +SKIP
    >>> q = sample_quality(ref, generated, {"solver": "euler", "nfe": 40, "ema": True})         # doctest: +SKIP
    >>> print(f"FID {q.fid:.1f}, precision {q.precision:.2f}, recall {q.recall:.2f}")            # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from kpe_lib._files import atomic_path
from kpe_lib.metrics.fid import (FeatureStats, FrechetReference, feature_statistics, inception_features,
                                 inception_protocol)
from kpe_lib.metrics.kid import KIDResult, kid_with_ci
from kpe_lib.metrics.precision_recall import precision_recall

__all__ = ["ReferenceSet", "QualityResult", "reference_set", "sample_quality"]

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ReferenceSet:
    """Features of the real images every generated set is compared with.

    Attributes:
        features: (N, D) float32 features of the reference images.
        stats: their Gaussian summary (float64 mean and covariance).
        description: what the reference is (split, count, resolution, ...), copied into every protocol.
        from_cache: whether the features were read from the disk cache.
        frechet: the reference prepared for Frechet distances, once :meth:`frechet_reference` ran.
    """

    features: torch.Tensor
    stats: FeatureStats
    description: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False
    frechet: FrechetReference | None = None

    @property
    def n(self) -> int:
        return int(self.features.shape[0])

    def frechet_reference(self) -> FrechetReference:
        """The reference prepared for exact Frechet distances (its square root computed once)."""
        if self.frechet is None:
            self.frechet = FrechetReference.from_stats(self.stats)
        return self.frechet


@dataclass
class QualityResult:
    """FID, precision and recall of one generated set, with the protocol that produced them.

    Attributes:
        fid: Frechet distance between the reference and generated feature Gaussians.
        precision: fraction of generated features inside the reference k-NN manifold.
        recall: fraction of reference features inside the generated k-NN manifold.
        k: the neighbour rank of the manifolds.
        n_real, n_fake: set sizes.
        protocol: feature network and preprocessing, reference description, counts and the caller's extras.
        kid: KID of the same features with its bootstrap interval over the generated set (Mathematics §5.4).
        features: (M, D) features of the generated images (for paired changes between samplers).
    """

    fid: float
    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int
    protocol: dict[str, Any]
    kid: KIDResult | None = None
    features: torch.Tensor | None = field(default=None, repr=False)


def _inception(batch_size: int | None, device: str) -> FeatureFn:
    return lambda x: inception_features(x, batch_size=batch_size, device=device, progress=False)


def reference_set(images: torch.Tensor, description: Mapping[str, Any] | None = None, *,
                  features: FeatureFn | None = None, feature_name: str | None = None,
                  cache_dir: str | os.PathLike | None = None, batch_size: int | None = None,
                  device: str = "cpu") -> ReferenceSet:
    """Features and statistics of a reference image set.

    Args:
        images: (N, C, H, W) real images in [0, 1] (N > 3 for precision/recall).
        description: e.g. ``{"reference_split": "CIFAR-10 test", "resolution": "16x16"}``.
        features: ``images -> (N, D)``; default the FID Inception network (``inception_features``).
        feature_name: names a custom ``features`` in the cache key and the protocol (required with it).
        cache_dir: folder for the cached features (None: no caching). Keyed by the sha256 of the images and
            the feature network's name.
        batch_size, device: for the Inception forward.

    Returns:
        ReferenceSet.

    Raises:
        ValueError: images not of shape (N, C, H, W) with N >= 4, or a custom ``features`` without a name.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] < 4:
        raise ValueError(f"images must be a tensor (N, C, H, W) with N >= 4; got {tuple(getattr(images, 'shape', ()))}")
    if features is not None and not feature_name:
        raise ValueError("feature_name is required with a custom features function (it keys the cache)")
    name = feature_name or "inception:" + inception_protocol()["network_sha1"]
    fn = features or _inception(batch_size, device)
    path = None
    if cache_dir is not None:
        h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}|{name}|".encode())
        h.update(images.detach().cpu().contiguous().numpy().tobytes())
        path = Path(cache_dir) / f"reference_features_{h.hexdigest()[:24]}.npy"
    if path is not None and path.is_file():
        feats, cached = torch.from_numpy(np.load(path)), True
    else:
        feats, cached = fn(images).detach().cpu().float(), False
        if path is not None:
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, feats.numpy())
    desc = {"n_real": int(feats.shape[0]), **dict(description or {})}
    return ReferenceSet(features=feats, stats=feature_statistics(feats), description=desc, from_cache=cached)


def sample_quality(reference: ReferenceSet, images: torch.Tensor, protocol: Mapping[str, Any] | None = None, *,
                   k: int = 3, features: FeatureFn | None = None, feature_name: str | None = None,
                   batch_size: int | None = None, device: str = "cpu") -> QualityResult:
    """FID, KID, precision and recall of generated images against ``reference`` (Mathematics §5).

    Args:
        reference: from :func:`reference_set` (same feature network as ``features``).
        images: (M, C, H, W) generated images in [0, 1], M > k.
        protocol: the caller's protocol fields (solver, NFE, guidance, EMA, ...).
        k: neighbour rank of precision/recall (Mathematics §5: 3).
        features, feature_name: a custom feature function, as in :func:`reference_set`.
        batch_size, device: for the Inception forward.

    Returns:
        QualityResult.
    """
    if features is not None and not feature_name:
        raise ValueError("feature_name is required with a custom features function")
    fn = features or _inception(batch_size, device)
    fake = fn(images).detach().cpu().float()
    if fake.shape[1] != reference.features.shape[1]:
        raise ValueError(f"generated features have dimension {fake.shape[1]} but the reference has "
                         f"{reference.features.shape[1]}: use the same feature network")
    if fake.shape[0] < 2:
        raise ValueError(f"need at least 2 generated images for a covariance; got {fake.shape[0]}")
    value = reference.frechet_reference().fid(fake)
    pr = precision_recall(reference.features, fake, k=k)
    record = inception_protocol() if features is None else {"feature_network": feature_name}
    record.update(reference.description)
    record.update(n_fake=int(fake.shape[0]), precision_recall=f"k-NN manifolds, k = {k} (Kynkaanniemi et al. 2019)",
                  frechet="exact, trace term from the min(m, D)-square eigenproblem of FrechetReference (float64)")
    record.update(dict(protocol or {}))
    record.update(kid="unbiased MMD^2, cubic polynomial kernel, bootstrap over the generated set")
    return QualityResult(fid=value, precision=pr.precision, recall=pr.recall, k=k, n_real=reference.n,
                         n_fake=int(fake.shape[0]), protocol=record, kid=kid_with_ci(reference.features, fake, seed=0),
                         features=fake)
