"""The book pipeline: chapter sources -> executed notebooks -> Jupyter Book.

A chapter is a jupytext MyST file ``notebooks/NN_slug.md`` with one cell tagged ``parameters``. The
runner converts it to a notebook, executes it with papermill at a named scale
(``notebooks/params/<scale>.yml``, one flat file shared by all chapters) from the project root, and
writes the executed notebook to ``<out>/book/chapters/NN_slug.ipynb`` -- never into ``notebooks/``, so
sources stay free of outputs and injected parameters.

A chapter is skipped when its *stamp* -- the sha256 of its source, the parameter file, the device and
the ``kpe_lib`` sources it depends on (all but the other chapters' study modules) -- equals the stamp stored beside its executed notebook
(``NN_slug.stamp.json``); ``force=True`` re-executes anyway. Execution writes to a temporary name and
renames on success, so a failing chapter leaves the previous executed notebook intact (the failed one
is kept under ``<out>/_build/failed/`` for inspection).

A skip also needs every file the chapter wrote on its last run (the results files it wrote through
``write_results``, listed in the stamp, and ``<results_dir>/<scale>/<chapter>.json``): a deleted results file
is rebuilt. One build at a time runs per output folder (:mod:`kpe_lib.book.guard`: a second one waits for
the lock, which names its holder); temporary names are unique per process, and a SIGTERM removes them.

Progress: the runner prints one line per chapter (name, status, seconds). Inside chapters, progress
bars are switched off by the environment variable ``KPE_PROGRESS=0``, which the runner sets for the
kernels it starts; interactive runs keep tqdm's default (bars on a terminal, off otherwise).

Example:
    >>> from kpe_lib.book.runner import run_chapters
    >>> report = run_chapters(["01"], scale="smoke", out="_build/smoke-src")  # doctest: +SKIP
    >>> report.ok                                                              # doctest: +SKIP
    True
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from kpe_lib._files import atomic_write_text
from kpe_lib.book.guard import build_lock, missing_outputs, terminate_cleanly
from kpe_lib.book.parameters import parameters_cell, rendered_parameters
from kpe_lib.book.results import OUTPUTS_LOG
from kpe_lib.book.scales import (CHAPTER_PATTERN, SCALES, Chapter, as_root, discover_chapters, load_params,
                                 params_path, select_chapters)

__all__ = ["SCALES", "Chapter", "ChapterRun", "RunReport", "discover_chapters", "select_chapters",
           "params_path", "load_params", "stamp_sources", "chapter_stamp", "stage_book", "run_chapters",
           "notebook_errors", "build_book", "BuildReport"]

BOOK_FILES = ("_config.yml", "_toc.yml")
Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclasses.dataclass(frozen=True)
class ChapterRun:
    """What happened to one chapter.

    Attributes:
        chapter: chapter name.
        status: ``"executed"``, ``"skipped"`` (stamp unchanged) or ``"failed"``.
        seconds: wall-clock seconds spent (0 when skipped).
        notebook: the executed notebook (for a failure: where the failed copy was kept).
        error: the error's name and message when ``status == "failed"``.
    """

    chapter: str
    status: str
    seconds: float
    notebook: Path
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class RunReport:
    """Result of :func:`run_chapters`."""

    runs: list[ChapterRun]
    scale: str
    device: str
    out: Path
    seconds: float

    @property
    def ok(self) -> bool:
        """True when no chapter failed."""
        return all(r.status != "failed" for r in self.runs)

    def summary(self) -> str:
        """One line such as ``"1 executed, 0 skipped, 0 failed in 25.3 s (scale smoke)"``."""
        counts = {s: sum(r.status == s for r in self.runs) for s in ("executed", "skipped", "failed")}
        return (f"{counts['executed']} executed, {counts['skipped']} skipped, {counts['failed']} failed "
                f"in {self.seconds:.1f} s (scale {self.scale}, device {self.device})")


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """Result of :func:`build_book`: the chapter runs, the HTML folder and the build's exit status."""

    run: RunReport
    html: Path
    returncode: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.run.ok and self.returncode == 0


