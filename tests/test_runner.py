"""The book pipeline: chapter discovery, stamps, papermill execution, results files, the CLI, figures.

Execution tests run a tiny chapter in a throw-away project (tmp_path), so they do not depend on the
real chapters' cost; the consistency tests read the real chapter sources and parameter files.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml

from kpe_lib.book import runner
from kpe_lib.book.cli import main
from kpe_lib.book.results import read_results, to_jsonable, write_results
from kpe_lib.book.scales import resolve_path

ROOT = Path(__file__).resolve().parents[1]

TINY = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---

# Tiny

```{code-cell} ipython3
:tags: [parameters]

scale = "cpu"
seed = 0
tiny_value = 1
```

```{code-cell} ipython3
import os
print(f"scale={scale} value={tiny_value} progress={os.environ.get('KPE_PROGRESS')}")
assert tiny_value < 100, "tiny_value too large"
```
"""


def make_project(root: Path, tiny_value: int = 1) -> Path:
    """A minimal project: one chapter, three parameter files, one library file, book sources."""
    (root / "notebooks" / "params").mkdir(parents=True)
    (root / "notebooks" / "00_tiny.md").write_text(TINY)
    for scale in runner.SCALES:
        (root / "notebooks" / "params" / f"{scale}.yml").write_text(
            yaml.safe_dump({"scale": scale, "device": "cpu", "seed": 0, "tiny_value": tiny_value,
                            "other_chapter_key": 5}))
    (root / "kpe_lib").mkdir()
    (root / "kpe_lib" / "mod.py").write_text("X = 1\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    (root / "_config.yml").write_text("title: tiny\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\n")
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n")
    return root


def set_param(root: Path, scale: str, **values) -> None:
    path = root / "notebooks" / "params" / f"{scale}.yml"
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data))


def outputs_text(path: Path) -> str:
    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


# ---------------------------------------------------------------- discovery, selection, parameters
def test_select_chapters_by_name_number_and_slug(tmp_path):
    root = make_project(tmp_path)
    (root / "notebooks" / "02_other_thing.md").write_text(TINY)
    chapters = runner.discover_chapters(root)
    assert [c.name for c in chapters] == ["00_tiny", "02_other_thing"]
    assert [c.name for c in runner.select_chapters(chapters, ["2"])] == ["02_other_thing"]
    assert [c.name for c in runner.select_chapters(chapters, ["tiny", "00_tiny"])] == ["00_tiny"]
    assert [c.name for c in runner.select_chapters(chapters, None)] == ["00_tiny", "02_other_thing"]
    with pytest.raises(ValueError, match="matches no chapter.*00_tiny, 02_other_thing"):
        runner.select_chapters(chapters, ["03"])


def test_unknown_scale_and_missing_params_are_clear_errors(tmp_path):
    root = make_project(tmp_path)
    with pytest.raises(ValueError, match="scale must be one of smoke, cpu, gpu, paper"):
        runner.params_path(root, "huge")
    (root / "notebooks" / "params" / "paper.yml").unlink()
    with pytest.raises(ValueError, match="no parameter file"):
        runner.load_params(root, "paper")
    params = runner.load_params(root, "smoke", device="cuda")
    assert params["scale"] == "smoke" and params["device"] == "cuda" and params["tiny_value"] == 1


def test_stamp_tracks_source_params_library_and_device(tmp_path):
    root = make_project(tmp_path)
    chapter = runner.discover_chapters(root)[0]
    base = runner.chapter_stamp(chapter, root, "smoke")
    assert runner.chapter_stamp(chapter, root, "smoke") == base
    assert runner.chapter_stamp(chapter, root, "cpu") != base  # another parameter file
    assert runner.chapter_stamp(chapter, root, "smoke", device="cuda") != base
    stamps = {base}
    for path, text in [(chapter.source, TINY + "\n"), (root / "kpe_lib" / "mod.py", "X = 2\n"),
                       (root / "notebooks" / "params" / "smoke.yml", "scale: smoke\ntiny_value: 3\n")]:
        path.write_text(text)
        stamps.add(runner.chapter_stamp(chapter, root, "smoke"))
    (root / "kpe_lib" / "sub").mkdir()
    (root / "kpe_lib" / "sub" / "deep.py").write_text("Y = 0\n")  # sub-packages count too
    stamps.add(runner.chapter_stamp(chapter, root, "smoke"))
    assert len(stamps) == 5


