"""CIFAR-10 loader: fabricated official-format files in tmp_path, plus the real partial copy when present."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import kpe_lib.data.cifar10 as cifar_mod
from kpe_lib.data import (CIFAR10_CLASSES, ChecksumError, DataError, PartialDataWarning, download_cifar10,
                          load_cifar10)
from kpe_lib.data.cache import download_url

CLASSES = [f"class{k}" for k in range(10)]  # not the official names: proves batches.meta is read


def _real_root() -> Path | None:
    env = os.environ.get("KPE_DATA")
    for cand in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "data"]:
        if (cand / "cifar10" / "cifar-10-batches-py" / "data_batch_1").is_file():
            return cand
    return None


def _batch(k: int, seed: int, bytes_keys: bool = True) -> tuple[bytes, np.ndarray, list[int]]:
    """A pickled batch dict in the official layout (protocol 2), its rows and labels."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(k, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=k)]
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    d = {key("batch_label"): key(f"batch {seed}"), key("labels"): labels, key("data"): data,
         key("filenames"): [key(f"img_{seed}_{i}.png") for i in range(k)]}
    return pickle.dumps(d, protocol=2), data, labels


def _meta(bytes_keys: bool = True) -> bytes:
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    return pickle.dumps({key("num_cases_per_batch"): 4, key("label_names"): [key(c) for c in CLASSES],
                         key("num_vis"): 3072}, protocol=2)


def _make_folder(root: Path, batches: tuple[int, ...] = (1, 2, 3, 4, 5), k: int = 4, bytes_keys: bool = True):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    rows, labels = {}, {}
    for b in batches:
        blob, rows[b], labels[b] = _batch(k, b, bytes_keys)
        (d / f"data_batch_{b}").write_bytes(blob)
    blob, rows[0], labels[0] = _batch(k, 0, bytes_keys)
    (d / "test_batch").write_bytes(blob)
    (d / "batches.meta").write_bytes(_meta(bytes_keys))
    return d, rows, labels


def _to_images(rows: np.ndarray) -> np.ndarray:
    """Independent decoding of the row layout: 1024 R, 1024 G, 1024 B, each row-major 32x32."""
    out = np.empty((len(rows), 3, 32, 32), dtype=np.float32)
    for i, r in enumerate(rows):
        for c in range(3):
            for y in range(32):
                out[i, c, y] = r[c * 1024 + y * 32 : c * 1024 + y * 32 + 32] / 255.0
    return out


def test_folder_layout_and_row_order(tmp_path: Path) -> None:
    _, rows, labels = _make_folder(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete folder warns about nothing
        tr = load_cifar10(tmp_path, split="train")
        te = load_cifar10(tmp_path, split="test")
    expected = np.concatenate([rows[b] for b in (1, 2, 3, 4, 5)])
    assert tr.images.shape == (20, 3, 32, 32) and tr.images.dtype == torch.float32
    np.testing.assert_array_equal(tr.images.numpy(), _to_images(expected))
    assert tr.labels.dtype == torch.long and tr.labels.tolist() == sum((labels[b] for b in (1, 2, 3, 4, 5)), [])
    assert tr.class_names == CLASSES and tr.names[:2] == ["img_1_0.png", "img_1_1.png"]
    np.testing.assert_array_equal(te.images.numpy(), _to_images(rows[0]))
    assert te.labels.tolist() == labels[0] and te.split == "test" and not te.centered


def test_str_keys_and_first_n(tmp_path: Path) -> None:
    _, rows, labels = _make_folder(tmp_path, bytes_keys=False)
    d = load_cifar10(tmp_path, n=6)
    np.testing.assert_array_equal(d.images.numpy(), _to_images(np.concatenate([rows[1], rows[2][:2]])))
    assert d.labels.tolist() == labels[1] + labels[2][:2]
    assert d.class_names == CLASSES


def test_partial_folder_warns_once_naming_missing(tmp_path: Path) -> None:
    _, rows, _ = _make_folder(tmp_path, batches=(1, 3))
    with pytest.warns(PartialDataWarning) as rec:
        d = load_cifar10(tmp_path)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert all(f"data_batch_{b}" in msg for b in (2, 4, 5)) and "data_batch_3 missing" not in msg
    np.testing.assert_array_equal(d.images.numpy(), _to_images(np.concatenate([rows[1], rows[3]])))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # n served by the batches present: the result is the same as a full copy's
        assert len(load_cifar10(tmp_path, n=5)) == 5
    with pytest.raises(ValueError, match=r"only 8 .*missing: data_batch_2"):
        load_cifar10(tmp_path, n=9)


def test_missing_meta_falls_back_to_official_names(tmp_path: Path) -> None:
    d, _, _ = _make_folder(tmp_path)
    (d / "batches.meta").unlink()
    with pytest.warns(PartialDataWarning, match="batches.meta"):
        assert load_cifar10(tmp_path, split="test").class_names == list(CIFAR10_CLASSES)


def _make_tar(folder: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return dest


def test_archive_read_without_extraction(tmp_path: Path) -> None:
    folder, _, _ = _make_folder(tmp_path / "src")
    root = tmp_path / "root"
    _make_tar(folder, root / "cifar10" / "cifar-10-python.tar.gz")
    a = load_cifar10(root, grayscale=True, size=16)
    b = load_cifar10(tmp_path / "src", grayscale=True, size=16)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels) and a.source.endswith(".tar.gz")
    assert list((root / "cifar10").iterdir()) == [root / "cifar10" / "cifar-10-python.tar.gz"]  # nothing extracted


def test_grayscale_resize_and_centering(tmp_path: Path) -> None:
    _, rows, _ = _make_folder(tmp_path)
    rgb = _to_images(rows[0]).astype(np.float64)
    g = load_cifar10(tmp_path, split="test", grayscale=True)
    np.testing.assert_allclose(g.images[:, 0].numpy(), 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2],
                               atol=1e-6)
    small = load_cifar10(tmp_path, split="test", size=16)
    assert small.images.shape == (4, 3, 16, 16)
    # an antialiased resize has normalised weights: mean brightness is (nearly) preserved
    torch.testing.assert_close(small.images.mean(), load_cifar10(tmp_path, split="test").images.mean(), atol=5e-3,
                               rtol=0)
    tr = load_cifar10(tmp_path, center=True)
    raw = load_cifar10(tmp_path)
    assert tr.mean == pytest.approx(float(raw.images.double().mean()), abs=1e-12) and tr.scale == "[0,1]-mean"
    assert abs(float(tr.images.double().mean())) < 1e-6
    torch.testing.assert_close(tr.to_unit(), raw.images)
    te = load_cifar10(tmp_path, split="test", center=True, mean=tr.mean)
    torch.testing.assert_close(te.images, load_cifar10(tmp_path, split="test").images - tr.mean)
    with pytest.raises(ValueError, match="needs mean="):
        load_cifar10(tmp_path, split="test", center=True)