def stamp_sources(chapter: Chapter, root: str | os.PathLike | None = None) -> list[Path]:
    """The library files a chapter depends on: every ``kpe_lib`` source except the other chapters' study
    modules (``kpe_lib/experiments/<slug>.py`` or ``kpe_lib/experiments/<slug>/``), sorted.

    So editing one chapter's study module re-executes that chapter alone, while a change to the core, a
    building block or the book machinery re-executes every chapter.
    """
    lib = as_root(root) / "kpe_lib"
    studies = lib / "experiments"
    own = {studies / f"{chapter.slug}.py", studies / chapter.slug}
    keep = []
    for path in sorted(lib.rglob("*.py")):
        if studies in path.parents and path != studies / "__init__.py":
            if not any(path == o or o in path.parents for o in own):
                continue
        keep.append(path)
    return keep


def chapter_stamp(chapter: Chapter, root: str | os.PathLike | None, scale: str,
                  device: str = "cpu", overrides: Mapping[str, Any] | None = None) -> str:
    """sha256 over the chapter source, the scale's parameter file, the overrides, the device and the
    library files the chapter depends on (:func:`stamp_sources`)."""
    root = as_root(root)
    h = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        h.update(label.encode() + b"\0" + len(data).to_bytes(8, "little") + data)

    feed("source", chapter.source.read_bytes())
    feed("params", params_path(root, scale).read_bytes())
    feed("device", device.encode())
    if overrides:
        feed("overrides", json.dumps(dict(overrides), sort_keys=True, default=str).encode())
    for path in stamp_sources(chapter, root):
        feed(path.relative_to(root).as_posix(), path.read_bytes())
    return h.hexdigest()


def stage_book(root: str | os.PathLike | None, out: str | os.PathLike) -> Path:
    """Copy ``_config.yml``, ``_toc.yml`` and ``book/`` (without executed chapters) into ``out``.

    A staging copy lets a smoke build run beside the ``cpu``-executed chapters without touching them.
    """
    root, out = as_root(root), Path(out).resolve()
    if out == root:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in BOOK_FILES:
        shutil.copy2(root / name, out / name)
    shutil.copytree(root / "book", out / "book", dirs_exist_ok=True,
                    ignore=lambda d, names: ["chapters"] if Path(d).resolve() == root / "book" else [])
    return out


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(chapter: Chapter, root: Path, params: dict, target: Path, failed_dir: Path
             ) -> tuple[str | None, list[str]]:
    """Convert and execute one chapter into ``target``.

    Returns:
        (None, the files the chapter wrote through ``write_results``) on success, else (the error text, []).

    Every temporary file is unique to this process and removed on any exit, SIGTERM included (see
    :func:`kpe_lib.book.guard.terminate_cleanly`): the converted notebook, the kernel's connection file
    (``JUPYTER_RUNTIME_DIR`` points into the same temporary folder) and the notebook being executed.
    """
    import jupytext
    import nbformat
    import papermill as pm

    with tempfile.TemporaryDirectory(prefix="kpe-runner-") as tmp:
        source_nb = Path(tmp) / f"{chapter.name}.ipynb"
        nb = jupytext.read(chapter.source)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, source_nb)
        declared = parameters_cell(chapter.source).defaults  # ParameterError (a ValueError) if none
        # Only the names a chapter declares are injected: the shared file also holds other chapters' keys.
        chosen = {k: v for k, v in params.items() if k in declared}
        running = target.with_name(f".{target.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.running.ipynb")
        written = Path(tmp) / "outputs.txt"
        try:
            try:
                # OpenMP's own wait policy (a user's OMP_WAIT_POLICY passes through): on an idle machine
                # PASSIVE made the chapters' small-kernel torch work 1.3-1.5x slower
                # (benchmarks/bench_omp_wait.py); one heavy job at a time keeps spinning threads harmless.
                with _environ(KPE_PROGRESS="0", KPE_ROOT=str(root), JUPYTER_RUNTIME_DIR=str(Path(tmp) / "runtime"),
                              **{OUTPUTS_LOG: str(written)}):
                    pm.execute_notebook(str(source_nb), str(running), parameters=chosen, kernel_name="python3",
                                        cwd=str(root), progress_bar=False, log_output=False,
                                        request_save_on_cell_execute=False)
            except Exception as err:  # papermill re-raises the cell's error as PapermillExecutionError
                if running.exists():
                    failed_dir.mkdir(parents=True, exist_ok=True)
                    os.replace(running, failed_dir / target.name)
                return f"{type(err).__name__}: {getattr(err, 'evalue', None) or err}".strip(), []
            errors = notebook_errors(running)
            if errors:
                failed_dir.mkdir(parents=True, exist_ok=True)
                os.replace(running, failed_dir / target.name)
                return "; ".join(errors), []
            outputs = written.read_text(encoding="utf-8").split("\n") if written.is_file() else []
            present_parameters(running, chosen, params.get("scale"))
            os.replace(running, target)
        finally:
            with contextlib.suppress(OSError):
                running.unlink()
    return None, sorted({o for o in outputs if o})


