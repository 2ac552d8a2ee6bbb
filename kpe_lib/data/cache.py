"""Small file utilities for the data loaders: atomic writes, settings-keyed caches, downloads, progress.

Nothing here leaves a half-written file behind: every write goes to a temporary name in the destination
folder and is renamed into place with ``os.replace`` (atomic on POSIX and Windows).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm  # text bars: tqdm.auto warns in kernels without ipywidgets

from kpe_lib._files import atomic_path
from kpe_lib.data.roots import ChecksumError, DataError, cache_root

__all__ = [
    "progress",
    "atomic_path",
    "settings_hash",
    "decoded_cache_dir",
    "load_npz",
    "save_npz",
    "valid_image_cache",
    "file_md5",
    "download_url",
]

T = TypeVar("T")


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """A tqdm bar that hides itself when not interactive (``disable=None``) or when ``CI`` is set."""
    disable = True if os.environ.get("CI") else None
    return tqdm(iterable, disable=disable, **kwargs)


def settings_hash(settings: dict[str, Any]) -> str:
    """SHA-256 (hex) of a JSON-serialisable settings dict, key order irrelevant."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def decoded_cache_dir(cache: bool | str | os.PathLike[str]) -> Path | None:
    """Folder for decoded-tensor caches.

    Args:
        cache: ``True`` -> ``cache_root() / "decoded"``; a path -> that folder; ``False`` -> no cache.

    Returns:
        The folder, or ``None`` when caching is off.
    """
    if cache is False:
        return None
    if cache is True:
        return cache_root() / "decoded"
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache).expanduser()
    raise ValueError(f"cache must be True, False or a folder path, got {cache!r}")


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Arrays of a cache file, or ``None`` if it is absent or unreadable (a warning says so; it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as exc:  # a damaged cache is not fatal: it is recomputed and overwritten
        warnings.warn(f"ignoring unreadable cache file {path} ({exc}); rebuilding it", stacklevel=3)
        return None


#: Float rounding of decoding and antialiased resizing leaves values a few ulps outside [0, 1] (1.0000002).
RANGE_SLACK = 1e-4


def valid_image_cache(arrays: dict[str, np.ndarray], path: Path, names: list[str], shape: tuple[int, ...],
                      key: str) -> bool:
    """Whether a decoded-image cache holds what its name claims: ``key``, ``names`` and float32 ``images`` of
    ``shape`` with every value in [0, 1]. A warning names the file and the mismatch when it does not (the
    caller then rebuilds it)."""
    images = arrays.get("images")
    stored_key = arrays.get("key")
    stored_names = arrays.get("names")
    if stored_key is None or str(stored_key) != key:
        problem = "it was written for other settings or files"
    elif stored_names is None or stored_names.tolist() != names:
        problem = "its image names differ from the selected files"
    elif images is None or images.dtype != np.float32 or images.shape != shape:
        got = "no images" if images is None else f"{images.dtype} {images.shape}"
        problem = f"it holds {got}, expected float32 {shape}"
    elif not np.isfinite(images).all() or images.min(initial=0.0) < -RANGE_SLACK \
            or images.max(initial=0.0) > 1.0 + RANGE_SLACK:
        problem = "its images hold NaN, infinite values or values outside [0, 1]"
    else:
        return True
    warnings.warn(f"ignoring cache file {path}: {problem}; rebuilding it", stacklevel=3)
    return False


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` (uncompressed .npz) atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def file_md5(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """MD5 hex digest of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_size), b""):
            h.update(block)
    return h.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike[str],
    md5: str | None = None,
    *,
    opener: Callable[[str], Any] = urllib.request.urlopen,
    chunk_size: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest``, checking the MD5 before the file appears under its final name.

    Args:
        url: any URL ``opener`` understands (``http(s)://``, ``file://``).
        dest: final file path; its folder is created.
        md5: expected hex digest; ``None`` skips the check.
        opener: ``url -> file-like`` with ``read(n)`` (and optionally ``headers``), closed after use;
            replaceable in tests.
        chunk_size: bytes per read.

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        ChecksumError: the digest differs; nothing is left at ``dest`` or under a temporary name.
        DataError: the URL could not be read.
    """
    dest = Path(dest)
    digest = hashlib.md5()
    try:
        with atomic_path(dest) as tmp:
            try:
                response = opener(url)
            except OSError as exc:
                raise DataError(f"could not download {url}: {exc}") from exc
            with contextlib.closing(response), open(tmp, "wb") as out:
                headers = getattr(response, "headers", None)
                total = headers.get("Content-Length") if headers is not None else None
                bar = tqdm(total=int(total) if total else None, unit="B", unit_scale=True,
                           desc=dest.name, disable=True if os.environ.get("CI") else None)
                with bar:
                    for block in iter(lambda: response.read(chunk_size), b""):
                        out.write(block)
                        digest.update(block)
                        bar.update(len(block))
            if md5 is not None and digest.hexdigest() != md5.lower():
                raise ChecksumError(
                    f"MD5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}; "
                    f"the download was discarded and nothing was written to {dest}"
                )
    except OSError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"could not download {url} to {dest}: {exc}") from exc
    return dest
