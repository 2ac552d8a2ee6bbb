"""Atomic file writes shared by every module that writes a file (caches, results, figures, book pages).

Nothing written through :func:`atomic_path` is ever half-written: the caller writes a temporary name in
the destination folder, which is renamed onto the destination (``os.replace``, atomic on POSIX and
Windows) on success and deleted on error.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``, on error delete it.

    Example:
        >>> with atomic_path("out.npz") as tmp:      # doctest: +SKIP
        ...     tmp.write_bytes(b"...")
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a unique name the caller creates itself, so the file gets the usual umask permissions (mkstemp's are 0600)
    tmp = dest.parent / f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.part"
    try:
        yield tmp
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
