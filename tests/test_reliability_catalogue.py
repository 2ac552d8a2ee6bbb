"""Issue 14's catalogue of bad inputs and faults, by family; a new case is one line in its family's table.

| family | what a case checks |
|---|---|
| shapes | a velocity or input of the wrong shape stops with an error naming both shapes (no silent broadcast) |
| dtypes | a dtype mismatch or an unusable dtype is named; an integer input is not rounded |
| NaN/inf | a NaN or infinite input, parameter or overflow is named where it enters, not blamed on the model |
| ranges | a value out of its range (tau_split, gains, decay, step counts) names the allowed range |
| types | booleans refused where a number is meant, strings where a boolean is meant, misspelt keywords caught; |
|       | numbers of any numeric type (numpy scalars, 0-d tensors) accepted with the same result |
| corrupt caches and files | a cache that does not hold what its name claims is rebuilt; a damaged file is named, and |
|       | the way out the message gives works |
| concurrent runs | two runs into one output folder serialise (a lock naming its holder) and never share a temporary name |
| killed runs | a SIGTERM leaves no temporary runner folder, kernel connection file or running notebook |
| skipped runs | an unchanged chapter whose results file is gone is executed again |

Everything here is cheap: no chapter is executed (papermill is replaced by a stand-in where the runner is under
test) and every model is tiny.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import importlib
from kpe_lib import KTS, EmpiricalVelocity, sample, time_grid
from kpe_lib.book import runner
from kpe_lib.book.guard import BuildLockedError, build_lock
from kpe_lib.book.pages import parameters_markdown
from kpe_lib.book.results import write_results
from kpe_lib.data import DataError, celeba_files, load_celeba, load_cifar10
from kpe_lib.data.images import preprocess
from kpe_lib.metrics import reference_statistics
from kpe_lib.metrics._checks import check_positive_int
from kpe_lib.training import CheckpointError, TrainConfig, cached_model, train_flow_matching
from kpe_lib.models import build_model

fidmod = importlib.import_module("kpe_lib.metrics.fid")  # the package re-exports a function named fid
X0 = torch.zeros(4, 2)
ONES = lambda x, t: torch.ones_like(x)  # noqa: E731  (energy 1.0 per sample)
TRAIN = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


class Linear64(torch.nn.Module):
    """A float32 velocity module that fails on float64 input, as any network does."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class Output:
    """A diffusers-style model output."""

    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


