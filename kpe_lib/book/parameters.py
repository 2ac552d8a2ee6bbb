"""Checking a chapter's parameters inside its kernel (issue 9's reliability pass).

papermill injects whatever it is given: a misspelt name becomes a new global that nothing reads (the
chapter then silently runs with the default), and a string where a number belongs fails much later, or
not at all. Each chapter therefore calls :func:`check_parameters` right after its imports. It reads the
chapter's own ``parameters`` cell (the defaults) and the scales' parameter files
(``notebooks/params/<scale>.yml``) and raises one :class:`ParameterError` listing

* ``scale`` values outside ``smoke``, ``cpu``, ``gpu``, ``paper``;
* plain-data globals (numbers, strings, lists, dicts, None: what papermill can inject) that carry one
  of the chapter's parameter prefixes (``celeba_``, ``toy_``, ...) but are not declared -- a
  misspelling, with the closest declared name suggested;
* values whose type is none of the types the default and the parameter files use for that name (an
  ``int`` is accepted where a ``float`` is; ``None`` only where a default or a file uses it).

:func:`parameters_cell` is the one reader of a parameters cell (jupytext + ``ast``): the runner takes the
names to inject from it and this module the defaults to check against. A cell line that is not a plain
``name = literal`` assignment is refused with the line named.

Example (first cell after the imports of ``notebooks/04_celeba_kts.md``)::

    check_parameters(globals(), "04_celeba_kts")
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any, Mapping

from kpe_lib.book.scales import SCALES, as_root, load_params

__all__ = ["ParameterError", "ParametersCell", "parameters_cell", "chapter_defaults", "allowed_types",
           "check_parameters", "rendered_parameters"]

class ParameterError(ValueError):
    """A chapter was given parameters it does not declare, or of the wrong type."""


@dataclasses.dataclass(frozen=True)
class ParametersCell:
    """The cell tagged ``parameters`` of a chapter source.

    Attributes:
        defaults: name -> default value, in the cell's order.
        none_ok: names whose comment mentions ``None`` (a documented value even where no file uses it).
    """

    defaults: dict[str, Any]
    none_ok: frozenset[str]


def parameters_cell(source: str | os.PathLike) -> ParametersCell:
    """Read the cell tagged ``parameters`` of a jupytext chapter source (``notebooks/NN_slug.md``).

    Raises:
        ParameterError: no such file, no such cell, or a statement that is not ``name = literal``.
    """
    source = Path(source)
    if not source.is_file():
        raise ParameterError(f"chapter must name a source notebooks/<chapter>.md; {source} does not exist")
    import jupytext

    for cell in jupytext.read(source).cells:
        if cell.cell_type != "code" or "parameters" not in cell.metadata.get("tags", []):
            continue
        code = cell.source
        defaults = {}
        for node in ast.parse(code).body:
            plain = isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
            try:
                if not plain:
                    raise ValueError("not a single-name assignment")
                defaults[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                line = code.splitlines()[node.lineno - 1].strip()
                raise ParameterError(f"{source}: the parameters cell must hold plain `name = literal  # comment` "
                                     f"lines (numbers, strings, lists, dicts, None); got {line!r}") from None
        none_ok = {n for n in defaults if re.search(rf"^{n}\s*=[^#\n]*#.*\bNone\b", code, re.M)}
        return ParametersCell(defaults, frozenset(none_ok))
    raise ParameterError(f"{source} has no code cell tagged 'parameters'")


def chapter_defaults(chapter: str, root: str | os.PathLike | None = None) -> tuple[dict[str, Any], set[str]]:
    """The defaults of ``notebooks/<chapter>.md``'s parameters cell and the names documented as taking None.

    Args:
        chapter: the chapter's file stem, e.g. ``"04_celeba_kts"``.
        root: the project root (default: :func:`kpe_lib.book.scales.project_root`).
    """
    cell = parameters_cell(as_root(root) / "notebooks" / f"{chapter}.md")
    return dict(cell.defaults), set(cell.none_ok)


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def allowed_types(chapter: str, root: str | os.PathLike | None = None) -> dict[str, set[str]]:
    """Per declared name, the type names its default and every scale's parameter file use.

    A name that is None everywhere (e.g. ``data_root``, which then falls back to ``KPE_DATA``) has no
    knowable type and is left out: any value passes."""
    root = as_root(root)
    defaults, none_ok = chapter_defaults(chapter, root)
    allowed = {name: {_kind(v)} | ({"None"} if name in none_ok else set()) for name, v in defaults.items()}
    for scale in SCALES:
        for name, value in load_params(root, scale).items():
            if name in allowed:
                allowed[name].add(_kind(value))
    for kinds in allowed.values():
        if "float" in kinds:
            kinds.add("int")
    return {name: kinds for name, kinds in allowed.items() if kinds != {"None"}}


def _prefixes(names: set[str]) -> set[str]:
    """Prefixes shared by at least two declared names, e.g. ``{"celeba_"}``."""
    heads = [n.split("_", 1)[0] + "_" for n in names if "_" in n]
    return {h for h in set(heads) if heads.count(h) >= 2}


def check_parameters(namespace: Mapping[str, Any], chapter: str, root: str | os.PathLike | None = None) -> None:
    """Raise one :class:`ParameterError` listing every bad parameter in ``namespace`` (a chapter's globals).

    Args:
        namespace: the chapter's globals after the parameters (and papermill's injected) cell ran.
        chapter: the chapter's file stem, e.g. ``"04_celeba_kts"``.
        root: the project root (default: :func:`kpe_lib.book.scales.project_root`).
    """
    allowed = allowed_types(chapter, root)
    declared = set(chapter_defaults(chapter, root)[0])
    problems = []
    if "scale" in declared and namespace.get("scale") not in SCALES:
        problems.append(f"scale must be one of {', '.join(SCALES)}, got {namespace.get('scale')!r}")
    prefixes = _prefixes(declared)
    for name in sorted(namespace):
        value = namespace[name]
        plain = value is None or isinstance(value, (bool, int, float, str, list, tuple, dict))
        if plain and name not in declared and any(name.startswith(p) for p in prefixes):  # not imports
            close = difflib.get_close_matches(name, sorted(declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown parameter {name!r}{hint}; the parameters cell of notebooks/{chapter}.md "
                            "lists the declared ones")
    for name, kinds in allowed.items():
        if name in namespace and _kind(namespace[name]) not in kinds:
            problems.append(f"{name} must be {' or '.join(sorted(kinds))} (as in the parameters cell and "
                            f"notebooks/params/*.yml), got {_kind(namespace[name])} {namespace[name]!r}")
    if problems:
        raise ParameterError(f"bad parameters for {chapter}: " + "; ".join(problems))


def rendered_parameters(code: str, values: Mapping[str, Any]) -> str:
    """A parameters cell's source with the values a run was given written in place of the defaults.

    The executed chapter shows one parameters listing (papermill's injected copy is removed from the page):
    every ``name = literal  # comment`` line whose name is in ``values`` gets that value, its comment kept
    at the same column; a literal spread over several lines becomes one line. Other lines are unchanged.

    Example:
        >>> print(rendered_parameters("n = 16     # samples\\nk = [1,\\n     2]", {"n": 256, "k": [3]}))
        n = 256    # samples
        k = [3]
    """
    import io
    import tokenize

    lines = code.splitlines()
    comments = {tok.start[0]: (tok.start[1], tok.string)
                for tok in tokenize.generate_tokens(io.StringIO(code).readline) if tok.type == tokenize.COMMENT}
    for node in reversed(ast.parse(code).body):
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name not in values:
            continue
        new = f"{name} = {values[name]!r}"
        first, last = node.lineno, node.end_lineno
        comment = next((comments[i] for i in range(first, last + 1) if i in comments), None)
        if comment is not None:
            column, text = comment
            new = new.ljust(column - 1) + " " + text
        lines[first - 1:last] = [new]
    return "\n".join(lines)
