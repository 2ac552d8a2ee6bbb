"""The library's layout: four tiers with dependencies pointing one way, small modules, no import cycle,
citations that resolve inside the repository, chapters that open with the chapter context.

Imports are read from the source (``ast``), so a lazy import inside a function counts as much as one at the
top of a module.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "kpe_lib"
BUILDING_BLOCKS = ("data", "models", "training", "metrics", "plotting", "integrations")
# lower tier number = more basic; a module may import only its own tier or lower ones
TIER = {"core": 0, **{b: 1 for b in BUILDING_BLOCKS}, "experiments": 2, "book": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def tier_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in TIER else "core"


def library_imports(path: Path) -> set[str]:
    """The kpe_lib modules ``path`` imports (absolute names; ``from kpe_lib.x import y`` counts as kpe_lib.x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kpe_lib") and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("kpe_lib")}
    return found


MODULES = {module_name(p): p for p in sorted(LIB.rglob("*.py"))}
GRAPH = {name: library_imports(path) for name, path in MODULES.items()}


def test_tree_has_the_four_tiers():
    for folder in (*BUILDING_BLOCKS, "experiments", "book"):
        assert (LIB / folder / "__init__.py").is_file(), folder
    core = sorted(p.stem for p in LIB.glob("*.py"))
    for name in ("grids", "shaping", "solvers", "sampling", "closed_form", "mixture_velocity", "reference",
                 "adapters", "accelerate", "energy_aware"):
        assert name in core


@pytest.mark.parametrize("module", sorted(MODULES))
def test_dependencies_point_one_way(module):
    if module == "kpe_lib.__main__":  # the command-line entry point of the book machinery
        return
    mine = TIER[tier_of(module)]
    for target in GRAPH[module]:
        theirs = TIER[tier_of(target)]
        assert theirs <= mine, f"{module} ({tier_of(module)}) imports {target} ({tier_of(target)})"
        if tier_of(module) == "experiments" and tier_of(target) == "experiments":
            # a study module may use its own package only, never another chapter's study
            assert target.split(".")[2] == module.split(".")[2], f"{module} imports another study: {target}"


def test_models_know_no_metric():
    for module, targets in GRAPH.items():
        if tier_of(module) == "models":
            assert not [t for t in targets if tier_of(t) == "metrics"], module


def test_no_import_cycle():
    def package_closure(target: str) -> set[str]:
        # importing kpe_lib.a.b runs kpe_lib/__init__ and kpe_lib/a/__init__ first
        parts = target.split(".")
        return {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(MODULES)

    edges = {m: set().union(*(package_closure(t) for t in ts)) - {m} if ts else set() for m, ts in GRAPH.items()}
    # a package importing its own submodules is not a cycle by itself; check module-level cycles among
    # leaves by depth-first search, ignoring edges from a package __init__ into its own children
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if nxt.startswith(node + "."):   # package -> own submodule
                continue
            if node.startswith(nxt + "."):   # submodule -> own package: executed first, not a cycle
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [node, nxt]))
            if state.get(nxt) is None:
                visit(nxt, stack + [node])
        state[node] = 2

    for module in sorted(edges):
        if state.get(module) is None:
            visit(module, [])


@pytest.mark.parametrize("path", sorted(LIB.rglob("*.py")), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_module_over_400_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 400


def test_citations_resolve_inside_the_repository():
    math_page = (ROOT / "book" / "mathematics.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"^#+ (\d+(?:\.\d+)?)\.? ", math_page, flags=re.M))
    outside = re.compile(r"\bSPEC\b(?!\w)|\bDESIGN\b|HINTS\.md|SPEC\.md")
    cited = re.compile(r"Mathematics §(\d+(?:\.\d+)?)")
    files = [*LIB.rglob("*.py"), *(ROOT / "notebooks").glob("*.md"), *(ROOT / "tests").glob("*.py"),
             *(ROOT / "book").glob("*.md")]
    for path in files:
        if path.name == Path(__file__).name:
            continue
        text = path.read_text(encoding="utf-8")
        assert not outside.search(text.replace("FM_SPEC", "")), f"{path} cites a document outside the repository"
        for number in cited.findall(text):
            assert number in sections, f"{path} cites Mathematics §{number}, which book/mathematics.md lacks"


def test_importing_kpe_lib_changes_no_global_state():
    third_party = "import numpy, scipy.linalg, scipy.special, scipy.stats, sklearn, matplotlib.pyplot, tqdm.auto"
    code = (f"import warnings, torch; {third_party}; before = (list(warnings.filters), torch.get_num_threads()); "
            "import kpe_lib, kpe_lib.metrics, kpe_lib.plotting, kpe_lib.models, kpe_lib.training, kpe_lib.data; "
            "assert (list(warnings.filters), torch.get_num_threads()) == before, 'global state changed'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_public_api_exports_adapters_and_errors():
    import kpe_lib

    for name in ("time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity", "NonFiniteError",
                 "TimeFirst", "ReversedTime"):
        assert name in kpe_lib.__all__ and hasattr(kpe_lib, name)


CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.md"))


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_opens_with_the_chapter_context(source):
    text = source.read_text(encoding="utf-8")
    assert f'open_chapter(globals(), "{source.stem}")' in text
    assert "ctx.write_results(" in text
    for copied in ("torch.set_num_threads", "check_parameters(", "set_book_style()", "def stage(",
                   "write_results(\"", "KPE_PROGRESS"):
        assert copied not in text, f"{source.name} still copies the set-up: {copied}"


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_every_chapter_ends_with_its_meaning_and_a_rerun_box(source):
    """Issue 20: a reader finishes a chapter with "what this means" and the exact commands to re-run it."""
    text = source.read_text(encoding="utf-8")
    box = text[text.rindex(":::{admonition} Re-run this chapter"):]
    num = source.stem[:2]
    for scale, device in (("cpu", ""), ("gpu", " --device cuda"), ("paper", " --device cuda")):
        assert f"python -m kpe_lib run {num} --scale {scale}{device}`" in box, (source.name, scale)
    assert box.rstrip().endswith(":::"), f"{source.name}: the re-run box is not the chapter's last block"
    if source.stem != "06_bring_your_own_model":  # a how-to page, not a test of the paper
        assert "\n## What this means\n" in text and text.index("## What this means") < text.rindex(":::{admonition}")
    assert not re.search(r"^# \d+\.", text, re.M), f"{source.name}: the book numbers chapters (_toc.yml), not titles"
