"""Generated pages of the book: the reproduction scoreboard, the scales' parameters, the API reference.

The main build (``python -m kpe_lib build``) writes them into ``<book>/generated/`` before Jupyter Book runs,
so they always show the committed ``results/`` and the current parameter files and docstrings.
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from kpe_lib._files import atomic_write_text
from kpe_lib.book.scales import SCALES, load_params
from kpe_lib.book.scoreboard import VERDICTS, scoreboard
from kpe_lib.book.summary import summary_figure, summary_markdown

SCALE_ORDER = ("cpu", "gpu", "paper", "smoke")  # the book shows its own scale first
API_MODULES = (
    "kpe_lib", "kpe_lib.grids", "kpe_lib.shaping", "kpe_lib.sampling", "kpe_lib.diagnostics", "kpe_lib.solvers",
    "kpe_lib.closed_form", "kpe_lib.mixture_velocity", "kpe_lib.reference", "kpe_lib.adapters", "kpe_lib.accelerate",
    "kpe_lib.energy_aware", "kpe_lib.data", "kpe_lib.models", "kpe_lib.training", "kpe_lib.metrics",
    "kpe_lib.plotting", "kpe_lib.integrations", "kpe_lib.integrations.torchcfm", "kpe_lib.integrations.diffusers",
    "kpe_lib.book.scoreboard",
)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


VERDICT_HELP = (
    "*reproduced in magnitude*: the test rejects the null at the 5% level in the paper's direction, the protocols "
    "match and our number is within the row's tolerance of the paper's; *reproduced in direction*: significant in "
    "the paper's direction, magnitude not comparable or different; *not established*: the test does not reject "
    "the null (after Holm's correction over the outcomes of one claim), or the verdict differs when the book is "
    "rebuilt with another seed; *below resolution*: the paper's effect is smaller than this run's resolution (the "
    "half-width of its 95% interval); *not reproduced*: significant against the paper's direction; *untested*: the "
    "chapter reports no test for the row; *not run*: no result at that scale.")


def _table(entries: list, notes: list[str]) -> list[str]:
    lines = ["| metric | paper | this project | test | verdict | chapter | note |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        note = f"({notes.index(e.row.note) + 1})" if e.row.note else ""
        lines.append("| " + " | ".join(_cell(x) for x in (
            f"{e.row.experiment}: {e.row.metric}", e.row.paper, e.value, e.evidence, f"**{e.verdict}**",
            e.row.chapter[:2], note)) + " |")
    return lines + [""]


def scoreboard_markdown(results_dir: str | Path) -> str:
    """The scoreboard page: per scale, the primary rows, the robustness rows, the rebuild comparison."""
    entries = scoreboard(results_dir, SCALE_ORDER)
    lines = ["# Reproduction scoreboard", "",
             "Every headline number of the paper beside this project's, per scale, generated from "
             "`results/<scale>/*.json` by the main build; the rows (paper numbers, tolerances, tests) are "
             "`kpe_lib.book.scoreboard.ROWS`, the rules `kpe_lib.book.verdicts` ({ref}`§5.7 <math-tests>`). "
             "Verdicts: " + VERDICT_HELP, "",
             "The `cpu` scale runs small models on 2 CPU cores: read its numbers with the protocol notes and the "
             "chapters' own discussion; `smoke` only checks the wiring and its numbers mean nothing.", ""]
    notes = list(dict.fromkeys(e.row.note for e in entries if e.row.note))
    for scale in SCALE_ORDER:
        rows = [e for e in entries if e.scale == scale]
        counts = {v: sum(e.verdict == v for e in rows if e.row.role == "primary") for v in VERDICTS}
        lines += [f"## Scale `{scale}`", "",
                  "Primary rows: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + ".", ""]
        lines += _table([e for e in rows if e.row.role == "primary"], notes)
        robust = [e for e in rows if e.row.role == "robustness"]
        if robust:
            lines += [f"### Robustness rows (`{scale}`)", "",
                      "The same claims in the other feature spaces and the pooled (not within-class) semantics "
                      "comparison; they do not decide a claim.", ""] + _table(robust, notes)
        reps = sorted({name for e in rows for name in e.replicates})
        if reps:
            rebuilt = [e for e in rows if e.replicates]
            flipped = [e for e in rebuilt if e.flipped]
            lines += [f"### Rebuilt with another seed (`{scale}`)", "",
                      f"The book was rebuilt with new training seeds and new sampling noise ({', '.join(reps)}); "
                      f"{len(rebuilt)} of {len(rows)} rows were rebuilt, {len(flipped)} of them changed verdict, and "
                      "those read *not established* above. Rows of chapters not rebuilt say so.", "",
                      "| metric | seed 0 | " + " | ".join(reps) + " | same |", "|---|---|" + "---|" * len(reps) + "---|"]
            for e in rows:
                main = e.judgement.verdict if e.judgement is not None else e.verdict
                same = "not rebuilt" if not e.replicates else ("no" if e.flipped else "yes")
                lines.append("| " + " | ".join(_cell(x) for x in (
                    e.row.metric, main, *(e.replicates.get(r, "not rebuilt") for r in reps), same)) + " |")
            lines.append("")
    lines += ["## Notes on protocols", ""] + [f"{i}. {_cell(n)}" for i, n in enumerate(notes, 1)] + [""]
    return "\n".join(lines)


def parameters_markdown(root: str | Path) -> str:
    """The scales' parameter files as one table: a row per parameter, a column per scale."""
    root = Path(root)
    params = {}
    for scale in SCALES:
        if (root / "notebooks" / "params" / f"{scale}.yml").is_file():  # a broken file: one error naming it
            params[scale] = {k: v for k, v in load_params(root, scale).items() if k not in ("scale", "device")}
        else:
            params[scale] = {}
    names = list(dict.fromkeys(k for scale in params.values() for k in scale))
    lines = ["# Parameters of the scales", "",
             f"Generated from `notebooks/params/{{{','.join(SCALES)}}}.yml`. Chapter keys carry a prefix: `toy_` "
             "chapter 1, `efm_` chapter 2, `cifar_` chapter 3, `celeba_` chapter 4, `sem_` chapter 5, `byom_` the "
             "page Bring your own model.", "",
             "| parameter | " + " | ".join(SCALES) + " |", "|---" * (len(SCALES) + 1) + "|"]
    for name in names:
        lines.append(f"| `{name}` | " + " | ".join(
            f"`{_cell(params[s].get(name, '-'))}`" for s in SCALES) + " |")
    return "\n".join(lines) + "\n"


