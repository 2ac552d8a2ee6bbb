"""Issue 9's reliability catalogue: every kind of bad input gives one clear error and leaves earlier results intact.

Issue 14's catalogue by family (shapes, dtypes, NaN/inf, ranges, types, corrupt caches, concurrent, killed and
skipped runs) is ``tests/test_reliability_catalogue.py``.

| bad input | where it is caught | message names |
|---|---|---|
| misspelt parameter in a papermill call | ``check_parameters`` in the chapter's setup cell | the name, the closest declared name |
| parameter of the wrong type | ``check_parameters`` | the name, the allowed types, the value |
| unknown scale (papermill, runner, CLI) | ``check_parameters`` / ``runner.params_path`` / argparse | the allowed scales |
| missing data | ``kpe_lib.data`` loaders | the dataset, the folders searched, where to get it |
| corrupt checkpoint | ``kpe_lib.training.load_checkpoint`` | the file, "delete it to start over" |
| NaN velocities | ``kpe_lib.sample`` | the step index and time |
| NaN metric | ``write_results`` | the metric |

"Earlier results intact": a results file written before the failure keeps its bytes, and no temporary
file is left beside it. The papermill cases execute the real chapter sources (the failure comes in the
setup cell, seconds after the kernel starts).
"""
from __future__ import annotations

import math
from pathlib import Path

import jupytext
import nbformat
import pytest
import torch

from kpe_lib import sample
from kpe_lib.book import runner
from kpe_lib.book.cli import main
from kpe_lib.book.parameters import ParameterError, allowed_types, chapter_defaults, check_parameters
from kpe_lib.book.results import write_results
from kpe_lib.sampling import NonFiniteError
from kpe_lib.training import CheckpointError, TrainConfig, cached_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def earlier(tmp_path):
    """A results folder holding an earlier, good result of chapter 01 at smoke scale."""
    results = tmp_path / "results"
    path = write_results("01_kpe_2d", "smoke", {"kpe_mean": 1.25}, {"note": "earlier run"}, results_dir=results)
    return results, path, path.read_bytes()


def assert_intact(earlier) -> None:
    results, path, data = earlier
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary file left


def execute(tmp_path, chapter: str, **parameters):
    """Run a real chapter with papermill (as a user would) and return the error papermill raises."""
    import papermill as pm

    nb = jupytext.read(ROOT / "notebooks" / f"{chapter}.md")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source = tmp_path / f"{chapter}.ipynb"
    nbformat.write(nb, source)
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters=parameters, cwd=str(ROOT),
                            kernel_name="python3", progress_bar=False)
    return info.value


# ---------------------------------------------------------------- parameters (in-process)
def test_defaults_and_every_scale_pass_the_check():
    for chapter in runner.discover_chapters(ROOT):
        defaults, _ = chapter_defaults(chapter.name, ROOT)
        check_parameters(defaults, chapter.name, ROOT)
        for scale in runner.SCALES:
            values = runner.load_params(ROOT, scale)
            check_parameters(defaults | {k: v for k, v in values.items() if k in defaults}, chapter.name, ROOT)


def test_check_lists_every_problem_in_one_message():
    defaults, _ = chapter_defaults("04_celeba_kts", ROOT)
    bad = defaults | {"celeba_n_trian": 16, "celeba_lr": "1e-3", "scale": "huge", "celeba_taus": 0.6}
    with pytest.raises(ParameterError) as info:
        check_parameters(bad, "04_celeba_kts", ROOT)
    msg = str(info.value)
    assert msg.startswith("bad parameters for 04_celeba_kts: ") and "\n" not in msg
    assert "unknown parameter 'celeba_n_trian' (did you mean 'celeba_n_train'?)" in msg
    assert "celeba_lr must be float or int" in msg and "got str '1e-3'" in msg
    assert "scale must be one of smoke, cpu, gpu, paper, got 'huge'" in msg
    assert "celeba_taus must be list" in msg


def test_allowed_types_come_from_defaults_files_and_comments():
    kinds = allowed_types("04_celeba_kts", ROOT)
    assert kinds["celeba_n_train"] == {"int"}
    assert kinds["celeba_lr"] == {"float", "int"}                # an int is a float
    assert kinds["celeba_ema_decay"] >= {"None", "float"}         # None in cpu.yml, 0.9999 in paper.yml
    assert "None" in kinds["celeba_ea_decide_at"]                  # only its comment mentions None
    check_parameters(chapter_defaults("04_celeba_kts", ROOT)[0] | {"celeba_ea_decide_at": None},
                     "04_celeba_kts", ROOT)
    with pytest.raises(ParameterError, match="chapter must name a source"):
        chapter_defaults("99_nothing", ROOT)