def test_stamp_covers_the_own_study_module_only(tmp_path):
    root = make_project(tmp_path)
    chapter = runner.discover_chapters(root)[0]          # 00_tiny: its study module is experiments/tiny.py
    studies = root / "kpe_lib" / "experiments"
    (studies / "other").mkdir(parents=True)
    for path in (studies / "__init__.py", studies / "tiny.py", studies / "other.py", studies / "other" / "x.py"):
        path.write_text("A = 0\n")
    names = [p.relative_to(root).as_posix() for p in runner.stamp_sources(chapter, root)]
    assert "kpe_lib/experiments/tiny.py" in names and "kpe_lib/experiments/__init__.py" in names
    assert not [n for n in names if "other" in n]
    base = runner.chapter_stamp(chapter, root, "smoke")
    (studies / "other.py").write_text("A = 1\n")          # another chapter's study: no re-execution
    (studies / "other" / "x.py").write_text("A = 1\n")
    assert runner.chapter_stamp(chapter, root, "smoke") == base
    (studies / "tiny.py").write_text("A = 1\n")           # its own study: re-executes
    assert runner.chapter_stamp(chapter, root, "smoke") != base


def test_real_chapters_depend_on_their_own_study_modules():
    chapters = {c.slug: c for c in runner.discover_chapters(ROOT)}
    studies = ROOT / "kpe_lib" / "experiments"
    own = {slug: {p.relative_to(studies).as_posix() for p in runner.stamp_sources(c, ROOT)
                  if studies in p.parents and p != studies / "__init__.py"} for slug, c in chapters.items()}
    for slug, files in own.items():   # a module experiments/<slug>.py or a package experiments/<slug>/
        assert all(f == f"{slug}.py" or f.startswith(f"{slug}/") for f in files), (slug, files)
    assert "semantics_guidance/paper_pipeline.py" in own["semantics_guidance"]
    assert own["celeba_kts"] and own["efm_memorization"]


# ---------------------------------------------------------------- execution
@pytest.mark.slow
def test_run_skip_force_and_failure_keep_previous_notebook(tmp_path):
    root = make_project(tmp_path / "proj")
    out = tmp_path / "stage"
    source_before = (root / "notebooks" / "00_tiny.md").read_text()
    lines: list[str] = []

    report = runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append)
    executed = out / "book" / "chapters" / "00_tiny.ipynb"
    assert report.ok and [r.status for r in report.runs] == ["executed"]
    assert "scale=smoke value=1 progress=0" in outputs_text(executed)
    assert (out / "_config.yml").is_file() and (out / "book" / "intro.md").is_file()  # staging copy
    nb = nbformat.read(str(executed), as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "other_chapter_key" not in injected[0].source  # only declared names
    assert (root / "notebooks" / "00_tiny.md").read_text() == source_before  # sources stay clean
    assert not list((root / "notebooks").glob("*.ipynb"))
    assert any("00_tiny (smoke): executed in" in line for line in lines)

    again = runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append)
    assert [r.status for r in again.runs] == ["skipped"]
    forced = runner.run_chapters(root=root, scale="smoke", out=out, force=True, log=lines.append)
    assert [r.status for r in forced.runs] == ["executed"]
    good_bytes = executed.read_bytes()

    set_param(root, "smoke", tiny_value=500)  # the chapter's assert fails now
    failed = runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append)
    assert not failed.ok and failed.runs[0].status == "failed"
    assert "tiny_value too large" in failed.runs[0].error
    assert executed.read_bytes() == good_bytes  # previous executed notebook intact
    assert (out / "_build" / "failed" / "00_tiny.ipynb").is_file()
    assert not list((out / "book" / "chapters").glob(".*.running.ipynb"))


@pytest.mark.slow
def test_parameters_cell_is_read_once_and_bad_lines_fail_loudly(tmp_path):
    root = make_project(tmp_path)
    source = root / "notebooks" / "00_tiny.md"
    # '=' inside a comment used to make papermill's parser drop the name; the one reader (ast) keeps it
    source.write_text(TINY.replace("tiny_value = 1", "tiny_value = 1  # default (here = 1)"))
    set_param(root, "smoke", tiny_value=7)
    report = runner.run_chapters(root=root, scale="smoke", out=tmp_path / "out", log=lambda m: None)
    assert report.ok and "value=7" in outputs_text(report.runs[0].notebook)
    # one listing on the page: the chapter's own cell, collapsed, showing the value the run was given
    cells = nbformat.read(str(report.runs[0].notebook), as_version=4).cells
    params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and "hide-cell" in params[0].metadata["tags"]
    assert "tiny_value = 7  # default (here = 1)" in params[0].source
    assert "smoke scale" in params[0].metadata["mystnb"]["code_prompt_show"]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    source.write_text(TINY.replace("tiny_value = 1", "tiny_value = int('1')"))
    report = runner.run_chapters(root=root, scale="smoke", out=tmp_path / "out2", log=lambda m: None)
    assert not report.ok and "plain `name = literal" in report.runs[0].error
    assert "tiny_value = int('1')" in report.runs[0].error