# ---------------------------------------------------------------- bad input: one clear error
# (family, call, error type, the message must contain this regular expression)
BAD_INPUTS = [
    ("shapes", lambda: sample(lambda x, t: torch.ones(x.shape[0], 1), X0, n_steps=4), ValueError,
     r"returned shape \(4, 1\) for x of shape \(4, 2\)"),
    ("shapes", lambda: sample(lambda x, t: torch.ones(1, 2), X0, n_steps=4), ValueError,
     r"returned shape \(1, 2\) for x of shape \(4, 2\)"),
    ("shapes", lambda: sample(lambda x, t: (torch.ones_like(x),), X0, n_steps=4), ValueError, r"tuple.*\[0\]"),
    ("shapes", lambda: sample(lambda x, t: Output(torch.ones_like(x)), X0, n_steps=4), ValueError, r"\.sample"),
    ("dtypes", lambda: sample(lambda x, t: torch.ones(x.shape), X0.double(), n_steps=4), ValueError,
     r"returned torch\.float32 for x0 of torch\.float64"),
    ("dtypes", lambda: sample(Linear64(), X0.double(), n_steps=4), ValueError,
     r"x0 is torch\.float64 but the model's weights are torch\.float32"),
    ("dtypes", lambda: time_grid(4, dtype=torch.int64), ValueError, r"dtype must be a floating-point"),
    ("dtypes", lambda: EmpiricalVelocity(TRAIN)(torch.full((1, 2), 300.0, dtype=torch.float16), 0.999),
     FloatingPointError, r"overflow torch\.float16"),
    ("NaN/inf", lambda: sample(ONES, torch.full((4, 2), math.nan), n_steps=4), ValueError, r"x0 contains 8 NaN"),
    ("NaN/inf", lambda: sample(ONES, X0, n_steps=4, gain=lambda t: math.nan), ValueError,
     r"gain\(t\) must be finite and > 0.*nan at t = 0"),
    ("NaN/inf", lambda: sample(ONES, X0, n_steps=4, tau_split=math.nan), ValueError,
     r"tau_split must be a finite number >= 0 and <= 1, got nan"),
    ("NaN/inf", lambda: EmpiricalVelocity(TRAIN)(torch.zeros(1, 2), math.nan), ValueError,
     r"t must lie in \[0, 1\).*got nan"),
    ("NaN/inf", lambda: EmpiricalVelocity(TRAIN)(torch.full((1, 2), 1e308, dtype=torch.float64), 0.9),
     FloatingPointError, r"overflow torch\.float64"),
    ("NaN/inf", lambda: train_flow_matching(build_model({"kind": "mlp", "hidden": 8, "depth": 2}),
                                            torch.tensor([[0.0, math.nan]] * 4), config=TrainConfig(steps=1)),
     ValueError, r"data contains 4 NaN"),
    ("NaN/inf", lambda: EmpiricalVelocity(TRAIN)(torch.tensor([[0.0, math.nan]]), 0.5), ValueError,
     r"x contains NaN"),
    ("ranges", lambda: sample(ONES, X0, n_steps=4, tau_split=2.0), ValueError, r"tau_split .* <= 1, got 2\.0"),
    ("ranges", lambda: sample(ONES, X0, n_steps=4, tau_split=-0.1), ValueError, r"tau_split must be .* >= 0"),
    ("ranges", lambda: sample(ONES, X0, n_steps=4, gain=lambda t: 0.0), ValueError, r"0 freezes the flow"),
    ("ranges", lambda: sample(ONES, X0, n_steps=4, gain=lambda t: -1.0), ValueError, r"runs it backwards.*-1\.0"),
    ("ranges", lambda: sample(ONES, X0, n_steps=4, gain=lambda t: torch.tensor([1.0, 1.0, 0.0, 1.0])),
     ValueError, r"values in \[0, 1\]"),
    ("ranges", lambda: TrainConfig(ema_decay=1.0), ValueError, r"TrainConfig\.ema_decay .* < 1 or None, got 1\.0"),
    ("types", lambda: KTS(alpha0=10 ** 400), ValueError, r"alpha0 must be a finite number, got .*too large"),
    ("types", lambda: TrainConfig(batch_size=True), ValueError, r"batch_size must be an integer >= 1, got bool"),
    ("types", lambda: time_grid(True), ValueError, r"n_steps must be an integer >= 1, got bool"),
    ("types", lambda: TrainConfig(lr=10 ** 400), ValueError, r"TrainConfig\.lr .*too large for a float"),
    ("types", lambda: load_cifar10(grayscale="no"), ValueError, r"grayscale must be True or False, got str 'no'"),
    ("types", lambda: load_celeba("/nonexistent", grayscale="no"), ValueError, r"grayscale must be True or False"),
    ("types", lambda: preprocess(torch.rand(1, 3, 8, 8), 4, "no"), ValueError, r"grayscale must be True or False"),
    ("types", lambda: sample(lambda x, t, **kw: torch.ones_like(x), X0, n_steps=4, solvr="rk4"), TypeError,
     r"'solvr': did you mean solver="),
    ("types", lambda: sample(ONES, X0, n_steps=4, labels=3), TypeError, r"'labels'.*does not accept"),
]


