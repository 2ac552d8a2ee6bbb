"""Scales and paths of the book, defined once: the scale names, the project root, the chapter sources and
the parameter files ``notebooks/params/<scale>.yml``.

Paths given to a chapter (``results_dir``, ``cache_dir``) are relative to the project root, not to the
working directory: papermill runs a chapter from the repository root, but nbval re-executes the
executed notebook from the folder it lives in. :func:`resolve_path` makes both land in the same place.

Example:
    >>> SCALES
    ('smoke', 'cpu', 'gpu', 'paper')
    >>> resolve_path("/tmp/x").as_posix()
    '/tmp/x'
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["SCALES", "CHAPTER_PATTERN", "Chapter", "project_root", "as_root", "resolve_path", "discover_chapters",
           "select_chapters", "params_path", "load_params"]

#: The named scales, smallest first: ``smoke`` (CI), ``cpu`` (the rendered book), ``gpu`` (about an hour per
#: chapter on one GPU), ``paper`` (the paper's settings, a GPU box; several GPUs with torchrun).
SCALES = ("smoke", "cpu", "gpu", "paper")
#: Chapter sources are ``notebooks/NN_slug.md``.
CHAPTER_PATTERN = "[0-9][0-9]_*.md"


@dataclasses.dataclass(frozen=True)
class Chapter:
    """One chapter source. ``name`` is the file stem, e.g. ``"01_kpe_2d"``."""

    name: str
    source: Path

    @property
    def number(self) -> str:
        """The two-digit prefix, e.g. ``"01"``."""
        return self.name[:2]

    @property
    def slug(self) -> str:
        """The name without its number, e.g. ``"kpe_2d"``: also the name of its study module, if any."""
        return self.name[3:]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The folder that chapter paths are relative to.

    The environment variable ``KPE_ROOT`` wins; otherwise the nearest folder at or above ``start``
    (default: the working directory) that holds both ``pyproject.toml`` and ``kpe_lib/``; otherwise
    ``start`` itself.
    """
    env = os.environ.get("KPE_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = Path(start if start is not None else os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "kpe_lib").is_dir():
            return folder
    return here


def as_root(root: str | os.PathLike | None) -> Path:
    """``root`` resolved, or :func:`project_root` when None."""
    return Path(root).resolve() if root is not None else project_root()


def resolve_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An absolute path: ``path`` itself if absolute, else ``path`` under :func:`project_root`."""
    if path is None or str(path) == "":
        raise ValueError("path must be a non-empty path, got %r" % (path,))
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    base = Path(root) if root is not None else project_root()
    return (base / p).resolve()


def discover_chapters(root: str | os.PathLike | None = None) -> list[Chapter]:
    """All chapter sources ``notebooks/NN_*.md`` under ``root``, in chapter order."""
    folder = as_root(root) / "notebooks"
    return [Chapter(p.stem, p) for p in sorted(folder.glob(CHAPTER_PATTERN))]


def select_chapters(chapters: Sequence[Chapter], names: Iterable[str] | None) -> list[Chapter]:
    """Pick chapters by full name (``01_kpe_2d``), number (``01`` or ``1``) or slug (``kpe_2d``).

    ``names`` empty or None selects every chapter. Raises ValueError for a name matching none.
    """
    names = list(names or [])
    if not names:
        return list(chapters)
    chosen: list[Chapter] = []
    for name in names:
        key = name.removesuffix(".md").removeprefix("notebooks/")
        hits = [c for c in chapters
                if key in (c.name, c.slug) or (key.isdigit() and int(key) == int(c.number))]
        if not hits:
            known = ", ".join(c.name for c in chapters) or "none found"
            raise ValueError(f"chapter {name!r} matches no chapter source; known chapters: {known}")
        chosen.extend(c for c in hits if c not in chosen)
    return chosen


def params_path(root: str | os.PathLike | None, scale: str) -> Path:
    """``notebooks/params/<scale>.yml``; ValueError for an unknown scale or a missing file."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    path = as_root(root) / "notebooks" / "params" / f"{scale}.yml"
    if not path.is_file():
        raise ValueError(f"scale {scale!r} has no parameter file: expected {path}")
    return path


def load_params(root: str | os.PathLike | None, scale: str, device: str = "cpu",
                overrides: Mapping[str, Any] | None = None) -> dict:
    """The flat parameter mapping of a scale, with ``scale`` and ``device`` set and ``overrides`` applied."""
    import yaml

    path = params_path(root, scale)
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"parameter file {path} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(params, dict):
        raise ValueError(f"{path} must hold a flat mapping of parameter names to values")
    params.update(scale=scale, device=device)
    params.update(overrides or {})
    return params
