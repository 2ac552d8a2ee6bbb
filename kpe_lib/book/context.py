"""The chapter context: what every chapter does right after its imports, and at its end.

One call, ``ctx = open_chapter(globals(), "04_celeba_kts")``, replaces the set-up each chapter used to copy:

* torch threads: ``KPE_TORCH_THREADS`` (default 2, the book's setting on a 2-core machine; 1 on a machine
  shared with other jobs). A fixed count also keeps floating-point sums identical between the papermill run
  and the nbval re-run, which compares printed numbers;
* the global torch seed (``seed`` of the parameters cell);
* the parameter check (:func:`kpe_lib.book.parameters.check_parameters`): one clear error for a misspelt or
  mistyped parameter, before anything is computed;
* the book's figure style;
* the progress flag (:attr:`ChapterContext.progress`, off inside executed chapters and on CI), the model and
  feature cache folder (:attr:`ChapterContext.cache`) and a stage timer (:meth:`ChapterContext.stage`).

At the end, :meth:`ChapterContext.write_results` writes ``results/<scale>/<chapter>.json`` with the stage
timings added to the protocol, and :meth:`ChapterContext.timings` gives the timing table.

Example:
    >>> namespace = {"scale": "smoke", "seed": 0, "device": "cpu", "cache_dir": "/tmp/kpe-cache",
    ...              "results_dir": "/tmp/kpe-results"}
    >>> ctx = open_chapter(namespace, "01_kpe_2d", check=False)
    >>> with ctx.stage("warm-up"):
    ...     pass
    >>> list(ctx.timings().index)
    ['warm-up', 'total']
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from kpe_lib._progress import progress_enabled
from kpe_lib.book.parameters import check_parameters
from kpe_lib.book.results import write_results
from kpe_lib.book.scales import resolve_path

__all__ = ["ChapterContext", "open_chapter", "torch_threads", "table_html", "TABLE_WIDTH_PX"]

DEFAULT_THREADS = 2
#: The model and feature cache of a chapter without a ``cache_dir`` parameter (relative to the project root).
DEFAULT_CACHE = ".cache/kpe"


def torch_threads() -> int:
    """The thread count chapters run torch on: ``KPE_TORCH_THREADS`` or 2 (ValueError if not an integer >= 1)."""
    raw = os.environ.get("KPE_TORCH_THREADS", str(DEFAULT_THREADS))
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ValueError(f"KPE_TORCH_THREADS must be an integer >= 1, got {raw!r}")
    return threads


@dataclass
class ChapterContext:
    """A running chapter: its name and scale, its folders, the progress flag and the stage timer.

    Attributes:
        chapter: the chapter's file stem, e.g. ``"04_celeba_kts"``.
        scale: ``smoke``, ``cpu`` or ``paper``.
        seed: the chapter's seed.
        device: the torch device of the chapter.
        cache: absolute cache folder (``cache_dir`` under the project root).
        results_dir: the ``results_dir`` parameter (resolved when written).
        progress: whether long loops show tqdm bars (off in executed chapters and on CI).
        threads: the torch thread count that was set.
        stages: stage name -> [wall seconds, CPU seconds of this process], summed over repeats.
    """

    chapter: str
    scale: str
    seed: int
    device: str
    cache: Path
    results_dir: str
    progress: bool
    threads: int
    stages: dict[str, list[float]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @property
    def bar(self) -> bool | None:
        """The tqdm switch of :mod:`kpe_lib.metrics`: None (automatic) when progress is on, else False."""
        return None if self.progress else False

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage (wall and CPU seconds; the CPU time is the fairer cost on a shared machine).

        A stage entered several times accumulates its time."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            spent = self.stages.setdefault(name, [0.0, 0.0])
            spent[0] += time.perf_counter() - wall
            spent[1] += time.process_time() - cpu

    def timings(self):
        """The stage table (pandas DataFrame): wall and CPU seconds per stage and their total."""
        import pandas as pd

        table = pd.DataFrame([{"stage": k, "wall s": v[0], "CPU s": v[1]} for k, v in self.stages.items()],
                             columns=["stage", "wall s", "CPU s"]).set_index("stage")
        table.loc["total"] = table.sum()
        return table.round(1)

    def settings(self, values: Mapping[str, Any]):
        """The few settings a reader needs to read the chapter (training set, model, sample counts), as a small
        table shown near its top: the full parameters listing is collapsed.

        Args:
            values: label -> value, e.g. ``{"training images": 32, "samples (main table)": 256}``.
        """
        import pandas as pd

        rows = [{"setting": k, "value": ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)}
                for k, v in values.items()]
        return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting").rename_axis(
            f"{self.chapter}, {self.scale} scale")

    def generator(self, offset: int):
        """A CPU ``torch.Generator`` seeded ``seed * 1000 + offset``: one offset per use, so draws never overlap."""
        import torch

        return torch.Generator().manual_seed(self.seed * 1000 + int(offset))

    def write_results(self, metrics: Mapping[str, Any], protocol: Mapping[str, Any] | None = None) -> Path:
        """Write ``<results_dir>/<scale>/<chapter>.json``; the protocol gains ``seconds`` (the chapter's wall
        time so far), ``seconds_wall`` and ``seconds_cpu`` (per stage). Prints the path written."""
        record = dict(protocol or {})
        record.update(seconds=round(time.perf_counter() - self.started, 1),
                      seconds_wall={k: round(v[0], 1) for k, v in self.stages.items()},
                      seconds_cpu={k: round(v[1], 1) for k, v in self.stages.items()})
        path = write_results(self.chapter, self.scale, metrics, record, results_dir=self.results_dir)
        root = resolve_path(".")
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        print(f"wrote {shown}  ({len(metrics)} metrics, {record['seconds']} s)")
        return path


#: The width a chapter's table may take on the page (the text column at a 1,000 px window, with a margin).
TABLE_WIDTH_PX = 680


def _width_px(texts) -> float:
    """Estimated rendered width of a table column holding ``texts`` (book table font, cell padding)."""
    return 7.2 * max((len(t) for t in texts), default=0) + 18


def table_html(df, width_px: float = TABLE_WIDTH_PX) -> str:
    """A DataFrame's HTML as shown in the book: one table when it fits ``width_px``, else several tables of
    consecutive columns (each with the index), so a wide table never runs past the page or scrolls sideways.

    Example:
        >>> import pandas as pd
        >>> df = pd.DataFrame([[1.23456] * 20], columns=[f"column_{i}" for i in range(20)])
        >>> table_html(df).count("<table")
        3
        >>> table_html(df.iloc[:, :3]).count("<table")
        1
    """
    index = [str(i) for i in df.index] + [str(n) for n in df.index.names if n is not None]
    budget = width_px - _width_px(index)
    blocks: list[list[int]] = [[]]
    used = 0.0
    for j, column in enumerate(df.columns):
        values = df.iloc[:, [j]].to_string(index=False, header=False).splitlines()
        w = _width_px([*str(column).split(), *values])  # headers wrap between words
        if blocks[-1] and used + w > budget:
            blocks.append([])
            used = 0.0
        blocks[-1].append(j)
        used += w
    if len(blocks) == 1:
        return df._repr_html_()
    parts = [f'<p class="kpe-table-part">column{f"s {b[0] + 1}-{b[-1] + 1}" if len(b) > 1 else f" {b[0] + 1}"} '
             f'of {df.shape[1]}</p>'
             + df.iloc[:, b]._repr_html_() for b in blocks]
    return "\n".join(parts)


def _show_tables_in_blocks() -> None:
    """Inside a kernel, display every DataFrame through :func:`table_html` (text output is unchanged)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None:
        return
    import pandas as pd

    shell.display_formatter.formatters["text/html"].for_type(pd.DataFrame, table_html)


