"""Guards of a book build: one build per output folder at a time, a clean exit on SIGTERM, and no skip of a
chapter whose outputs are gone.

**The build lock.** Two builds into the same output folder (two ``make book`` on one checkout, or
``kpe run --out X`` twice) would race on the executed notebooks, the stamps and ``_build/html``. Each
build therefore holds ``<out>/_build/kpe-build.lock`` (an ``fcntl.flock`` lock) while it runs; the file
names the holder (pid, host, start time, command). A second build waits for the first to finish and says
whom it waits for (or, with ``wait=False``, stops with a :class:`BuildLockedError` naming the holder). The
kernel releases the lock when the holding process ends, however it ends, so a killed build leaves no
stale lock behind; the file itself stays, empty.

**SIGTERM.** Inside :func:`terminate_cleanly` a SIGTERM raises :class:`Terminated` (a ``SystemExit`` with
status 143) in the main thread instead of killing the process outright, so every ``finally`` and context
manager on the way out runs: the runner's temporary folder (which also holds the kernel's connection
file) and its temporary notebook are removed.

**Outputs.** An unchanged stamp skips a chapter only while every file it wrote on its last run is still
there (:func:`missing_outputs`), so a deleted results file is rebuilt.

Example:
    >>> import tempfile
    >>> with build_lock(tempfile.mkdtemp()):
    ...     pass
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from kpe_lib.book.parameters import parameters_cell
from kpe_lib.book.scales import Chapter, resolve_path

try:
    import fcntl
except ImportError:  # not POSIX: builds are not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "BuildLockedError", "Terminated", "build_lock", "lock_holder", "terminate_cleanly",
           "missing_outputs"]

#: The lock file, relative to the output folder.
LOCK_FILE = Path("_build") / "kpe-build.lock"
_held = threading.local()


class BuildLockedError(RuntimeError):
    """Another build holds the output folder's lock (raised only with ``wait=False``)."""


class Terminated(SystemExit):
    """SIGTERM arrived inside :func:`terminate_cleanly`; exits with status 128 + 15 once cleaned up."""


def lock_holder(path: str | os.PathLike) -> str:
    """A description of the build recorded in a lock file (``"pid 123 on host h since ..."``)."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process (it has not written its name yet)"
    return (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('started')} "
            f"({info.get('command')})")


@contextlib.contextmanager
def build_lock(out: str | os.PathLike, log: Callable[[str], None] | None = None, wait: bool = True
               ) -> Iterator[Path]:
    """Hold the build lock of the output folder ``out`` for the block (re-entrant within one thread).

    Args:
        out: the build's output folder; the lock is ``<out>/_build/kpe-build.lock``.
        log: receives one line when the lock is busy (whom it waits for) and one when it is acquired.
        wait: wait for the holder to finish (default); False raises :class:`BuildLockedError` instead.

    Yields:
        The lock file's path.
    """
    path = Path(out).resolve() / LOCK_FILE
    held = getattr(_held, "paths", None)
    if held is None:
        held = _held.paths = set()
    if fcntl is None or path in held:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = lock_holder(path)
            if not wait:
                raise BuildLockedError(f"{path.parent.parent} is being built by {holder}; wait for it to finish "
                                       f"or build into another folder (--out)") from None
            if log is not None:
                log(f"waiting for the build lock {path}, held by {holder} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
            if log is not None:
                log(f"build lock {path} acquired")
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": " ".join(sys.argv)[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        held.add(path)
        try:
            yield path
        finally:
            held.discard(path)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` for the block, so clean-up code runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def missing_outputs(stamp_file: Path, chapter: Chapter, root: Path, params: Mapping[str, Any], scale: str
                    ) -> list[Path]:
    """The outputs of a chapter's last run that are gone, which make an unchanged stamp re-execute it.

    They are the files its stamp records (what the chapter wrote through ``write_results``) and, for a
    chapter that declares ``results_dir``, ``<results_dir>/<scale>/<chapter>.json``.
    """
    try:
        recorded = [Path(p) for p in json.loads(stamp_file.read_text(encoding="utf-8")).get("outputs", [])]
    except (OSError, ValueError, AttributeError, TypeError):
        recorded = []
    declared = parameters_cell(chapter.source).defaults
    expected = []
    if "results_dir" in declared:
        folder = resolve_path(str(params.get("results_dir", declared["results_dir"])), root)
        expected.append(folder / scale / f"{chapter.name}.json")
    return [p for p in dict.fromkeys([*recorded, *expected]) if not p.is_file()]
