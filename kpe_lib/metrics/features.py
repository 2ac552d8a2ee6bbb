"""Feature spaces for the local-support analysis of Mathematics §5.

Mathematics §5 measures how densely the training set surrounds each generated sample in several feature spaces:
pixels, PCA, an autoencoder/VAE latent, a hand-made descriptor (HOG), Inception pool features and a
classifier's penultimate layer. Each space here is a callable with a ``.name`` mapping images
(N, C, H, W) to features (N, D); spaces that must be fitted take the training images at construction.
:func:`feature_space` builds any of them by name.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._files import atomic_path
from kpe_lib.metrics._checks import cache_dir, check_images, check_positive_int, progress_disabled, tensor_fingerprint
from kpe_lib.metrics.fid import inception_features

_AE_VERSION = 1  # bump when the autoencoder architecture or training changes, to invalidate caches


class FeatureSpace:
    """Base class: ``name`` and ``__call__(images (N, C, H, W)) -> (N, D)`` float tensor on CPU."""

    name: str = "features"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class PixelFeatures(FeatureSpace):
    """The images themselves, flattened to (N, C*H*W)."""

    name = "pixels"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, channels=None)
        return x.reshape(x.shape[0], -1).float()


class PCAFeatures(FeatureSpace):
    """Projection on the top principal components of the training pixels (fitted in float64).

    Args:
        train: (n, C, H, W) training images.
        n_components: number of components kept, <= min(n, C*H*W).
        whiten: divide each coordinate by the component's standard deviation.

    Attributes:
        mean: (D,) training mean; components: (n_components, D) orthonormal rows, each signed so its
        largest-magnitude entry is positive; explained_variance: (n_components,); explained_variance_ratio.
    """

    def __init__(self, train: torch.Tensor, n_components: int = 64, whiten: bool = False) -> None:
        x = check_images(train, "train", channels=None)
        x = x.reshape(x.shape[0], -1).to(torch.float64)
        n, d = x.shape
        check_positive_int(n_components, "n_components")
        if n_components > min(n, d):
            raise ValueError(f"n_components must be <= min(n, D) = {min(n, d)}, got {n_components}")
        self.item_shape = tuple(train.shape[1:])
        self.mean = x.mean(0)
        xc = x - self.mean
        if d <= n:  # eigendecomposition of the D x D covariance is cheaper than an SVD of the data
            evals, evecs = torch.linalg.eigh(xc.T @ xc / max(n - 1, 1))
            order = torch.argsort(evals, descending=True)
            var, comps = evals[order].clamp_min(0), evecs[:, order].T
        else:
            _, s, vh = torch.linalg.svd(xc, full_matrices=False)
            var, comps = s.pow(2) / max(n - 1, 1), vh
        signs = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
        comps = comps * signs
        self.components = comps[:n_components].contiguous()
        self.explained_variance = var[:n_components]
        self.explained_variance_ratio = var[:n_components] / var.sum().clamp_min(1e-300)
        self.whiten = whiten
        self.name = f"pca{n_components}" + ("w" if whiten else "")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, channels=None)
        if tuple(x.shape[1:]) != self.item_shape:
            raise ValueError(f"images must have item shape {self.item_shape}, got {tuple(x.shape[1:])}")
        z = (x.reshape(x.shape[0], -1).to(torch.float64) - self.mean) @ self.components.T
        if self.whiten:
            z = z / self.explained_variance.clamp_min(1e-12).sqrt()
        return z.float()


class HOGFeatures(FeatureSpace):
    """Histogram of oriented gradients (skimage.feature.hog), a hand-made descriptor.

    Parameters are skimage's: ``orientations`` bins, ``pixels_per_cell``, ``cells_per_block``, ``block_norm``;
    for a 32x32 image the defaults (9, (8, 8), (2, 2), "L2-Hys") give 3 x 3 blocks x 4 cells x 9 = 324 features.
    RGB images use skimage's multichannel rule (per pixel, the channel with the largest gradient); the
    descriptor is invariant to adding a constant, so centred and [0, 1] images give the same features up to
    the images' scale.
    """

    def __init__(self, orientations: int = 9, pixels_per_cell: tuple[int, int] = (8, 8),
                 cells_per_block: tuple[int, int] = (2, 2), block_norm: str = "L2-Hys",
                 progress: bool | None = None) -> None:
        check_positive_int(orientations, "orientations")
        self.params = dict(orientations=orientations, pixels_per_cell=tuple(pixels_per_cell),
                           cells_per_block=tuple(cells_per_block), block_norm=block_norm)
        self.progress = progress
        self.name = "hog"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from skimage.feature import hog

        x = check_images(images).to(torch.float64).numpy()
        ppc, cpb = self.params["pixels_per_cell"], self.params["cells_per_block"]
        if x.shape[2] < ppc[0] * cpb[0] or x.shape[3] < ppc[1] * cpb[1]:
            raise ValueError(f"images of size {x.shape[2:]} are smaller than one HOG block "
                             f"({ppc[0] * cpb[0]} x {ppc[1] * cpb[1]} pixels)")
        rows = []
        for img in tqdm(x, desc="hog", disable=progress_disabled(self.progress)):
            if img.shape[0] == 1:
                rows.append(hog(img[0], feature_vector=True, **self.params))
            else:
                rows.append(hog(np.moveaxis(img, 0, -1), channel_axis=-1, feature_vector=True, **self.params))
        return torch.from_numpy(np.stack(rows)).float()


class _ConvAutoencoder(nn.Module):
    """Three stride-2 4x4 convs (W, 2W, 4W channels, SiLU) -> linear latent; a mirrored decoder."""

    def __init__(self, channels: int, height: int, width_px: int, latent_dim: int, width: int, variational: bool):
        super().__init__()
        self.shape = (4 * width, height // 8, width_px // 8)
        flat = math.prod(self.shape)
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.SiLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), nn.SiLU(), nn.Flatten(),
            nn.Linear(flat, 2 * latent_dim if variational else latent_dim))
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, flat), nn.Unflatten(1, self.shape), nn.SiLU(),
            nn.ConvTranspose2d(4 * width, 2 * width, 4, 2, 1), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.SiLU(), nn.ConvTranspose2d(width, channels, 4, 2, 1))
        self.latent_dim, self.variational = latent_dim, variational

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.encoder(x)
        return (h[:, :self.latent_dim], h[:, self.latent_dim:]) if self.variational else (h, None)


class AutoencoderFeatures(FeatureSpace):
    """Latent of a small conv autoencoder (or VAE: the posterior mean) trained on the training images.

    Training: images standardised by the training set's scalar mean and std; Adam; loss = per-pixel MSE
    (+ ``kl_weight`` * KL / number of pixels for the VAE); ``steps`` minibatches of ``batch_size`` drawn with
    ``seed``. The trained weights are cached on disk keyed by the full configuration and a fingerprint of
    the training images (``cache``: None/True -> ``<cache root>/autoencoders``, a path, or False), written
    atomically; a second construction with the same inputs loads instead of training.

    Args:
        train: (n, C, H, W) training images, H and W multiples of 8.
        latent_dim: feature dimension.
        variational: train a VAE instead of a plain autoencoder.
        steps, batch_size, lr, width, kl_weight, seed: training configuration.
        cache: cache folder control (above).
        progress: tqdm bar during training (None: auto).
        device: torch device of training and encoding (the minibatch indices and the VAE noise are drawn on
            the CPU, so a run on another device sees the same batches; not part of the cache key).

    Attributes:
        losses: training loss per step (numpy), also restored from the cache.
        device: where the network lives; features are returned on the CPU.
    """

    def __init__(self, train: torch.Tensor, latent_dim: int = 32, variational: bool = False, steps: int = 400,
                 batch_size: int = 128, lr: float = 1e-3, width: int = 32, kl_weight: float = 0.01, seed: int = 0,
                 cache: str | os.PathLike | bool | None = None, progress: bool | None = None,
                 device: str | torch.device = "cpu") -> None:
        x = check_images(train, "train", channels=None).float()
        self.device = torch.device(device)
        n, c, h, w = x.shape
        if h % 8 or w % 8:
            raise ValueError(f"train images need H and W divisible by 8, got {h} x {w}")
        for value, label in ((latent_dim, "latent_dim"), (steps, "steps"), (batch_size, "batch_size"),
                             (width, "width")):
            check_positive_int(value, label)
        self.config = dict(version=_AE_VERSION, latent_dim=latent_dim, variational=bool(variational), steps=steps,
                           batch_size=batch_size, lr=float(lr), width=width, kl_weight=float(kl_weight), seed=seed,
                           item_shape=[c, h, w])
        self.name = ("vae" if variational else "ae") + str(latent_dim)
        self.mean, self.std = float(x.mean()), float(x.std().clamp_min(1e-8))
        with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
            torch.manual_seed(seed)
            self.net = _ConvAutoencoder(c, h, w, latent_dim, width, bool(variational))
        path = None
        if cache is not False:
            folder = cache_dir("autoencoders") if cache in (None, True) else Path(cache)
            folder.mkdir(parents=True, exist_ok=True)
            key = json.dumps(self.config, sort_keys=True) + "|" + tensor_fingerprint(x)
            path = folder / f"{self.name}_{hashlib.sha256(key.encode()).hexdigest()[:24]}.pt"
        self.from_cache = path is not None and path.is_file()
        self.net.to(self.device)
        if self.from_cache:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(blob["state_dict"])
            self.losses = blob["losses"].numpy()
        else:
            self.losses = self._train(x, progress)
            if path is not None:
                self._save(path)
        self.net.eval()

    def _train(self, x: torch.Tensor, progress: bool | None) -> np.ndarray:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg["seed"])  # minibatches and VAE noise
        z = ((x - self.mean) / self.std).to(self.device)
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"])
        losses = np.empty(cfg["steps"])
        self.net.train()
        for step in tqdm(range(cfg["steps"]), desc=f"train {self.name}", disable=progress_disabled(progress)):
            idx = torch.randint(0, z.shape[0], (min(cfg["batch_size"], z.shape[0]),), generator=gen)
            batch = z[idx.to(self.device)]
            mu, logvar = self.net.encode(batch)
            if logvar is not None:
                latent = mu + torch.randn(mu.shape, generator=gen).to(self.device) * (0.5 * logvar).exp()
                kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1).mean() / batch[0].numel()
            else:
                latent, kl = mu, torch.zeros((), device=self.device)
            loss = (self.net.decoder(latent) - batch).pow(2).mean() + cfg["kl_weight"] * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses[step] = float(loss.detach())
        return losses

    def _save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            torch.save({"state_dict": {k: v.cpu() for k, v in self.net.state_dict().items()},
                        "losses": torch.from_numpy(self.losses),
                        "config": json.dumps(self.config)}, tmp)

    def __call__(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        x = check_images(images, channels=None).float()
        if list(x.shape[1:]) != self.config["item_shape"]:
            raise ValueError(f"images must have item shape {tuple(self.config['item_shape'])}, "
                             f"got {tuple(x.shape[1:])}")
        with torch.no_grad():
            return torch.cat([self.net.encode(((x[s:s + batch_size] - self.mean) / self.std).to(self.device))[0].cpu()
                              for s in range(0, x.shape[0], batch_size)])


class InceptionFeatures(FeatureSpace):
    """2048-d pool features of the FID network (kpe_lib.metrics.fid).

    Args:
        value_range: (lo, hi) range of the images given; they are mapped linearly to [0, 1] first (e.g.
            ``(-m, 1 - m)`` for images centred by a scalar mean m).
        batch_size, device: as :func:`~kpe_lib.metrics.fid.inception_features`.
    """

    name = "inception"

    def __init__(self, value_range: tuple[float, float] = (0.0, 1.0), batch_size: int | None = None,
                 device: str = "cpu",
                 progress: bool | None = None) -> None:
        lo, hi = map(float, value_range)
        if not hi > lo:
            raise ValueError(f"value_range must be (lo, hi) with hi > lo, got {value_range!r}")
        self.value_range, self.batch_size, self.device, self.progress = (lo, hi), batch_size, device, progress

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        lo, hi = self.value_range
        x = (check_images(images).float() - lo) / (hi - lo)
        return inception_features(x, self.batch_size, self.device, self.progress)


class ClassifierFeatures(FeatureSpace):
    """Penultimate features of a classifier: any module with ``.features(x) -> (N, ...)``, in eval mode."""

    def __init__(self, model: nn.Module, batch_size: int = 256, name: str = "classifier") -> None:
        if not callable(getattr(model, "features", None)):
            raise ValueError("model must have a callable .features(x) method (e.g. kpe_lib.models.Classifier)")
        check_positive_int(batch_size, "batch_size")
        self.model, self.batch_size, self.name = model, batch_size, name

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, channels=None)
        was_training = getattr(self.model, "training", False)
        device = next(iter(self.model.parameters()), torch.empty(0)).device
        self.model.eval()
        try:
            with torch.no_grad():
                out = [self.model.features(x[s:s + self.batch_size].to(device)).flatten(1).float().cpu()
                       for s in range(0, x.shape[0], self.batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(out)


_REGISTRY: dict[str, Callable[..., FeatureSpace]] = {
    "pixels": lambda train, **kw: PixelFeatures(**kw),
    "pca": lambda train, **kw: PCAFeatures(_need(train, "pca"), **kw),
    "hog": lambda train, **kw: HOGFeatures(**kw),
    "autoencoder": lambda train, **kw: AutoencoderFeatures(_need(train, "autoencoder"), **kw),
    "vae": lambda train, **kw: AutoencoderFeatures(_need(train, "vae"), variational=True, **kw),
    "inception": lambda train, **kw: InceptionFeatures(**kw),
    "classifier": lambda train, **kw: ClassifierFeatures(**kw),
}
FEATURE_SPACES = tuple(_REGISTRY)


def _need(train: torch.Tensor | None, name: str) -> torch.Tensor:
    if train is None:
        raise ValueError(f"feature space {name!r} is fitted on the training images: pass train=(n, C, H, W)")
    return train


def feature_space(name: str, train: torch.Tensor | None = None, **kwargs: Any) -> FeatureSpace:
    """Build a feature space by name (Mathematics §5).

    Args:
        name: one of "pixels", "pca", "hog", "autoencoder", "vae", "inception", "classifier".
        train: training images, required by "pca", "autoencoder" and "vae".
        **kwargs: the space's own arguments (e.g. ``n_components=64``; ``model=clf`` for "classifier").

    Example:
        >>> space = feature_space("pca", train=torch.rand(100, 1, 8, 8), n_components=10)
        >>> space(torch.rand(5, 1, 8, 8)).shape
        torch.Size([5, 10])
    """
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {FEATURE_SPACES}, got {name!r}")
    return _REGISTRY[name](train, **kwargs)
