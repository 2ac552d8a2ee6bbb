"""CelebA (aligned and cropped) with the paper's preprocessing (Mathematics §6), decoded by Pillow and cached.

Accepted on disk, under the data root ``R`` (``kpe_lib.data.data_root``), ``R/celeba`` or ``R/CelebA``:

- ``img_align_celeba/`` holding the official JPEGs (``000001.jpg`` ...),
- ``list_eval_partition.txt`` (``<file> <0|1|2>`` per line: 0 train, 1 valid, 2 test),
- optionally ``list_attr_celeba.txt`` (count line, 40 attribute names, then ``<file> <40 x +-1>``).

The images of a split are the partition file's entries in natural-sorted order (``"2.jpg" < "10.jpg"``);
the training set of the paper is items ``[index * n, (index + 1) * n)`` of that order (n = 1024, index = 0).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from kpe_lib._numbers import as_bool, as_int
from kpe_lib.data.cache import decoded_cache_dir, load_npz, progress, save_npz, settings_hash, valid_image_cache
from kpe_lib.data.images import ImageData, preprocess
from kpe_lib.data.roots import DataError, PartialDataWarning, ResolvedRoot, natural_sorted, resolve_root

__all__ = ["load_celeba", "celeba_files", "decode_image", "CELEBA_URL", "CELEBA_SPLITS"]

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2, "all": None}
IMG_DIR = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
ATTRIBUTES = "list_attr_celeba.txt"
_CACHE_VERSION = 1  # bump when the decoding or preprocessing changes


def _missing_message(root: ResolvedRoot, detail: str) -> str:
    bases = [root.path, root.path / "celeba", root.path / "CelebA"]
    return (
        f"CelebA not found under the data root {root.describe()}: {detail}. Looked in "
        + ", ".join(str(b) for b in bases)
        + f" for {IMG_DIR}/ (the aligned JPEGs 000001.jpg ... 202599.jpg) and {PARTITION} "
        f"(optional: {ATTRIBUTES}). Get 'Align&Cropped Images' (img_align_celeba.zip) and the 'Eval' and "
        f"'Anno' files from {CELEBA_URL}, unpack them into {root.path / 'celeba'}, or set KPE_DATA to the "
        "folder that holds them. (No automatic download: CelebA is distributed through Google Drive under a "
        "non-commercial research agreement.)"
    )


def _locate(root: ResolvedRoot) -> Path:
    for base in (root.path, root.path / "celeba", root.path / "CelebA"):
        if (base / IMG_DIR).is_dir():
            if not (base / PARTITION).is_file():
                raise DataError(_missing_message(root, f"{base / IMG_DIR} exists but {base / PARTITION} is missing"))
            return base
    raise DataError(_missing_message(root, f"no {IMG_DIR}/ folder"))


def _read_partition(path: Path) -> dict[str, int]:
    part: dict[str, int] = {}
    first_line: dict[str, int] = {}
    # utf-8-sig: a byte-order mark (an editor's) is not part of the first file name
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise DataError(f"corrupt CelebA partition file {path}, line {lineno}: {line.strip()!r} "
                                "(expected '<file name> <0|1|2>')")
            if fields[0] in part:
                raise DataError(f"corrupt CelebA partition file {path}: {fields[0]!r} is listed twice, on lines "
                                f"{first_line[fields[0]]} and {lineno} (each image must be in one split)")
            part[fields[0]] = int(fields[1])
            first_line[fields[0]] = lineno
    return part


def _read_attributes(path: Path, names: list[str]) -> tuple[Tensor, list[str]] | None:
    """(N, 40) long of +-1 for ``names`` and the attribute names, or ``None`` (with a warning) if incomplete."""
    with open(path, encoding="utf-8", errors="replace") as f:
        f.readline()  # image count
        attr_names = f.readline().split()
        rows = {}
        for line in f:
            head, _, rest = line.strip().partition(" ")
            if head:
                rows[head] = rest
    absent = [m for m in names if m not in rows]
    if absent:
        warnings.warn(f"{path} has no row for {len(absent)} selected image(s), e.g. {absent[0]}; "
                      "attributes left out", PartialDataWarning, stacklevel=3)
        return None
    try:
        values = np.array([rows[m].split() for m in names], dtype=np.int64).reshape(len(names), len(attr_names))
    except ValueError as exc:
        raise DataError(f"corrupt CelebA attribute file {path}: {exc}") from exc
    return torch.from_numpy(values), attr_names


def celeba_files(root: str | os.PathLike[str] | None = None, split: str = "train") -> list[str]:
    """File names of a CelebA split in natural-sorted order (the order the paper indexes).

    Args:
        root: data root (see ``data_root``).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.

    Returns:
        Names such as ``["000002.jpg", "000058.jpg", ...]`` from ``list_eval_partition.txt``.
    """
    if split not in CELEBA_SPLITS:
        raise ValueError(f"split must be one of {sorted(CELEBA_SPLITS)}, got {split!r}")
    base = _locate(resolve_root(root))
    code = CELEBA_SPLITS[split]
    return natural_sorted([k for k, v in _read_partition(base / PARTITION).items() if code is None or v == code])


def decode_image(path: str | os.PathLike[str]) -> Tensor:
    """Decode one image file with Pillow to (3, H, W) float32 RGB in [0, 1]."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def load_celeba(
    root: str | os.PathLike[str] | None = None,
    split: str = "train",
    n: int | None = 1024,
    index: int = 0,
    size: int = 32,
    grayscale: bool = True,
    center: bool = True,
    mean: float | Tensor | None = None,
    cache: bool | str | os.PathLike[str] = True,
) -> ImageData:
    """Load CelebA images preprocessed as in the paper (Mathematics §6).

    Pipeline per image (``images.preprocess``): Pillow decode to RGB in [0, 1] -> resize the short side to
    ``size`` (bilinear, antialiased) -> centre crop ``size x size`` -> BT.601 luma grayscale (1 channel).

    Args:
        root: data root (else ``KPE_DATA``, else the user cache; see ``data_root``).
        split: ``"train"``, ``"valid"``, ``"test"`` (official partition 0/1/2) or ``"all"``.
        n: images per block; the result is items ``[index * n, (index + 1) * n)`` of the split in natural
            order. ``None``: the whole split (``index`` must be 0).
        index: which block of ``n``.
        size: output side length.
        grayscale: 1 channel (paper) or 3.
        center: subtract ONE scalar, the training-set mean, recorded in ``mean`` (paper). For
            ``split="train"`` it is computed from the loaded set; for other splits pass ``mean=``
            (the training set's ``ImageData.mean``) so both live in the same space.
        mean: value to subtract when ``center=True`` (overrides the computed one).
        cache: ``True`` caches the decoded (uncentred) tensors in ``cache_root()/decoded``, a path caches
            there, ``False`` disables it. The key hashes every setting and the selected files' names,
            sizes and modification times, so changed files are decoded again; a cache file whose contents do
            not match its settings (another size, other names, NaN or values outside [0, 1]) is rebuilt.

    Returns:
        ``ImageData``: images (N, 1 or 3, size, size) float32, ``names`` the file names, ``attributes``
        (N, 40) and ``attribute_names`` when ``list_attr_celeba.txt`` is present, ``labels`` None.

    Raises:
        DataError: files missing or corrupt (the message names the file and how to get the data).
        ValueError: bad arguments, or fewer images than ``index``/``n`` ask for (says how many exist).

    Example:
        >>> train = load_celeba(n=1024)                     # doctest: +SKIP
        >>> train.images.shape, train.scale                   # doctest: +SKIP
        (torch.Size([1024, 1, 32, 32]), '[0,1]-mean')
    """
    if split not in CELEBA_SPLITS:
        raise ValueError(f"split must be one of {sorted(CELEBA_SPLITS)}, got {split!r}")
    n = as_int(n, "n", minimum=1, or_none=True)
    index = as_int(index, "index", minimum=0)
    if n is None and index != 0:
        raise ValueError("index must be 0 when n is None (the whole split)")
    size = as_int(size, "size", minimum=1)
    grayscale, center = as_bool(grayscale, "grayscale"), as_bool(center, "center")
    if mean is not None and not center:
        raise ValueError("mean is only used with center=True")
    if center and mean is None and split != "train":
        raise ValueError(f"center=True with split={split!r} needs mean= (the training set's ImageData.mean)")
    cache_dir = decoded_cache_dir(cache)

    root_r = resolve_root(root)
    base = _locate(root_r)
    code = CELEBA_SPLITS[split]
    all_names = natural_sorted([k for k, v in _read_partition(base / PARTITION).items() if code is None or v == code])
    start, stop = (0, len(all_names)) if n is None else (index * n, (index + 1) * n)
    if stop > len(all_names):
        raise ValueError(f"CelebA split {split!r} at {base} has {len(all_names)} images; index={index}, n={n} "
                         f"needs items [{start}, {stop})")
    names = all_names[start:stop]

    img_dir = base / IMG_DIR
    stats, absent = [], []
    for m in names:
        try:
            st = os.stat(img_dir / m)
            stats.append((m, st.st_size, st.st_mtime_ns))
        except OSError:
            absent.append(m)
    if absent:
        raise DataError(f"{len(absent)} image(s) listed in {base / PARTITION} are missing from {img_dir}, e.g. "
                        + ", ".join(absent[:5]) + ". " + _missing_message(root_r, "incomplete image folder"))

    settings = dict(dataset="celeba", split=split, n=n, index=index, size=size, grayscale=grayscale)
    key = settings_hash(dict(settings, version=_CACHE_VERSION, folder=str(img_dir.resolve()), files=stats))
    cache_file = None if cache_dir is None else (
        cache_dir / f"celeba-{split}-n{n}-i{index}-{size}px-{'gray' if grayscale else 'rgb'}-{key[:16]}.npz")
    hit = load_npz(cache_file) if cache_file is not None else None
    shape = (len(names), 1 if grayscale else 3, size, size)
    if hit is not None and valid_image_cache(hit, cache_file, names, shape, key):
        images = torch.from_numpy(hit["images"])
    else:
        images = _decode_all(img_dir, names, size, grayscale)
        if cache_file is not None:
            save_npz(cache_file, {"images": images.numpy(), "names": np.array(names), "key": np.array(key)})

    attrs = _read_attributes(base / ATTRIBUTES, names) if (base / ATTRIBUTES).is_file() else None
    scale, sub = "[0,1]", 0.0
    if center:
        sub = float(images.double().mean()) if mean is None else mean
        images = images - (sub.to(images) if isinstance(sub, Tensor) else sub)
        scale = "[0,1]-mean"
    return ImageData(
        images=images, labels=None, mean=sub, scale=scale, names=names, class_names=None, source=str(base),
        split=split, attributes=None if attrs is None else attrs[0],
        attribute_names=None if attrs is None else attrs[1], settings=dict(settings, center=center),
    )


def _decode_all(img_dir: Path, names: list[str], size: int, grayscale: bool) -> Tensor:
    """Decode and preprocess ``names`` -> (N, C, size, size) float32 in [0, 1]."""
    out = torch.empty(len(names), 1 if grayscale else 3, size, size)
    for i, m in enumerate(progress(names, desc="decoding CelebA", unit="img")):
        out[i] = preprocess(decode_image(img_dir / m).unsqueeze(0), size, grayscale)[0]
    return out
