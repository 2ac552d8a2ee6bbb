"""Chapter results on disk: ``results/<scale>/<chapter>.json``.

Every chapter of the book ends by writing the numbers it measured, together with the protocol that
produced them, to one small JSON file; the scoreboard page is generated
from those files. The layout is::

    {"chapter": "01_kpe_2d", "scale": "cpu",
     "metrics": {"kpe_mean": 3.1, ...},
     "protocol": {"solver": "euler", "n_steps": 100, ...}}

``results_dir`` is relative to the project root (:func:`kpe_lib.book.scales.resolve_path`).

Example:
    >>> from kpe_lib.book.results import write_results
    >>> path = write_results("01_kpe_2d", "smoke", {"kpe_mean": 1.5}, {"solver": "euler"},
    ...                      results_dir="/tmp/kpe-results")
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

from kpe_lib._files import atomic_write_text
from kpe_lib.book.scales import resolve_path

__all__ = ["ChapterResults", "write_results", "read_results", "to_jsonable"]

#: Environment variable naming a file to which every results file written is appended (set by the runner).
OUTPUTS_LOG = "KPE_OUTPUTS_LOG"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass(frozen=True)
class ChapterResults:
    """The metrics one chapter measured at one scale, and how.

    Attributes:
        chapter: chapter name, the source file's stem (e.g. ``"01_kpe_2d"``).
        scale: parameter scale the chapter ran at (``"smoke"``, ``"cpu"``, ``"paper"``).
        metrics: measured numbers by name (JSON values only: numbers, strings, lists, dicts).
        protocol: everything needed to reproduce them (solver, steps, sample counts, seeds, ...).
        path: where the file lives, when read from or written to disk.
    """

    chapter: str
    scale: str
    metrics: dict[str, Any]
    protocol: dict[str, Any]
    path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON object written to disk (without ``path``)."""
        return {"chapter": self.chapter, "scale": self.scale, "metrics": self.metrics,
                "protocol": self.protocol}


def to_jsonable(value: Any, _key: str = "value") -> Any:
    """Convert numbers from torch/numpy, tuples, paths and dataclasses into plain JSON values.

    Raises:
        ValueError: for NaN or infinite numbers (naming the key), or objects JSON cannot hold.
    """
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value), _key)
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, f"{_key}.{k}") for k, v in value.items()}
    if isinstance(value, (str, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and callable(value.tolist):  # torch.Tensor, numpy array or scalar
        return to_jsonable(value.tolist(), _key)
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, f"{_key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{_key} must be a finite number, got {value!r}")
        return value
    raise ValueError(f"{_key} has type {type(value).__name__}, which JSON cannot hold; "
                     "allowed: numbers, strings, booleans, None, lists, dicts, tensors, arrays")


def write_results(chapter: str, scale: str, metrics: Mapping[str, Any],
                  protocol: Mapping[str, Any] | None = None,
                  results_dir: str | os.PathLike = "results") -> Path:
    """Write ``<results_dir>/<scale>/<chapter>.json`` atomically (temporary file, then rename).

    Args:
        chapter: chapter name, letters/digits/``_.-`` (e.g. ``"01_kpe_2d"``).
        scale: scale name, same characters (e.g. ``"cpu"``).
        metrics: measured numbers; tensors and numpy values are converted, NaN/inf are refused.
        protocol: how they were measured (solver, NFE, sample counts, seeds, ...).
        results_dir: folder holding one sub-folder per scale; relative paths are taken from the
            project root (:func:`resolve_path`).

    Returns:
        The path written.

    Raises:
        ValueError: bad ``chapter``/``scale`` names, empty ``metrics``, or values JSON cannot hold.
    """
    for name, value in (("chapter", chapter), ("scale", scale)):
        if not isinstance(value, str) or not _NAME.match(value):
            raise ValueError(f"{name} must be a name of letters, digits, '_', '.', '-' "
                             f"(e.g. '01_kpe_2d', 'cpu'), got {value!r}")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError("metrics must be a non-empty mapping of names to measured values")
    record = ChapterResults(chapter, scale, to_jsonable(dict(metrics), "metrics"),
                            to_jsonable(dict(protocol or {}), "protocol"))
    path = resolve_path(results_dir) / scale / f"{chapter}.json"
    atomic_write_text(path, json.dumps(record.as_dict(), indent=2, allow_nan=False) + "\n")
    log = os.environ.get(OUTPUTS_LOG)
    if log:  # the runner's list of what this chapter wrote (its skip test checks they still exist)
        with contextlib.suppress(OSError), open(log, "a", encoding="utf-8") as f:  # a stale variable is no error
            f.write(f"{path}\n")
    return path


def read_results(path: str | os.PathLike) -> ChapterResults:
    """Read one results file written by :func:`write_results`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not JSON or lacks one of ``chapter``, ``scale``, ``metrics``, ``protocol``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    missing = [k for k in ("chapter", "scale", "metrics", "protocol") if k not in data]
    if missing:
        raise ValueError(f"{path} lacks the key(s) {missing}; expected chapter, scale, metrics, protocol")
    return ChapterResults(data["chapter"], data["scale"], data["metrics"], data["protocol"], path)
