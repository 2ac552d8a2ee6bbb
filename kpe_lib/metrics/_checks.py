"""Input validation and small shared helpers for the metrics package."""
from __future__ import annotations

import hashlib
import numbers
import os
from pathlib import Path

import numpy as np
import torch

from kpe_lib._numbers import as_int


def as_matrix(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """Return ``x`` as a CPU tensor of shape (M, D), flattening trailing dimensions; reject bad input."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array of shape (M, ...), got {type(x).__name__}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (M, ...) with M >= 1 and at least 2 dimensions, got {tuple(x.shape)}")
    x = x.detach().cpu().reshape(x.shape[0], -1)
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature per item, got shape {tuple(x.shape)}")
    if x.dtype.is_floating_point and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def as_vector(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as a 1-D float64 numpy array; reject other shapes and non-finite values."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"{name} must be a 1-D array with at least one entry, got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def check_images(images: torch.Tensor, name: str = "images", channels: tuple[int, ...] | None = (1, 3)
                 ) -> torch.Tensor:
    """Check an image batch of shape (N, C, H, W) with C in ``channels`` (None: any); return it detached on CPU."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"{name} must be a tensor of shape (N, C, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if images.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one image")
    if channels is not None and images.shape[1] not in channels:
        raise ValueError(f"{name} must have C in {channels} channels, got C = {images.shape[1]}")
    if images.dtype.is_floating_point and not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return images.detach().cpu()


def check_positive_int(value: int, name: str) -> int:
    """``value`` as an int >= 1 (any integer type; booleans refused); ValueError naming ``name`` otherwise."""
    return as_int(value, name, minimum=1)


def progress_disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` value: None (auto: only on a terminal) unless told, always off when env CI is set."""
    if os.environ.get("CI"):
        return True
    return None if progress is None else not progress


def cache_dir(sub: str, root: str | os.PathLike | None = None) -> Path:
    """The on-disk cache folder ``<root>/<sub>``; root defaults to the project's cache root (env KPE_CACHE, else
    ``$XDG_CACHE_HOME/kpe_lib``, see kpe_lib.data.roots.cache_root)."""
    from kpe_lib.data.roots import cache_root

    path = (Path(root) if root is not None else cache_root()) / sub
    path.mkdir(parents=True, exist_ok=True)
    return path


def tensor_fingerprint(x: torch.Tensor) -> str:
    """sha256 hex digest of a tensor's shape, dtype and bytes (content-addressed cache keys)."""
    x = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}|".encode())
    h.update(x.numpy().tobytes() if x.dtype != torch.bfloat16 else x.float().numpy().tobytes())
    return h.hexdigest()


def check_level(level: float) -> float:
    """A coverage level in (0, 1) as a float (ValueError naming ``level`` otherwise)."""
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    return float(level)


def as_features(x: torch.Tensor | np.ndarray, name: str, min_rows: int = 2) -> torch.Tensor:
    """(n, d) float64 CPU tensor of a 2-D tensor/array with n >= min_rows rows (ValueError naming ``name``)."""
    if isinstance(x, (torch.Tensor, np.ndarray)) and x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (n, d) tensor or array, got shape {tuple(x.shape)}")
    t = as_matrix(x, name)
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} must have at least {min_rows} rows (n >= {min_rows}) for the unbiased estimator, "
                         f"got {t.shape[0]}")
    return t.to(torch.float64)


def check_same_dim(x: torch.Tensor, y: torch.Tensor, name_x: str, name_y: str) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"{name_y} must have the same number of features d as {name_x} ({x.shape[1]}), "
                         f"got {y.shape[1]}")


def read_reference_cache(path: Path, n: int) -> dict[str, np.ndarray] | None:
    """The arrays of a reference-statistics cache file when they are what the file claims, else None.

    Valid: readable, with ``mu`` (d,), ``sigma`` (d, d), ``n`` equal to the ``n`` reference images and
    ``features`` (n, d), all finite. An unreadable or mismatching file is reported by a warning naming it
    and the problem (the caller recomputes and overwrites it); an older file without features gives None.
    """
    import warnings

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # BadZipFile, ValueError, OSError, EOFError ... for a damaged file
        warnings.warn(f"ignoring unreadable FID reference cache {path} ({type(exc).__name__}: {exc}); "
                      "recomputing it", stacklevel=3)
        return None
    if "features" not in arrays:  # older cache files hold the statistics only: recompute those
        return None
    mu, sigma, feats, count = (arrays.get(k) for k in ("mu", "sigma", "features", "n"))
    if mu is None or sigma is None or count is None or mu.ndim != 1:
        problem = "it lacks mu, sigma or n"
    elif sigma.shape != (mu.shape[0],) * 2 or feats.shape != (n, mu.shape[0]) or int(count) != n:
        problem = (f"its shapes (mu {mu.shape}, sigma {sigma.shape}, features {feats.shape}, n {int(count)}) do "
                   f"not fit {n} reference images")
    elif not (np.isfinite(mu).all() and np.isfinite(sigma).all() and np.isfinite(feats).all()):
        problem = "it holds NaN or infinite values"
    else:
        return arrays
    warnings.warn(f"ignoring FID reference cache {path}: {problem}; recomputing it", stacklevel=3)
    return None