def test_missing_data_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPE_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_cifar10()
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in (str(tmp_path), "KPE_DATA", "cifar-10-batches-py", "data_batch_1", cifar_mod.CIFAR10_URL,
                 cifar_mod.CIFAR10_MD5, "download=True"):
        assert part in msg


def test_corrupt_and_unsafe_pickles_name_the_file(tmp_path: Path) -> None:
    d, _, _ = _make_folder(tmp_path)
    (d / "data_batch_2").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_2"):
        load_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with pytest.raises(DataError, match="not allowed"):
        load_cifar10(tmp_path)
    (d / "data_batch_2").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, 2))
    with pytest.raises(DataError, match="data_batch_2 is corrupt"):
        load_cifar10(tmp_path)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, split="valid")
    with pytest.raises(ValueError, match="n must be"):
        load_cifar10(tmp_path, n=0)
    with pytest.raises(ValueError, match="center=True"):
        load_cifar10(tmp_path, mean=0.5)


def test_download_checks_md5_and_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = _make_folder(tmp_path / "src")
    archive = _make_tar(folder, tmp_path / "server" / "cifar-10-python.tar.gz")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    root = tmp_path / "root"
    monkeypatch.setattr(cifar_mod, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(ChecksumError, match="MD5 mismatch"):
        load_cifar10(root, download=True)
    assert not any(p.is_file() for p in root.rglob("*"))  # neither the archive nor a temporary file
    with pytest.raises(DataError):  # no download unless asked
        load_cifar10(root)
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", md5)
    d = load_cifar10(root, download=True)
    assert len(d) == 20 and (root / "cifar10" / "cifar-10-python.tar.gz").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in (root / "cifar10").iterdir()) == ["cifar-10-python.tar.gz"]
    monkeypatch.setattr(cifar_mod, "CIFAR10_URL", "file:///nonexistent/never-read")
    assert download_cifar10(root) == root / "cifar10" / "cifar-10-python.tar.gz"  # verified copy kept


def test_download_interrupted_leaves_nothing(tmp_path: Path) -> None:
    class Flaky(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            if self.tell() >= 10:
                raise ConnectionResetError("peer went away")
            return super().read(min(n, 10))

    with pytest.raises(DataError, match="could not download"):
        download_url("http://example.invalid/x", tmp_path / "x.bin", None, opener=lambda url: Flaky(b"a" * 100))
    assert list(tmp_path.iterdir()) == []


# ---- the real partial copy in shared/data (see its README) ----
REAL = _real_root()
needs_real = pytest.mark.skipif(REAL is None, reason="real CIFAR-10 copy not found (set KPE_DATA or ../shared/data)")


@needs_real
def test_real_data_batch_1() -> None:
    with pytest.warns(PartialDataWarning, match="data_batch_2, data_batch_3, data_batch_4, data_batch_5"):
        tr = load_cifar10(REAL, split="train")
    assert tr.images.shape == (10_000, 3, 32, 32)
    assert torch.bincount(tr.labels, minlength=10).tolist() == [985, 1019, 987, 958, 1029, 990, 1015, 1019, 957, 1041]
    assert tr.labels[:10].tolist() == [0, 8, 1, 4, 1, 3, 2, 2, 4, 8]  # the README's first labels of this copy
    assert tr.class_names == list(CIFAR10_CLASSES)
    assert 0.0 <= float(tr.images.min()) and float(tr.images.max()) <= 1.0
    # the file name encodes the class: train_<class>_<NNNN>.jpg
    assert all(name.split("_")[1] == tr.class_names[y] for name, y in zip(tr.names[:200], tr.labels[:200].tolist()))


@needs_real
def test_real_test_batch() -> None:
    te = load_cifar10(REAL, split="test", n=10_000, grayscale=True)
    assert te.images.shape == (10_000, 1, 32, 32)
    assert torch.bincount(te.labels, minlength=10).tolist() == [1000] * 10