@pytest.mark.parametrize("family, call, error, match", BAD_INPUTS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_INPUTS)])
def test_bad_input_gives_one_clear_error(family, call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- numbers of any type mean the same
# (family, call with numpy / tensor / integer-typed values, the same call with plain Python values)
SAME_MEANING = [
    ("types", lambda: time_grid(np.int64(4)), lambda: time_grid(4)),
    ("types", lambda: time_grid(torch.tensor(4)), lambda: time_grid(4)),
    ("types", lambda: TrainConfig(steps=np.int64(10), batch_size=np.int32(8), lr=np.float32(0.5)),
     lambda: TrainConfig(steps=10, batch_size=8, lr=0.5)),
    ("types", lambda: check_positive_int(np.int64(5), "k"), lambda: 5),
    ("types", lambda: KTS(beta0=np.float32(0.03125), tau_split=torch.tensor(0.5)), lambda: KTS(beta0=0.03125, tau_split=0.5)),
    ("types", lambda: sample(ONES, X0, n_steps=np.int64(4), tau_split=np.float32(0.5)).kpe_early,
     lambda: sample(ONES, X0, n_steps=4, tau_split=0.5).kpe_early),
    ("types", lambda: sample(ONES, X0, n_steps=4, tau_split=torch.tensor(0.5)).tau_split, lambda: 0.5),
    ("dtypes", lambda: EmpiricalVelocity(TRAIN)(torch.zeros(1, 2, dtype=torch.int64), 0.5),
     lambda: EmpiricalVelocity(TRAIN)(torch.zeros(1, 2, dtype=torch.float64), 0.5)),
]


@pytest.mark.parametrize("family, given, plain", SAME_MEANING, ids=[f"{c[0]}-{i}" for i, c in enumerate(SAME_MEANING)])
def test_numbers_of_any_type_mean_the_same(family, given, plain):
    got, want = given(), plain()
    if isinstance(want, torch.Tensor):
        assert got.dtype == want.dtype and torch.equal(got, want)
    else:
        assert got == want and type(got) is type(want)


def test_train_config_from_numpy_keeps_the_cache_key():
    assert TrainConfig(steps=np.int64(10), lr=np.float64(1e-3)).to_dict() == TrainConfig(steps=10, lr=1e-3).to_dict()
    assert all(type(v) in (int, float, type(None)) for v in TrainConfig(seed=np.uint8(3)).to_dict().values())


# ---------------------------------------------------------------- corrupt caches and files
def make_celeba(root: Path, names=("1.jpg", "2.jpg", "3.jpg"), partition: bytes | None = None) -> Path:
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (10, 9, 3)).astype(np.uint8)).save(base / "img_align_celeba" / name)
    text = partition if partition is not None else "".join(f"{n} 0\n" for n in names).encode()
    (base / "list_eval_partition.txt").write_bytes(text)
    return root


def _arrays(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


# how a decoded-CelebA cache file of the right name comes to hold something else (arrays -> arrays)
CELEBA_CACHE_DAMAGE = [
    ("16px-when-8px-asked", lambda a: a | {"images": np.zeros((2, 1, 16, 16), np.float32)}),
    ("all-NaN", lambda a: a | {"images": np.full_like(a["images"], np.nan)}),
    ("outside-0-1", lambda a: a | {"images": a["images"] * 300}),
    ("other-settings-key", lambda a: a | {"key": np.array("0" * 64)}),
    ("no-key", lambda a: {k: v for k, v in a.items() if k != "key"}),
]


def test_celeba_cache_with_rounding_outside_0_1_is_a_hit(tmp_path):
    """Antialiased resizing leaves values such as 1.0000002: a valid cache, not rebuilt on every load."""
    root, cache = make_celeba(tmp_path / "data"), tmp_path / "cache"
    load_celeba(root, n=2, size=8, center=False, cache=cache)
    (path,) = cache.iterdir()
    arrays = _arrays(path)
    arrays["images"][0, 0, 0, 0] = np.float32(1.0000002)
    np.savez(path, **arrays)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(load_celeba(root, n=2, size=8, center=False, cache=cache).images.max()) == np.float32(1.0000002)


@pytest.mark.parametrize("damage", [d[1] for d in CELEBA_CACHE_DAMAGE], ids=[d[0] for d in CELEBA_CACHE_DAMAGE])
def test_celeba_cache_not_holding_its_settings_is_rebuilt(tmp_path, damage):
    root, cache = make_celeba(tmp_path / "data"), tmp_path / "cache"
    good = load_celeba(root, n=2, size=8, center=False, cache=cache).images
    (path,) = cache.iterdir()
    np.savez(path, **damage(_arrays(path)))
    with pytest.warns(UserWarning, match=f"ignoring cache file {path}.*rebuilding it"):
        again = load_celeba(root, n=2, size=8, center=False, cache=cache).images
    assert torch.equal(again, good)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rebuilt: the next load is a silent hit
        assert torch.equal(load_celeba(root, n=2, size=8, center=False, cache=cache).images, good)


def fake_features(images, batch_size=50, device="cpu", progress=None):
    return images.reshape(images.shape[0], -1)[:, :5].double() * 3


# how an FID reference cache file comes to be damaged or hold something else (path -> None)
FID_CACHE_DAMAGE = [
    ("NaN-mu", lambda p: np.savez(p, **(_arrays(p) | {"mu": np.full(5, np.nan)}))),
    ("NaN-features", lambda p: np.savez(p, **(_arrays(p) | {"features": np.full((12, 5), np.nan)}))),
    ("other-n", lambda p: np.savez(p, **(_arrays(p) | {"n": np.array(7)}))),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[:100])),  # BadZipFile
]