def test_cli_errors_and_exit_codes(tmp_path, monkeypatch, capsys):
    root = make_project(tmp_path)
    monkeypatch.setenv("KPE_ROOT", str(root))
    assert main(["list"]) == 0
    assert "00_tiny" in capsys.readouterr().out
    assert main(["run", "99", "--scale", "smoke"]) == 2
    assert "matches no chapter" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--scale", "huge"])


@pytest.mark.slow
def test_cli_run_failure_exits_nonzero(tmp_path, monkeypatch):
    root = make_project(tmp_path)
    set_param(root, "smoke", tiny_value=500)
    monkeypatch.setenv("KPE_ROOT", str(root))
    assert main(["run", "tiny", "--scale", "smoke"]) == 1
    assert not (root / "book" / "chapters" / "00_tiny.ipynb").exists()
    assert (root / "_build" / "failed" / "00_tiny.ipynb").is_file()


# ---------------------------------------------------------------- results files
def test_write_results_round_trip_and_refusals(tmp_path):
    import torch

    path = write_results("01_kpe_2d", "smoke", {"kpe_mean": torch.tensor(1.5), "ci": (0.1, np.float32(0.25)),
                                                 "n": np.int64(3)}, {"solver": "euler", "root": tmp_path},
                         results_dir=tmp_path)
    assert path == tmp_path / "smoke" / "01_kpe_2d.json"
    data = json.loads(path.read_text())
    assert data == {"chapter": "01_kpe_2d", "scale": "smoke",
                    "metrics": {"kpe_mean": 1.5, "ci": [0.1, 0.25], "n": 3},
                    "protocol": {"solver": "euler", "root": str(tmp_path)}}
    assert read_results(path).metrics["n"] == 3
    with pytest.raises(ValueError, match=r"metrics\.bad must be a finite number"):
        write_results("01_kpe_2d", "smoke", {"bad": math.nan}, results_dir=tmp_path)
    with pytest.raises(ValueError, match="chapter must be a name"):
        write_results("../escape", "smoke", {"a": 1}, results_dir=tmp_path)
    with pytest.raises(ValueError, match="non-empty mapping"):
        write_results("01_kpe_2d", "smoke", {}, results_dir=tmp_path)
    with pytest.raises(ValueError, match="which JSON cannot hold"):
        to_jsonable({"f": object()})
    assert sorted(p.name for p in (tmp_path / "smoke").iterdir()) == ["01_kpe_2d.json"]  # no temp files left
    (tmp_path / "broken.json").write_text('{"chapter": "x"}')
    with pytest.raises(ValueError, match="lacks the key"):
        read_results(tmp_path / "broken.json")