# ---------------------------------------------------------------- parameters (papermill, real chapters)
@pytest.mark.slow
@pytest.mark.parametrize("parameters, expected", [
    ({"toy_n_trian": 100}, "unknown parameter 'toy_n_trian' (did you mean 'toy_n_train'?)"),
    ({"toy_lr": "fast"}, "toy_lr must be float or int"),
    ({"scale": "huge"}, "scale must be one of smoke, cpu, gpu, paper, got 'huge'"),
], ids=["misspelt", "mistyped", "unknown-scale"])
def test_papermill_call_with_bad_parameters(tmp_path, earlier, parameters, expected):
    err = execute(tmp_path, "01_kpe_2d", **({"scale": "smoke", "results_dir": str(earlier[0])} | parameters))
    assert err.ename == "ParameterError" and expected in err.evalue
    assert_intact(earlier)


@pytest.mark.slow
def test_papermill_call_with_missing_data(tmp_path, earlier):
    missing = tmp_path / "no-data-here"
    err = execute(tmp_path, "04_celeba_kts", scale="smoke", results_dir=str(earlier[0]), data_root=str(missing))
    assert err.ename == "DataError"
    assert f"CelebA not found under the data root {missing}" in err.evalue and "KPE_DATA" in err.evalue
    assert_intact(earlier)


def test_runner_and_cli_refuse_an_unknown_scale(capsys):
    with pytest.raises(ValueError, match="scale must be one of smoke, cpu, gpu, paper, got 'huge'"):
        runner.run_chapters(["01"], root=ROOT, scale="huge", out=None)
    with pytest.raises(SystemExit) as info:
        main(["run", "01", "--scale", "huge"])
    assert info.value.code == 2 and "invalid choice: 'huge'" in capsys.readouterr().err


# ---------------------------------------------------------------- checkpoints, sampling, results
def test_corrupt_checkpoint_is_named_and_left_for_the_user(tmp_path):
    data = torch.randn(64, 2)
    config = {"kind": "mlp", "hidden": 16, "depth": 2}
    first = cached_model(config, TrainConfig(steps=5, batch_size=16), data, cache_dir=tmp_path, progress=False)
    second = cached_model(config, TrainConfig(steps=10, batch_size=16), data, cache_dir=tmp_path, progress=False)
    good = first.checkpoint.read_bytes()
    second.checkpoint.write_bytes(b"not a checkpoint")  # e.g. a disk that filled up
    with pytest.raises(CheckpointError) as info:
        cached_model(config, TrainConfig(steps=10, batch_size=16), data, cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert str(second.checkpoint) in msg and "delete it to start over" in msg and "\n" not in msg
    assert first.checkpoint.read_bytes() == good  # the earlier snapshot is untouched
    second.checkpoint.unlink()
    again = cached_model(config, TrainConfig(steps=10, batch_size=16), data, cache_dir=tmp_path, progress=False)
    assert again.new_steps == 5  # resumed from the intact 5-step snapshot


def test_nan_velocity_stops_sampling_at_the_step_that_produced_it(tmp_path, earlier):
    def field(x, t):
        return torch.full_like(x, math.nan) if float(t.reshape(-1)[0]) >= 0.5 else torch.ones_like(x)

    with pytest.raises(NonFiniteError) as info:
        sample(field, torch.zeros(4, 2), n_steps=10)
    msg = str(info.value)
    assert "step 5" in msg and "t = 0.5" in msg and "\n" not in msg
    with pytest.raises(ValueError, match=r"metrics\.kpe_mean must be a finite number"):
        write_results("01_kpe_2d", "smoke", {"kpe_mean": math.nan}, results_dir=earlier[0])
    assert_intact(earlier)


# ---------------------------------------------------------------- the runner on a real chapter
@pytest.mark.slow
def test_runner_reexecutes_a_real_chapter_at_smoke_scale(tmp_path):
    lines: list[str] = []
    report = runner.run_chapters(["01"], root=ROOT, scale="smoke", out=tmp_path, force=True, log=lines.append)
    assert report.ok, report.runs[0].error
    executed = tmp_path / "book" / "chapters" / "01_kpe_2d.ipynb"
    assert [r.status for r in report.runs] == ["executed"] and executed.is_file()
    assert not runner.notebook_errors(executed)
    assert any("01_kpe_2d (smoke): executed in" in line for line in lines)
    again = runner.run_chapters(["01"], root=ROOT, scale="smoke", out=tmp_path, log=lines.append)
    assert [r.status for r in again.runs] == ["skipped"]