@pytest.mark.parametrize("damage", [d[1] for d in FID_CACHE_DAMAGE], ids=[d[0] for d in FID_CACHE_DAMAGE])
def test_fid_reference_cache_not_holding_valid_statistics_is_recomputed(tmp_path, monkeypatch, damage):
    monkeypatch.setattr(fidmod, "inception_features", fake_features)
    real = torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    first = reference_statistics(real, cache=tmp_path)
    damage(first.path)
    with pytest.warns(UserWarning, match="FID reference cache .*recomputing it"):
        again = reference_statistics(real, cache=tmp_path)
    assert not again.from_cache and np.isfinite(again.stats.mu).all() and again.stats.n == 12
    np.testing.assert_array_equal(again.stats.sigma, first.stats.sigma)
    assert reference_statistics(real, cache=tmp_path).from_cache  # and rewritten


# how a finished training snapshot is damaged (bytes -> bytes)
SNAPSHOT_DAMAGE = [
    ("truncated", lambda b: b[: len(b) // 2]),
    ("garbage", lambda b: b"not a checkpoint"),
    ("empty", lambda b: b""),
]


@pytest.mark.parametrize("damage", [d[1] for d in SNAPSHOT_DAMAGE], ids=[d[0] for d in SNAPSHOT_DAMAGE])
def test_damaged_snapshot_is_named_and_deleting_it_works(tmp_path, damage):
    data, config = torch.randn(32, 2), {"kind": "mlp", "hidden": 8, "depth": 2}
    five = cached_model(config, TrainConfig(steps=5, batch_size=8), data, cache_dir=tmp_path, progress=False)
    five.checkpoint.write_bytes(damage(five.checkpoint.read_bytes()))
    with pytest.raises(CheckpointError) as info:
        cached_model(config, TrainConfig(steps=10, batch_size=8), data, cache_dir=tmp_path, progress=False)
    assert str(five.checkpoint) in str(info.value) and "delete it to start over" in str(info.value)
    assert sorted(p.name for p in five.checkpoint.parent.iterdir()) == [five.checkpoint.name]  # no partial copy
    five.checkpoint.unlink()  # as told
    ten = cached_model(config, TrainConfig(steps=10, batch_size=8), data, cache_dir=tmp_path, progress=False)
    assert ten.new_steps == 10 and ten.steps_done == 10


# (family, how the CelebA partition file reads, error or None, message or the split's first name)
PARTITION_FILES = [
    ("name listed twice", b"1.jpg 0\n2.jpg 0\n1.jpg 2\n", DataError, r"'1\.jpg' is listed twice, on lines 1 and 3"),
    ("UTF-8 byte-order mark", "\ufeff1.jpg 0\n2.jpg 0\n3.jpg 0\n".encode(), None, "1.jpg"),
]


@pytest.mark.parametrize("text, error, expect", [c[1:] for c in PARTITION_FILES], ids=[c[0] for c in PARTITION_FILES])
def test_celeba_partition_file(tmp_path, text, error, expect):
    root = make_celeba(tmp_path, partition=text)
    if error is None:
        assert celeba_files(root)[0] == expect and load_celeba(root, n=3, size=4, cache=False).names[0] == expect
    else:
        with pytest.raises(error, match=expect):
            celeba_files(root)


def test_broken_parameter_file_is_named(tmp_path):
    root = make_project(tmp_path)
    (root / "notebooks" / "params" / "smoke.yml").write_text("scale: smoke\n  bad: [indent\n")
    with pytest.raises(ValueError, match=r"parameter file .*smoke\.yml is not valid YAML"):
        runner.load_params(root, "smoke")
    with pytest.raises(ValueError, match=r"parameter file .*smoke\.yml is not valid YAML"):
        parameters_markdown(root)                     # the generated parameters page names it too


# ---------------------------------------------------------------- the runner: skips, concurrent and killed runs
TINY = """---
jupytext:
  text_representation: {extension: .md, format_name: myst}
kernelspec: {display_name: Python 3, language: python, name: python3}
---

```{code-cell} ipython3
:tags: [parameters]

scale = "smoke"
seed = 0
results_dir = "results"
```

```{code-cell} ipython3
print(scale)
```
"""


def make_project(root: Path) -> Path:
    """A throw-away project with one chapter ``00_tiny`` that declares ``results_dir``."""
    (root / "notebooks" / "params").mkdir(parents=True)
    (root / "notebooks" / "00_tiny.md").write_text(TINY)
    for scale in runner.SCALES:
        (root / "notebooks" / "params" / f"{scale}.yml").write_text(
            yaml.safe_dump({"scale": scale, "seed": 0, "results_dir": str(root / "results")}))
    (root / "kpe_lib").mkdir()
    (root / "kpe_lib" / "mod.py").write_text("X = 1\n")
    for name, text in (("pyproject.toml", "[project]\nname = 'fake'\n"), ("_config.yml", "title: t\n"),
                       ("_toc.yml", "format: jb-book\nroot: book/intro\n")):
        (root / name).write_text(text)
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n")
    return root


def stand_in_papermill(monkeypatch, during=None):
    """Replace papermill's execution by a stand-in: it writes the chapter's results (as a chapter does, through
    ``write_results``), calls ``during(output_path)`` and writes an executed notebook."""
    import papermill as pm

    calls = []

    def execute_notebook(source, output, parameters=None, **kwargs):
        calls.append(output)
        write_results("00_tiny", parameters["scale"], {"value": len(calls)}, results_dir=parameters["results_dir"])
        Path(output).write_text("{}")
        if during is not None:
            during(Path(output))
        nbformat.write(nbformat.v4.new_notebook(), output)

    monkeypatch.setattr(pm, "execute_notebook", execute_notebook)
    return calls


def test_deleted_results_file_is_rebuilt(tmp_path, monkeypatch):
    root, lines = make_project(tmp_path / "p"), []
    calls = stand_in_papermill(monkeypatch)
    out = tmp_path / "out"
    assert [r.status for r in runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append).runs] \
        == ["executed"]
    results = root / "results" / "smoke" / "00_tiny.json"
    stamp = json.loads((out / "book" / "chapters" / "00_tiny.stamp.json").read_text())
    assert stamp["outputs"] == [str(results)]
    assert runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append).runs[0].status == "skipped"
    results.unlink()
    again = runner.run_chapters(root=root, scale="smoke", out=out, log=lines.append)
    assert again.runs[0].status == "executed" and results.is_file() and len(calls) == 2
    assert any(f"{results} is missing; re-executing" in line for line in lines)