def test_resolve_path_uses_project_root_not_cwd(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    deep = root / "book" / "chapters"
    deep.mkdir(parents=True)
    monkeypatch.delenv("KPE_ROOT", raising=False)
    monkeypatch.chdir(deep)  # nbval runs a notebook from its own folder
    assert resolve_path("results") == (root / "results").resolve()
    assert resolve_path(tmp_path / "abs") == tmp_path / "abs"
    monkeypatch.setenv("KPE_ROOT", str(tmp_path))
    assert resolve_path("results") == (tmp_path / "results").resolve()
    with pytest.raises(ValueError, match="non-empty path"):
        resolve_path("")


# ---------------------------------------------------------------- the real chapters and parameter files
def _declared(source: Path) -> list[str]:
    import jupytext

    nb = jupytext.read(source)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{source.name} must have exactly one cell tagged 'parameters'"
    names = []
    for line in cells[0].source.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            names.append(line.split("=", 1)[0].strip())
    return names


def test_real_chapters_declare_parameters_every_scale_sets():
    chapters = runner.discover_chapters(ROOT)
    assert chapters, "no chapter sources in notebooks/"
    params = {s: runner.load_params(ROOT, s) for s in runner.SCALES}
    shared = {"scale", "device", "seed", "data_root", "results_dir", "cache_dir"}
    for scale, values in params.items():
        assert shared <= set(values), f"{scale}.yml lacks shared keys {shared - set(values)}"
        assert values["scale"] == scale
    declared = set()
    for chapter in chapters:
        for name in _declared(chapter.source):
            declared.add(name)
            missing = [s for s, values in params.items() if name not in values]
            assert not missing, f"{chapter.name} declares {name!r}, which {missing} do not set"
    for scale, values in params.items():  # the runner injects declared names only: a misspelt key would be dropped
        unread = sorted(set(values) - declared)
        assert not unread, f"{scale}.yml sets {unread}, which no chapter declares"


def test_toc_lists_every_chapter():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [entry["file"] for part in toc["parts"] for entry in part["chapters"]]
    for chapter in runner.discover_chapters(ROOT):
        assert f"book/chapters/{chapter.name}" in files, f"_toc.yml does not list {chapter.name}"


# ---------------------------------------------------------------- figures
def test_make_grid_places_every_image():
    from kpe_lib.plotting import make_grid

    images = np.stack([np.full((1, 2, 3), v) for v in (0.0, 0.5, 1.0)])  # (3, 1, 2, 3)
    grid = make_grid(images, nrow=2, padding=1, pad_value=0.25)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1)
    assert np.all(grid[1:3, 1:4] == 0.0) and np.all(grid[1:3, 5:8] == 0.5) and np.all(grid[4:6, 1:4] == 1.0)
    assert np.all(grid[4:6, 5:8] == 0.25) and np.all(grid[0] == 0.25)  # empty cell and padding
    assert make_grid(images * 4 - 2, nrow=3, value_range=None).max() == 1.0
    with pytest.raises(ValueError, match="images must have shape"):
        make_grid(np.zeros((2, 2, 4, 4)))
    with pytest.raises(ValueError, match="nrow must be"):
        make_grid(images, nrow=0)


def test_plots_validate_shapes_and_save_atomically(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from kpe_lib.plotting import energy_profile_plot, save_figure, trajectory_plot

    traj = torch.cumsum(torch.randn(11, 5, 2), 0)
    ax = trajectory_plot(traj, torch.rand(5) + 0.1)
    assert len(ax.collections) >= 3
    with pytest.raises(ValueError, match=r"\(N\+1, B, 2\)"):
        trajectory_plot(torch.zeros(11, 5, 3))
    with pytest.raises(ValueError, match="group 'none' must be a non-empty"):
        energy_profile_plot(torch.linspace(0, 0.9, 10), torch.rand(10, 4), {"none": torch.zeros(4, dtype=bool)})
    path = save_figure(ax.figure, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    plt.close("all")


# ---------------------------------------------------------------- parameter overrides
def test_overrides_enter_the_stamp_and_must_be_declared(tmp_path, monkeypatch, capsys):
    root = make_project(tmp_path)
    chapter = runner.discover_chapters(root)[0]
    base = runner.chapter_stamp(chapter, root, "smoke")
    assert runner.chapter_stamp(chapter, root, "smoke", overrides={"tiny_value": 2}) != base
    assert runner.chapter_stamp(chapter, root, "smoke", overrides={}) == base
    assert runner.load_params(root, "smoke", overrides={"tiny_value": 7})["tiny_value"] == 7
    with pytest.raises(ValueError, match=r"overrides \['tiny_valu'\] are declared by none of the chapters 00_tiny"):
        runner.run_chapters(root=root, scale="smoke", overrides={"tiny_valu": 2}, log=lambda m: None)
    with pytest.raises(ValueError, match="own arguments"):
        runner.run_chapters(root=root, scale="smoke", overrides={"scale": "paper"}, log=lambda m: None)
    monkeypatch.setenv("KPE_ROOT", str(root))
    assert main(["run", "--scale", "smoke", "--set", "tiny_value"]) == 2
    assert "--set takes KEY=VALUE" in capsys.readouterr().err
    assert main(["run", "--scale", "smoke", "--set", "tiny_valu=3"]) == 2
    assert "declared by none of the chapters" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_set_reaches_the_kernel(tmp_path, monkeypatch):
    root = make_project(tmp_path / "proj")
    monkeypatch.setenv("KPE_ROOT", str(root))
    assert main(["run", "tiny", "--scale", "smoke", "--out", str(tmp_path / "out"), "--set", "tiny_value=42"]) == 0
    executed = tmp_path / "out" / "book" / "chapters" / "00_tiny.ipynb"
    assert "scale=smoke value=42" in outputs_text(executed)
    stamp = json.loads((tmp_path / "out" / "book" / "chapters" / "00_tiny.stamp.json").read_text())
    assert stamp["overrides"] == {"tiny_value": 42}