def open_chapter(namespace: dict[str, Any], chapter: str, *, check: bool = True) -> ChapterContext:
    """Set a chapter up: threads, seed, parameter check, figure style; returns its context.

    Args:
        namespace: the chapter's globals, after its parameters cell (and papermill's injected one) ran. It
            must hold ``scale``, ``seed``, ``device`` and ``results_dir``; ``cache_dir`` defaults to
            :data:`DEFAULT_CACHE`.
        chapter: the chapter's file stem, e.g. ``"04_celeba_kts"``.
        check: run :func:`~kpe_lib.book.parameters.check_parameters` (reads ``notebooks/<chapter>.md``).

    Raises:
        ParameterError: a bad parameter (see :func:`~kpe_lib.book.parameters.check_parameters`).
        ValueError: a bad ``KPE_TORCH_THREADS``.
    """
    import torch

    from kpe_lib.plotting import set_book_style

    missing = [k for k in ("scale", "seed", "device", "results_dir") if k not in namespace]
    if missing:
        raise ValueError(f"the parameters cell of {chapter} must declare {missing}")
    if check:
        check_parameters(namespace, chapter)
    threads = torch_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(namespace["seed"])
    set_book_style()
    _show_tables_in_blocks()
    return ChapterContext(chapter=chapter, scale=namespace["scale"], seed=int(namespace["seed"]),
                          device=namespace["device"], cache=resolve_path(namespace.get("cache_dir", DEFAULT_CACHE)),
                          results_dir=namespace["results_dir"], progress=progress_enabled(None),
                          threads=threads)
