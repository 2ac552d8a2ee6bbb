"""Every figure of a chapter carries a caption: the MyST-NB cell option ``mystnb.figure.caption``.

A figure cell is a code cell of a chapter source (``notebooks/NN_slug.md``) that calls a function whose name
ends in ``_figure`` or calls ``plt.subplots``. Its caption says what the figure shows and what to look at; it
is static text, so it must stay true at every scale (no number of this run). MyST-NB renders it as one
paragraph, so it may hold no blank line, and it has no ``name`` (a cell with two images would get the same
label twice, a warning the build turns into an error).
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "notebooks").glob("0[1-6]_*.md"))
FIGURE_CALL = re.compile(r"\b\w+_figure\(|\bplt\.subplots\(")
MIN_CHARS = 40

# Chapters whose captions are still being written (none now).
PENDING: set[str] = set()


def figure_cells(source: Path):
    """The chapter's figure cells as (first figure call line, figure calls in the cell, cell)."""
    for cell in jupytext.read(source).cells:
        if cell.cell_type != "code":
            continue
        calls = [line.strip() for line in cell.source.splitlines() if FIGURE_CALL.search(line)]
        if calls:
            yield calls[0], len(calls), cell


def test_every_chapter_is_checked():
    stems = {p.stem for p in CHAPTERS}
    assert len(stems) == 6 and PENDING <= stems


@pytest.mark.parametrize("source", CHAPTERS, ids=lambda p: p.stem)
def test_every_figure_cell_has_a_caption(source):
    if source.stem in PENDING:
        pytest.skip(f"{source.stem}: captions pending")
    cells = list(figure_cells(source))
    assert cells, f"{source.name} has no figure cell"
    for first_call, n_calls, cell in cells:
        where = f"{source.name}: cell drawing {first_call!r}"
        assert n_calls == 1, f"{where} draws {n_calls} figures: split it into one cell per figure"
        figure = cell.metadata.get("mystnb", {}).get("figure", {})
        caption = figure.get("caption")
        assert isinstance(caption, str) and len(caption.strip()) >= MIN_CHARS, \
            f"{where} needs mystnb.figure.caption of at least {MIN_CHARS} characters"
        assert "\n\n" not in caption.strip(), f"{where}: the caption must be one paragraph"
        assert "name" not in figure, f"{where}: no figure name (duplicate labels fail the build)"