def test_two_runs_into_one_folder_serialise_and_the_second_names_the_first(tmp_path, monkeypatch):
    root, lines, spans = make_project(tmp_path / "p"), [], []

    def during(path):
        start = time.monotonic()
        time.sleep(0.6)
        spans.append((start, time.monotonic()))

    stand_in_papermill(monkeypatch, during)
    reports = []

    def build():
        reports.append(runner.run_chapters(root=root, scale="smoke", out=tmp_path / "out", force=True,
                                           log=lines.append))

    threads = [threading.Thread(target=build) for _ in range(2)]
    for th in threads:
        th.start()
        time.sleep(0.2)
    for th in threads:
        th.join(30)
    assert [r.ok for r in reports] == [True, True], [r.runs for r in reports]
    (a0, a1), (b0, b1) = sorted(spans)
    assert a1 <= b0  # one after the other
    assert any(f"held by pid {os.getpid()} on host" in line for line in lines)
    chapters = tmp_path / "out" / "book" / "chapters"
    assert sorted(p.name for p in chapters.iterdir()) == ["00_tiny.ipynb", "00_tiny.stamp.json"]


def test_concurrent_executions_use_their_own_temporary_notebooks(tmp_path, monkeypatch):
    """Below the lock as well: two executions of one chapter into one target never share a temporary name."""
    root = make_project(tmp_path / "p")
    for name in ("KPE_OUTPUTS_LOG", "JUPYTER_RUNTIME_DIR", "KPE_PROGRESS", "KPE_ROOT", "OMP_WAIT_POLICY"):
        monkeypatch.setenv(name, "")  # threads interleave the runner's environment: monkeypatch restores it
        monkeypatch.delenv(name)
    stand_in_papermill(monkeypatch, lambda path: time.sleep(0.4))
    chapter = runner.discover_chapters(root)[0]
    params = runner.load_params(root, "smoke")
    target = tmp_path / "chapters" / "00_tiny.ipynb"
    target.parent.mkdir()
    errors = []

    def execute():
        errors.append(runner._execute(chapter, root, params, target, tmp_path / "failed")[0])

    threads = [threading.Thread(target=execute) for _ in range(2)]
    for th in threads:
        th.start()
        time.sleep(0.2)
    for th in threads:
        th.join(30)
    assert errors == [None, None] and target.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["00_tiny.ipynb"]


