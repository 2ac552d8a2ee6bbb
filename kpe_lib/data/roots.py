"""Where data lives: root resolution, the project's data errors, natural sort.

The data root is resolved once per call, in this order:

1. the explicit ``root`` argument,
2. the ``KPE_DATA`` environment variable,
3. a per-user cache folder, ``$XDG_CACHE_HOME/kpe_lib/data`` (``~/.cache/kpe_lib/data`` when
   ``XDG_CACHE_HOME`` is unset).

Decoded-tensor caches live apart from the data, in ``cache_root()`` (``KPE_CACHE``, else
``$XDG_CACHE_HOME/kpe_lib``), so a shared, read-only data folder is never written to.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataError",
    "ChecksumError",
    "PartialDataWarning",
    "ResolvedRoot",
    "data_root",
    "resolve_root",
    "cache_root",
    "natural_key",
    "natural_sorted",
]


class DataError(FileNotFoundError):
    """A dataset is missing, incomplete or unreadable.

    Subclasses ``FileNotFoundError`` so callers that only know about missing files still catch it.
    The message always says what was looked for, where, and how to get it.
    """


class ChecksumError(DataError):
    """A downloaded or local archive does not have the expected checksum."""


class PartialDataWarning(UserWarning):
    """Some files of an official layout are absent; the loader used the ones present."""


@dataclass(frozen=True)
class ResolvedRoot:
    """A data root and where it came from.

    Attributes:
        path: the folder (it need not exist).
        origin: ``"argument"``, ``"KPE_DATA"`` or ``"default cache"``; quoted in error messages.
    """

    path: Path
    origin: str

    def describe(self) -> str:
        """Human-readable ``"<path> (from <origin>)"`` for messages."""
        return f"{self.path} (from {self.origin})"


def _user_cache_home() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def resolve_root(root: str | os.PathLike[str] | None = None) -> ResolvedRoot:
    """Resolve the data root and remember which rule chose it.

    Args:
        root: explicit folder; ``None`` falls back to ``KPE_DATA``, then the per-user cache.

    Returns:
        The resolved root (``~`` expanded, not required to exist).
    """
    if root is not None:
        if isinstance(root, str) and not root.strip():
            raise ValueError("root must be a non-empty path or None (then KPE_DATA or the user cache is used)")
        return ResolvedRoot(Path(root).expanduser(), "argument")
    env = os.environ.get("KPE_DATA", "").strip()
    if env:
        return ResolvedRoot(Path(env).expanduser(), "KPE_DATA")
    return ResolvedRoot(_user_cache_home() / "kpe_lib" / "data", "default cache")


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds the datasets.

    Args:
        root: explicit folder; else env ``KPE_DATA``; else ``$XDG_CACHE_HOME/kpe_lib/data``
            (``~/.cache/kpe_lib/data``).

    Returns:
        The folder as a ``Path`` (``~`` expanded; it need not exist yet).

    Example:
        >>> data_root("/tmp/mydata")
        PosixPath('/tmp/mydata')
    """
    return resolve_root(root).path


def cache_root() -> Path:
    """Per-user folder for derived files (decoded tensors): ``KPE_CACHE``, else ``$XDG_CACHE_HOME/kpe_lib``."""
    env = os.environ.get("KPE_CACHE", "").strip()
    return Path(env).expanduser() if env else _user_cache_home() / "kpe_lib"


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: ``"2.jpg" < "10.jpg"`` (Mathematics §6, "natural-sorted").

    Text runs compare case-insensitively; each part is tagged so text and numbers never compare
    (numbers first, as in common natural-sort tools: ``"9" < "10" < "a"``).
    """
    parts = _DIGITS.split(name)
    return tuple((0, int(p)) if i % 2 else (1, p.lower()) for i, p in enumerate(parts) if p != "")


def natural_sorted(names: "list[str] | tuple[str, ...]") -> list[str]:
    """``names`` in natural order (``natural_key``), ties such as ``"02"`` / ``"2"`` broken by the plain string."""
    return sorted(names, key=lambda n: (natural_key(n), n))
