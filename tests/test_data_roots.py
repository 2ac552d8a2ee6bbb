"""Data-root resolution (argument > KPE_DATA > per-user cache) and the natural sort the loaders use."""
from __future__ import annotations

from pathlib import Path

import pytest

from kpe_lib.data import cache_root, data_root, natural_sorted
from kpe_lib.data.cache import atomic_path, settings_hash
from kpe_lib.data.roots import resolve_root


def test_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KPE_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_root(str(tmp_path / "arg")).origin == "argument"
    assert data_root() == tmp_path / "env" and resolve_root().origin == "KPE_DATA"
    monkeypatch.setenv("KPE_DATA", "  ")  # blank counts as unset
    assert data_root() == tmp_path / "xdg" / "kpe_lib" / "data" and resolve_root().origin == "default cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "kpe_lib" / "data"
    assert data_root("~/d") == tmp_path / "home" / "d"
    with pytest.raises(ValueError, match="root must be"):
        data_root("")


def test_cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KPE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "kpe_lib"
    monkeypatch.setenv("KPE_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"


def test_natural_sorted() -> None:
    names = ["img10.jpg", "img2.jpg", "IMG1.jpg", "img2a.jpg", "img02.jpg", "a", "a1", "10", "9"]
    assert natural_sorted(names) == ["9", "10", "a", "a1", "IMG1.jpg", "img02.jpg", "img2.jpg", "img2a.jpg",
                                     "img10.jpg"]


def test_atomic_path_and_settings_hash(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "f.bin"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert list((tmp_path / "sub").iterdir()) == []  # nothing half-written, no temporary left
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"whole")
    assert dest.read_bytes() == b"whole" and list((tmp_path / "sub").iterdir()) == [dest]
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})