def test_lock_held_by_another_process_names_it(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from kpe_lib.book.guard import build_lock
        with build_lock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(30)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(BuildLockedError, match=rf"being built by pid {child.pid} on host .* since "):
            with build_lock(tmp_path, wait=False):
                pass
    finally:
        child.kill()
        child.wait()
    with build_lock(tmp_path, wait=False):  # released when its holder died
        pass


KILLED_CHILD = """
import json, os, sys, time
from pathlib import Path
import papermill as pm
from jupyter_core.paths import jupyter_runtime_dir
from kpe_lib.book import runner

def execute_notebook(source, output, **kwargs):
    connection = Path(jupyter_runtime_dir()) / "kernel-stand-in.json"  # where a kernel writes its connection file
    connection.parent.mkdir(parents=True, exist_ok=True)
    connection.write_text("{}")
    Path(output).write_text("{}")
    print(json.dumps({"connection": str(connection), "running": str(output), "source": str(source)}), flush=True)
    time.sleep(60)

pm.execute_notebook = execute_notebook
runner.run_chapters(root=sys.argv[1], scale="smoke", out=sys.argv[2], force=True)
"""


def test_sigterm_of_a_chapter_leaves_no_temporary_files(tmp_path):
    root = make_project(tmp_path / "p")
    temp, runtime = tmp_path / "tmp", tmp_path / "runtime"
    temp.mkdir()
    env = dict(os.environ, TMPDIR=str(temp), JUPYTER_RUNTIME_DIR=str(runtime))
    child = subprocess.Popen([sys.executable, "-c", KILLED_CHILD, str(root), str(tmp_path / "out")],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = child.stdout.readline()
        while line and not line.startswith("{"):  # the runner's progress lines come first
            line = child.stdout.readline()
        files = json.loads(line)
        assert all(Path(p).exists() for p in files.values())
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 143
    finally:
        child.kill()
    assert not any(Path(p).exists() for p in files.values())
    assert list(temp.iterdir()) == [] and not list(runtime.glob("kernel-*.json"))
    assert not list((tmp_path / "out" / "book" / "chapters").glob(".*"))
    with build_lock(tmp_path / "out", wait=False):  # and the lock is free
        pass
