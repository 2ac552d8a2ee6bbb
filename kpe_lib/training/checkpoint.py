"""Checkpoint files: configuration fingerprints, atomic writes, validated loads.

A checkpoint records the FULL configuration of the run that wrote it (model config, train config, data
fingerprint); resuming with a different one is refused with the differing keys named.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FLOW_FORMAT = "kpe_lib/flow-matching-checkpoint/v1"
CLASSIFIER_FORMAT = "kpe_lib/classifier/v1"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or is not the kind of file expected."""


def canonical(obj: Any) -> Any:
    """A JSON-normal copy of a plain config (tuples become lists, keys strings), for storing and comparing."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def config_hash(obj: Any, length: int = 16) -> str:
    """Short sha1 hex digest of a plain config, stable across runs and machines."""
    return hashlib.sha1(json.dumps(canonical(obj), sort_keys=True).encode()).hexdigest()[:length]


def tensor_sha1(x: torch.Tensor) -> str:
    """sha1 of a tensor's raw bytes (its dtype and shape are recorded separately)."""
    flat = x.detach().to("cpu").contiguous().reshape(-1)
    h = hashlib.sha1()
    if flat.numel():
        h.update(flat.view(torch.uint8).numpy())
    return h.hexdigest()


def data_fingerprint(data: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Identity of a training set: shape, dtype and sha1 of the data (and labels)."""
    out = {"shape": list(data.shape), "dtype": str(data.dtype).replace("torch.", ""), "sha1": tensor_sha1(data)}
    out["labels_sha1"] = None if labels is None else tensor_sha1(torch.as_tensor(labels).long())
    return out


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay leaves)."""
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ, as ``"key: saved -> current"`` lines (empty when equal)."""
    a, b = flatten(canonical(saved)), flatten(canonical(current))
    missing = "<absent>"
    return [f"{k}: {a.get(k, missing)!r} -> {b.get(k, missing)!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` it (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a cache is for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, expected_format: str = FLOW_FORMAT) -> dict[str, Any]:
    """Load a checkpoint on the CPU, raising ``CheckpointError`` naming the file if it is unreadable or foreign."""
    path = Path(path)
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"checkpoint file {path} is corrupt or unreadable ({type(err).__name__}: "
                              f"{str(err)[:200]}); delete it to start over") from err
    if not isinstance(ck, dict) or ck.get("format") != expected_format:
        found = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise CheckpointError(f"checkpoint file {path} is not a {expected_format} file (found {found!r}); "
                              "delete it to start over")
    return ck