def present_parameters(path: Path, chosen: Mapping[str, Any], scale: str | None = None) -> None:
    """One parameters listing per executed chapter, collapsed: the chapter's ``parameters`` cell shows the
    values this run was given (:func:`~kpe_lib.book.parameters.rendered_parameters`) behind a toggle
    (tag ``hide-cell``) and papermill's injected copy is left off the page (tag ``remove-cell``; it still
    runs under nbval). Rewrites the notebook at ``path`` in place."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    label = f"this chapter's parameters ({scale} scale)" if scale else "this chapter's parameters"
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if "injected-parameters" in tags:
            tags.append("remove-cell")
        elif "parameters" in tags and cell.cell_type == "code":
            cell.source = rendered_parameters(cell.source, chosen)
            tags.append("hide-cell")
            cell.metadata["mystnb"] = {"code_prompt_show": f"Show {label}",
                                       "code_prompt_hide": f"Hide {label}"}
    nbformat.write(nb, path)


def run_chapters(names: Iterable[str] | None = None, *, root: str | os.PathLike | None = None,
                 scale: str = "cpu", device: str = "cpu", out: str | os.PathLike | None = None,
                 force: bool = False, overrides: Mapping[str, Any] | None = None,
                 log: Log = _print) -> RunReport:
    """Execute chapters at a scale into ``<out>/book/chapters`` (default ``out``: the project root).

    Args:
        names: chapters to run (see :func:`select_chapters`); None or empty runs all.
        root: the project root (default: :func:`kpe_lib.book.scales.project_root`).
        scale: ``smoke``, ``cpu`` or ``paper``.
        device: passed to every chapter as the ``device`` parameter (e.g. ``cuda``).
        out: where ``book/chapters`` is written; a folder other than the root gets a staging copy of
            the book sources (:func:`stage_book`).
        force: re-execute chapters whose stamp is unchanged.
        overrides: parameter values replacing the scale file's (e.g. ``{"celeba_bf16": True}``); each
            must be declared by a selected chapter (ValueError otherwise). They enter the stamp.
        log: receives one progress line per chapter.

    Returns:
        A :class:`RunReport`; ``report.ok`` is False when a chapter failed.
    """
    logging.getLogger("papermill").setLevel(logging.ERROR)  # unknown-parameter warnings are expected
    root = as_root(root)
    chapters = select_chapters(discover_chapters(root), names)
    if not chapters:
        raise ValueError(f"no chapter sources matching notebooks/{CHAPTER_PATTERN} under {root}")
    if overrides:
        declared = {name for c in chapters for name in parameters_cell(c.source).defaults}
        unknown = sorted(set(overrides) - declared - {"scale", "device"})
        if unknown:
            raise ValueError(f"overrides {unknown} are declared by none of the chapters "
                             f"{', '.join(c.name for c in chapters)}; see their parameters cells")
        if {"scale", "device"} & set(overrides):
            raise ValueError("set scale and device with their own arguments, not as overrides")
    params = load_params(root, scale, device, overrides)
    start = time.perf_counter()
    with build_lock(Path(out).resolve() if out is not None else root, log), terminate_cleanly():
        out = stage_book(root, out) if out is not None else root
        (out / "book" / "chapters").mkdir(parents=True, exist_ok=True)
        runs = _run_each(chapters, root, scale, device, out, force, overrides, params, log)
    report = RunReport(runs, scale, device, out, time.perf_counter() - start)
    log(report.summary())
    return report


def _run_each(chapters: list[Chapter], root: Path, scale: str, device: str, out: Path, force: bool,
              overrides: Mapping[str, Any] | None, params: dict, log: Log) -> list[ChapterRun]:
    """The loop of :func:`run_chapters`, under the build lock: skip, execute or fail each chapter."""
    folder = out / "book" / "chapters"
    runs: list[ChapterRun] = []
    for i, chapter in enumerate(chapters, 1):
        target = folder / f"{chapter.name}.ipynb"
        stamp_file = folder / f"{chapter.name}.stamp.json"
        stamp = chapter_stamp(chapter, root, scale, device, overrides)
        prefix = f"[{i}/{len(chapters)}] {chapter.name} ({scale})"
        if not force and target.exists() and _read_stamp(stamp_file) == stamp:
            gone = missing_outputs(stamp_file, chapter, root, params, scale)
            if not gone:
                runs.append(ChapterRun(chapter.name, "skipped", 0.0, target))
                log(f"{prefix}: unchanged, skipped")
                continue
            log(f"{prefix}: unchanged, but {', '.join(map(str, gone))} is missing; re-executing")
        log(f"{prefix}: executing ...")
        t0 = time.perf_counter()
        try:
            error, outputs = _execute(chapter, root, params, target, out / "_build" / "failed")
        except ValueError as err:  # a chapter that cannot be run as written (no/unparsable parameters)
            error, outputs = str(err), []
        seconds = time.perf_counter() - t0
        if error is None:
            _write_stamp(stamp_file, {"stamp": stamp, "scale": scale, "device": device,
                                      "overrides": dict(overrides or {}), "seconds": round(seconds, 1),
                                      "outputs": outputs})
            runs.append(ChapterRun(chapter.name, "executed", seconds, target))
            log(f"{prefix}: executed in {seconds:.1f} s")
        else:
            kept = out / "_build" / "failed" / target.name
            runs.append(ChapterRun(chapter.name, "failed", seconds, kept, error))
            log(f"{prefix}: FAILED after {seconds:.1f} s: {error}\n    failed notebook kept at {kept}")
    return runs


def _read_stamp(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("stamp")
    except (OSError, ValueError, AttributeError):
        return None


def _write_stamp(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def notebook_errors(path: str | os.PathLike) -> list[str]:
    """Error outputs (``ename: evalue``) found in an executed notebook; empty when it ran cleanly."""
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    return [f"{o.get('ename')}: {o.get('evalue')}" for cell in nb.cells if cell.cell_type == "code"
            for o in cell.get("outputs", []) if o.get("output_type") == "error"]


def build_book(names: Iterable[str] | None = None, *, root: str | os.PathLike | None = None,
               scale: str = "cpu", device: str = "cpu", out: str | os.PathLike | None = None,
               force: bool = False, overrides: Mapping[str, Any] | None = None,
               log: Log = _print) -> BuildReport:
    """Run the chapters (:func:`run_chapters`), then ``jupyter-book build <out> -W -n --keep-going``.

    The build turns warnings into errors; it is skipped when a chapter failed. The HTML lands in
    ``<out>/_build/html``.
    """
    start = time.perf_counter()
    folder = Path(out).resolve() if out is not None else as_root(root)
    with build_lock(folder, log), terminate_cleanly():  # one build of this folder at a time, chapters and HTML
        report = run_chapters(names, root=root, scale=scale, device=device, out=out, force=force,
                              overrides=overrides, log=log)
        html = report.out / "_build" / "html"
        if not report.ok:
            log("book build skipped: a chapter failed")
            return BuildReport(report, html, 1, time.perf_counter() - start)
        from kpe_lib.book.pages import write_generated_pages

        write_generated_pages(as_root(root), report.out / "book")  # scoreboard, parameters, API from results/
        log(f"building the book in {report.out} ...")
        cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build",
               str(report.out), "-W", "-n", "--keep-going"]
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=str(report.out))
    log(f"jupyter-book build {'finished' if rc == 0 else 'FAILED (exit %d)' % rc} in "
        f"{time.perf_counter() - t0:.1f} s; html: {html}")
    return BuildReport(report, html, rc, time.perf_counter() - start)