def _public_members(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and \
                (module.__name__ == "kpe_lib" or getattr(obj, "__module__", "").startswith(module.__name__)):
            out.append((name, obj))
    return out


def api_markdown(modules: tuple[str, ...] = API_MODULES) -> str:
    """The API reference: every public class and function of ``modules`` with signature and docstring."""
    lines = ["# API reference", "", "Generated from the docstrings of `kpe_lib` by the main build. "
             "Section numbers such as Mathematics §2 refer to the project's specification of the paper's math.", ""]
    seen: set[int] = set()
    for name in modules:
        module = importlib.import_module(name)
        members = [(n, o) for n, o in _public_members(module) if id(o) not in seen]
        if not members and name != "kpe_lib":
            continue
        lines += [f"## `{name}`", "", inspect.cleandoc(module.__doc__ or "").split("\n\n")[0], ""]
        for member, obj in members:
            seen.add(id(obj))
            try:
                sig = str(inspect.signature(obj))
            except (TypeError, ValueError):
                sig = "(...)"
            kind = "class" if inspect.isclass(obj) else "def"
            lines += [f"### `{member}`", "", "```python", f"{kind} {member}{sig}", "```", "",
                      "```text", inspect.cleandoc(obj.__doc__ or "(no docstring)"), "```", ""]
    return "\n".join(lines)


def write_generated_pages(root: str | Path, book_dir: str | Path) -> list[Path]:
    """Write the introduction's summary (summary.md, summary.png), scoreboard.md, parameters.md and api.md
    into ``<book_dir>/generated/``; return their paths."""
    root, folder = Path(root), Path(book_dir) / "generated"
    return [summary_figure(root / "results", folder / "summary.png"),
            atomic_write_text(folder / "summary.md", summary_markdown(root / "results", "generated/summary.png")),
            atomic_write_text(folder / "scoreboard.md", scoreboard_markdown(root / "results")),
            atomic_write_text(folder / "parameters.md", parameters_markdown(root)),
            atomic_write_text(folder / "api.md", api_markdown())]
