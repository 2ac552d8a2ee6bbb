"""CIFAR-10 from its official "python version" layout (Krizhevsky 2009), without torchvision.

Accepted on disk, under the data root ``R`` (``kpe_lib.data.data_root``) or ``R/cifar10``:

- the folder ``cifar-10-batches-py/`` with any subset of ``data_batch_1`` ... ``data_batch_5``,
  ``test_batch`` and ``batches.meta`` (``R`` may also be that folder itself);
- the official archive ``cifar-10-python.tar.gz``, read member by member (no extraction).

Each batch is a pickled dict (Python-2 strings, so keys are bytes under ``encoding="bytes"``) with
``data``: uint8 (10000, 3072), rows of 1024 R, 1024 G, 1024 B values, each plane row-major 32x32;
``labels``: list of ints; ``filenames``. Batches are unpickled with a restricted unpickler that admits
only the NumPy array-rebuilding globals these files use.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from kpe_lib._numbers import as_bool, as_int
from kpe_lib.data.cache import download_url, file_md5
from kpe_lib.data.images import ImageData, preprocess
from kpe_lib.data.roots import DataError, PartialDataWarning, ResolvedRoot, resolve_root

__all__ = ["load_cifar10", "download_cifar10", "CIFAR10_URL", "CIFAR10_MD5", "CIFAR10_CLASSES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCHES = ("test_batch",)
META = "batches.meta"

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _unpickle(blob: bytes, where: str) -> dict[str, Any]:
    """Load one batch dict; keys (bytes or str) become str; bytes values stay as they are."""
    try:
        obj = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:
        raise DataError(f"cannot read CIFAR-10 file {where}: not a valid batch pickle ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"cannot read CIFAR-10 file {where}: expected a dict, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _bytes(v: bytes | Path) -> bytes:
    try:
        return v.read_bytes() if isinstance(v, Path) else v
    except OSError as exc:
        raise DataError(f"cannot read CIFAR-10 file {v}: {exc}") from exc


def _text(v: Any) -> str:
    return v.decode("latin1") if isinstance(v, bytes) else str(v)


@dataclass
class _Source:
    kind: str  # "folder" or "archive"
    path: Path

    def read(self, members: list[str]) -> dict[str, bytes | Path]:
        """The requested members that exist (absent ones are left out): a file path (read lazily, so a small
        ``n`` reads one batch) for a folder, the raw bytes for an archive (one sequential pass)."""
        if self.kind == "folder":
            return {m: self.path / m for m in members if (self.path / m).is_file()}
        found: dict[str, bytes | Path] = {}
        try:
            with tarfile.open(self.path, "r:*") as tar:
                for info in tar:
                    p = PurePosixPath(info.name)
                    if info.isfile() and p.parent.name == FOLDER and p.name in members:
                        found[p.name] = tar.extractfile(info).read()  # type: ignore[union-attr]
                        if len(found) == len(members):
                            break
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"cannot read CIFAR-10 archive {self.path}: {exc}") from exc
        return found


def _missing_message(root: ResolvedRoot, wanted: tuple[str, ...]) -> str:
    bases = [root.path, root.path / "cifar10"]
    looked = [str(b / FOLDER) for b in bases] + [str(b / ARCHIVE) for b in bases]
    return (
        f"CIFAR-10 not found under the data root {root.describe()}. Looked for the folder / archive: "
        + ", ".join(looked)
        + f". Expected files ({FOLDER}/): " + ", ".join(wanted) + f" (+ {META}). "
        f"Get the official 'CIFAR-10 python version' from {CIFAR10_URL} (MD5 {CIFAR10_MD5}) and put the "
        f"archive or its unpacked {FOLDER}/ folder under {root.path / 'cifar10'}, set KPE_DATA to the folder "
        "that holds it, or call load_cifar10(download=True)."
    )


def _locate(root: ResolvedRoot, wanted: tuple[str, ...]) -> tuple[_Source | None, _Source | None]:
    """(best complete-or-archive source, best partial folder)."""
    folders = [root.path / FOLDER, root.path / "cifar10" / FOLDER]
    if root.path.name == FOLDER:
        folders.insert(0, root.path)
    partial = None
    for d in folders:
        present = [m for m in wanted if (d / m).is_file()]
        if len(present) == len(wanted):
            return _Source("folder", d), None
        if present and partial is None:
            partial = _Source("folder", d)
    for a in (root.path / ARCHIVE, root.path / "cifar10" / ARCHIVE):
        if a.is_file():
            return _Source("archive", a), partial
    return None, partial


def download_cifar10(root: str | os.PathLike[str] | None = None) -> Path:
    """Download the official archive to ``<root>/cifar10/cifar-10-python.tar.gz`` (MD5-checked, atomic).

    An archive already there with the right MD5 is kept. Uses the module's ``CIFAR10_URL`` / ``CIFAR10_MD5``.

    Returns:
        Path of the verified archive.
    """
    dest = resolve_root(root).path / "cifar10" / ARCHIVE
    if dest.is_file() and file_md5(dest) == CIFAR10_MD5:
        return dest
    return download_url(CIFAR10_URL, dest, CIFAR10_MD5)


def load_cifar10(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    n: int | None = None,
    grayscale: bool = False,
    size: int = 32,
    center: bool = False,
    mean: float | torch.Tensor | None = None,
    download: bool = False,
) -> ImageData:
    """Load CIFAR-10 images and labels as float tensors.

    Args:
        root: data root (else ``KPE_DATA``, else the user cache; see ``data_root``).
        split: ``"train"`` (data_batch_1..5 in order) or ``"test"`` (test_batch).
        n: keep the first ``n`` images of the split (``None``: all present).
        grayscale: convert to 1 channel by BT.601 luma (``images.preprocess``).
        size: output side; 32 keeps the originals, other values resize (bilinear, antialiased).
        center: subtract one scalar mean (Mathematics §6 convention). For ``split="train"`` it is the mean of the
            loaded images; for ``"test"`` pass the training set's ``mean`` explicitly.
        mean: value to subtract when ``center=True`` (overrides the computed one).
        download: fetch the official archive (MD5-checked) when no complete copy is found.

    Returns:
        ``ImageData`` with images (N, 3 or 1, size, size) float32, labels (N,) long, class names from
        ``batches.meta`` (official names if that file is absent), names from the batches' ``filenames``.

    Raises:
        DataError: no copy found, or a file is corrupt (the message names it).
        ValueError: bad arguments, or ``n`` larger than the images present.

    Warns:
        PartialDataWarning: once, naming the missing batch files, when all images were requested
            from an incomplete copy (or ``batches.meta`` is absent).

    Example:
        >>> train = load_cifar10(split="train", n=1000)      # doctest: +SKIP
        >>> train.images.shape, train.labels.shape            # doctest: +SKIP
        (torch.Size([1000, 3, 32, 32]), torch.Size([1000]))
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    n = as_int(n, "n", minimum=1, or_none=True)
    size = as_int(size, "size", minimum=1)
    grayscale, center, download = (as_bool(grayscale, "grayscale"), as_bool(center, "center"),
                                   as_bool(download, "download"))
    if mean is not None and not center:
        raise ValueError("mean is only used with center=True")
    if center and mean is None and split != "train":
        raise ValueError("center=True with split='test' needs mean= (the training set's ImageData.mean)")
    root_r = resolve_root(root)
    wanted = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    source, partial = _locate(root_r, wanted)
    if source is None and download:
        source = _Source("archive", download_cifar10(root_r.path))
    source = source or partial
    if source is None:
        raise DataError(_missing_message(root_r, wanted))

    blobs = source.read(list(wanted) + [META])
    present = [m for m in wanted if m in blobs]
    if not present:
        raise DataError(f"{source.path} holds none of {', '.join(wanted)}. " + _missing_message(root_r, wanted))
    rows, labels, names, total = [], [], [], 0
    for m in present:
        batch = _unpickle(_bytes(blobs[m]), f"{source.path}/{m}" if source.kind == "folder" else f"{source.path}:{m}")
        data = np.asarray(batch.get("data"))
        lab = batch.get("labels")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or lab is None or len(lab) != len(data):
            raise DataError(f"CIFAR-10 file {source.path}/{m} is corrupt: expected uint8 data (k, 3072) and k labels")
        lab = np.asarray(lab, dtype=np.int64)
        if lab.size and (lab.min() < 0 or lab.max() > 9):
            raise DataError(f"CIFAR-10 file {source.path}/{m} is corrupt: labels outside 0..9")
        take = len(data) if n is None else min(len(data), n - total)
        rows.append(data[:take])
        labels.append(lab[:take])
        fn = batch.get("filenames")
        if fn is not None and len(fn) == len(data):
            names.extend(_text(f) for f in fn[:take])
        else:
            names.extend(f"{m}_{i}" for i in range(take))
        total += take
        if n is not None and total >= n:
            break
    missing = [m for m in wanted if m not in blobs]
    if n is not None and total < n:
        raise ValueError(f"n={n} but only {total} CIFAR-10 {split} images are present in {source.path}"
                         + (f" (missing: {', '.join(missing)})" if missing else ""))
    meta = _unpickle(_bytes(blobs[META]), f"{source.path}/{META}") if META in blobs else {}
    if (missing and n is None) or not meta:
        gone = (missing if n is None else []) + ([] if meta else [META])
        warnings.warn(f"CIFAR-10 at {source.path} is incomplete: {', '.join(gone)} missing; using "
                      f"{', '.join(present)} ({total} {split} images)"
                      + ("" if meta else "; official class names assumed"), PartialDataWarning, stacklevel=2)
    class_names = [_text(c) for c in meta["label_names"]] if "label_names" in meta else list(CIFAR10_CLASSES)

    raw = torch.from_numpy(np.concatenate(rows)).view(-1, 3, 32, 32)
    chunks = [preprocess(c.float().div_(255.0), size, grayscale) for c in raw.split(4096)]
    images = torch.cat(chunks)
    scale, sub = "[0,1]", 0.0
    if center:
        sub = float(images.double().mean()) if mean is None else mean
        images = images - (sub.to(images) if isinstance(sub, torch.Tensor) else sub)
        scale = "[0,1]-mean"
    return ImageData(
        images=images, labels=torch.from_numpy(np.concatenate(labels)), mean=sub, scale=scale, names=names,
        class_names=class_names, source=str(source.path), split=split,
        settings=dict(dataset="cifar10", split=split, n=n, grayscale=grayscale, size=size, center=center),
    )
