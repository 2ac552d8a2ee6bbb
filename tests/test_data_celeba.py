"""CelebA loader: fabricated official-format folders in tmp_path, plus the real 6,000-image subset when present.

The preprocessing oracle is an independent Pillow computation: per-channel float ("F" mode) bilinear resize,
crop, then BT.601 luma; it agrees with the torch pipeline to ~1e-6. The all-uint8 Pillow path (resize the
RGB image, crop, ``convert("L")``) rounds twice and is checked within 1.5/255.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import kpe_lib.data.celeba as celeba_mod
from kpe_lib.data import DataError, celeba_files, load_celeba, natural_sorted

NAMES = ["1.jpg", "2.jpg", "10.jpg", "3.jpg", "11.jpg", "20.jpg", "4.jpg", "12.jpg"]
PARTS = {"1.jpg": 0, "2.jpg": 0, "10.jpg": 0, "3.jpg": 0, "11.jpg": 0, "20.jpg": 1, "4.jpg": 2, "12.jpg": 2}
TRAIN_ORDER = ["1.jpg", "2.jpg", "3.jpg", "10.jpg", "11.jpg"]


def _real_root() -> Path | None:
    env = os.environ.get("KPE_DATA")
    for cand in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[1].parent / "shared" / "data"]:
        if (cand / "celeba" / "list_eval_partition.txt").is_file():
            return cand
    return None


def _make_celeba(root: Path, attrs: bool = True, w: int = 26, h: int = 31) -> Path:
    """Tiny CelebA-format folder: portrait JPEGs (CelebA is 178x218), CRLF partition and attribute files."""
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(NAMES):
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * 9 + i * 20) % 256, (yy * 7) % 256, rng.integers(0, 256, (h, w))], -1)
        Image.fromarray(img.astype(np.uint8)).save(base / "img_align_celeba" / name, quality=95)
    (base / "list_eval_partition.txt").write_bytes("".join(f"{n} {p}\r\n" for n, p in PARTS.items()).encode())
    if attrs:
        lines = [str(len(NAMES)), " ".join(f"A{k}" for k in range(40))]
        lines += [f"{n} " + " ".join(" 1" if (k + i) % 3 == 0 else "-1" for k in range(40))
                  for i, n in enumerate(NAMES)]
        (base / "list_attr_celeba.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    return base


def _pillow_reference(path: Path, size: int, grayscale: bool = True) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    box = (left, top, left + size, top + size)
    ch = [np.asarray(c.convert("F").resize((nw, nh), Image.BILINEAR).crop(box), np.float64) / 255 for c in im.split()]
    return (0.299 * ch[0] + 0.587 * ch[1] + 0.114 * ch[2])[None] if grayscale else np.stack(ch)


def _pillow_uint8_gray(path: Path, size: int) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    nw, nh = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    small = im.resize((nw, nh), Image.BILINEAR).crop((left, top, left + size, top + size)).convert("L")
    return np.asarray(small, np.float64)[None] / 255


def test_natural_order_and_splits(tmp_path: Path) -> None:
    _make_celeba(tmp_path)
    assert natural_sorted(["10.jpg", "2.jpg", "1.jpg"]) == ["1.jpg", "2.jpg", "10.jpg"]
    assert celeba_files(tmp_path, "train") == TRAIN_ORDER
    assert celeba_files(tmp_path, "valid") == ["20.jpg"]
    assert celeba_files(tmp_path, "test") == ["4.jpg", "12.jpg"]
    assert celeba_files(tmp_path, "all") == ["1.jpg", "2.jpg", "3.jpg", "4.jpg", "10.jpg", "11.jpg", "12.jpg",
                                            "20.jpg"]
    d = load_celeba(tmp_path, split="all", n=None, center=False, cache=False)
    assert d.names == celeba_files(tmp_path, "all") and d.images.shape == (8, 1, 32, 32)


@pytest.mark.parametrize(("size", "grayscale"), [(8, True), (16, False), (32, True)])
def test_preprocessing_matches_pillow(tmp_path: Path, size: int, grayscale: bool) -> None:
    base = _make_celeba(tmp_path)
    d = load_celeba(tmp_path, n=None, size=size, grayscale=grayscale, center=False, cache=False)
    assert d.images.shape == (5, 1 if grayscale else 3, size, size) and d.images.dtype == torch.float32
    for img, name in zip(d.images, d.names):
        ref = _pillow_reference(base / "img_align_celeba" / name, size, grayscale)
        np.testing.assert_allclose(img.numpy(), ref, atol=1e-5, rtol=0)
        if grayscale:
            assert np.abs(img.numpy() - _pillow_uint8_gray(base / "img_align_celeba" / name, size)).max() <= 1.5 / 255


def test_index_n_slicing_and_too_few(tmp_path: Path) -> None:
    _make_celeba(tmp_path)
    full = load_celeba(tmp_path, n=None, center=False, cache=False)
    block = load_celeba(tmp_path, n=2, index=1, center=False, cache=False)
    assert block.names == TRAIN_ORDER[2:4]
    assert torch.equal(block.images, full.images[2:4])
    with pytest.raises(ValueError, match=r"has 5 images; index=2, n=2 needs items \[4, 6\)"):
        load_celeba(tmp_path, n=2, index=2, cache=False)
    with pytest.raises(ValueError, match="index must be 0"):
        load_celeba(tmp_path, n=None, index=1, cache=False)


def test_centering_one_scalar(tmp_path: Path) -> None:
    _make_celeba(tmp_path)
    raw = load_celeba(tmp_path, n=4, center=False, cache=False)
    cen = load_celeba(tmp_path, n=4, cache=False)
    assert isinstance(cen.mean, float) and cen.mean == pytest.approx(float(raw.images.double().mean()), abs=1e-12)
    torch.testing.assert_close(cen.images, raw.images - cen.mean)
    torch.testing.assert_close(cen.to_unit(), raw.images)
    assert cen.centered and cen.scale == "[0,1]-mean" and raw.mean == 0.0 and not raw.centered
    test = load_celeba(tmp_path, split="test", n=None, mean=cen.mean, cache=False)
    torch.testing.assert_close(test.to_unit(), load_celeba(tmp_path, split="test", n=None, center=False,
                                                           cache=False).images)
    with pytest.raises(ValueError, match="needs mean="):
        load_celeba(tmp_path, split="test", n=None, cache=False)


def test_attributes(tmp_path: Path) -> None:
    _make_celeba(tmp_path)
    d = load_celeba(tmp_path, n=3, cache=False)
    assert d.attribute_names == [f"A{k}" for k in range(40)] and d.attributes.shape == (3, 40)
    i = NAMES.index("3.jpg")  # third in natural order
    assert d.attributes[2].tolist() == [1 if (k + i) % 3 == 0 else -1 for k in range(40)]
    base = tmp_path / "x"
    _make_celeba(base, attrs=False)
    assert load_celeba(base, n=3, cache=False).attributes is None


def test_cache_hit_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = _make_celeba(tmp_path)
    cache = tmp_path / "cache"
    first = load_celeba(tmp_path, n=4, cache=cache)
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # and no temporary leftovers

    def no_decode(path):  # a cache hit must not decode anything
        raise AssertionError(f"decoded {path}")

    with monkeypatch.context() as m:
        m.setattr(celeba_mod, "decode_image", no_decode)
        second = load_celeba(tmp_path, n=4, cache=cache)
        assert torch.equal(first.images, second.images) and first.mean == second.mean
        with pytest.raises(AssertionError, match="decoded"):  # other settings -> another key -> decoding
            load_celeba(tmp_path, n=4, size=16, cache=cache)
    # a changed file changes the key
    img = base / "img_align_celeba" / "2.jpg"
    Image.new("RGB", (26, 31), (255, 255, 255)).save(img)
    os.utime(img, ns=(1, 1))
    third = load_celeba(tmp_path, n=4, cache=cache, center=False)
    assert float(third.images[1].min()) > 0.99
    # KPE_CACHE decides where cache=True writes
    monkeypatch.setenv("KPE_CACHE", str(tmp_path / "kc"))
    load_celeba(tmp_path, n=2)
    assert len(list((tmp_path / "kc" / "decoded").glob("celeba-*.npz"))) == 1


def test_missing_and_corrupt_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPE_DATA", str(tmp_path))
    with pytest.raises(DataError) as err:
        load_celeba(cache=False)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    for part in (str(tmp_path), "KPE_DATA", "img_align_celeba", "list_eval_partition.txt", celeba_mod.CELEBA_URL):
        assert part in msg
    base = _make_celeba(tmp_path)
    (base / "list_eval_partition.txt").unlink()
    with pytest.raises(DataError, match="list_eval_partition.txt is missing"):
        load_celeba(n=2, cache=False)
    (base / "list_eval_partition.txt").write_text("1.jpg 0\n2.jpg 0\n99.jpg 0\n")
    with pytest.raises(DataError, match="missing from .*99.jpg"):
        load_celeba(n=None, cache=False)
    (base / "img_align_celeba" / "2.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(DataError, match=r"cannot decode image .*2\.jpg"):
        load_celeba(n=2, cache=False)
    (base / "list_eval_partition.txt").write_text("1.jpg train\n")
    with pytest.raises(DataError, match="line 1"):
        load_celeba(n=1, cache=False)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="split must be one of"):
        load_celeba(tmp_path, split="validation")
    with pytest.raises(ValueError, match="n must be"):
        load_celeba(tmp_path, n=0)
    with pytest.raises(ValueError, match="size must be"):
        load_celeba(tmp_path, size=0)
    with pytest.raises(ValueError, match="cache must be"):
        load_celeba(tmp_path, cache=3)  # type: ignore[arg-type]


# ---- the real 6,000-image subset in shared/data (see its README) ----
REAL = _real_root()
needs_real = pytest.mark.skipif(REAL is None, reason="real CelebA subset not found (set KPE_DATA or ../shared/data)")


@needs_real
def test_real_split_sizes_and_order() -> None:
    sizes = {s: len(celeba_files(REAL, s)) for s in ("train", "valid", "test", "all")}
    assert sizes == {"train": 4560, "valid": 780, "test": 660, "all": 6000}
    train = celeba_files(REAL, "train")
    assert train[0] == "000002.jpg" and train[1023] == "036916.jpg"  # README: first 1,024 = 000002 ... 036916
    with pytest.raises(ValueError, match="has 4560 images"):
        load_celeba(REAL, n=1024, index=4, cache=False)


@needs_real
def test_real_paper_preprocessing(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = load_celeba(REAL, n=64, index=3, cache=tmp_path)
    assert d.images.shape == (64, 1, 32, 32) and d.names == celeba_files(REAL)[192:256]
    assert 0.2 < d.mean < 0.8 and abs(float(d.images.double().mean())) < 1e-6
    assert d.attributes.shape == (64, 40) and set(d.attributes.unique().tolist()) == {-1, 1}
    assert "Eyeglasses" in d.attribute_names
    for k in (0, 17, 63):
        ref = _pillow_reference(Path(d.source) / "img_align_celeba" / d.names[k], 32)
        np.testing.assert_allclose(d.to_unit()[k].numpy(), ref, atol=1e-5, rtol=0)
