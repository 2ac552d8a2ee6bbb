"""scripts/pretrain.py and kpe_lib.book.pretrain: the chapters' flow models trained beforehand (under torchrun
with two gloo processes here) land in the cache entries the chapters read, with the chapters' own settings."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
import torch

from kpe_lib.accelerate import resolve_bf16
from kpe_lib.book import pretrain as pt
from kpe_lib.book.parameters import ParameterError, chapter_defaults
from kpe_lib.book.scales import load_params
from kpe_lib.experiments import celeba_kts
from kpe_lib.training import TrainConfig, cache_key, cached_model
from kpe_lib.models import TimeMLP

ROOT = Path(__file__).resolve().parents[1]
DATA = next((p for p in ([Path(os.environ["KPE_DATA"])] if os.environ.get("KPE_DATA") else [])
             + [ROOT.parent / "shared" / "data"] if (p / "celeba" / "list_eval_partition.txt").is_file()), None)
needs_celeba = pytest.mark.skipif(DATA is None, reason="CelebA not found (set KPE_DATA or ../shared/data)")


# ------------------------------------------------------------------ the chapters' settings, not copies of them
def _calls(tree: ast.AST, func: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "attr", None) == func or getattr(n.func, "id", None) == func)]


def _chapter_args(call: ast.Call, declared: set[str]) -> tuple[list, dict]:
    """Positional and keyword arguments that are chapter parameters, by parameter name (others: None). The
    device is left out: pretrain trains each rank on its own (it does not enter the cache key)."""
    name = lambda node: node.id if isinstance(node, ast.Name) and node.id in declared - {"device"} else None  # noqa: E731
    return [name(a) for a in call.args], {k.arg: name(k.value) for k in call.keywords if name(k.value)}


def _pretrain_args(call: ast.Call) -> tuple[list, dict]:
    """The same for pretrain.py, where a parameter is read as ``p["name"]``."""
    def name(node):
        ok = isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "p"
        return node.slice.value if ok and isinstance(node.slice, ast.Constant) else None
    return [name(a) for a in call.args], {k.arg: name(k.value) for k in call.keywords if name(k.value)}


@pytest.mark.parametrize("chapter, trainer, funcs", [
    ("03_cifar_support", "_cifar", ["load_cifar_splits", "unet_config", "TrainConfig"]),
    ("04_celeba_kts", "_celeba", ["unet_config", "train_checkpoints", "load_celeba"]),
    ("05_semantics_guidance", "_semantics", ["unet_config", "TrainConfig", "load_semantics_data"])])
def test_pretrain_builds_the_models_from_the_same_parameters_as_the_chapter(chapter, trainer, funcs):
    declared = set(chapter_defaults(chapter, ROOT)[0])
    code = "\n".join(c.source for c in jupytext.read(ROOT / "notebooks" / f"{chapter}.md").cells
                     if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", []))
    chapter_tree = ast.parse("\n".join(line for line in code.splitlines() if not line.startswith(("%", "!"))))
    module = ast.parse((ROOT / "kpe_lib" / "book" / "pretrain.py").read_text(encoding="utf-8"))
    body = next(n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == trainer)
    for func in funcs:
        (mine,), theirs = _calls(body, func), _calls(chapter_tree, func)
        want = _chapter_args(theirs[0], declared)
        got = _pretrain_args(mine)
        assert got[1] == want[1], f"{func}: keyword parameters differ from {chapter}'s"
        assert [a for a in got[0] if a] == [a for a in want[0] if a], f"{func}: positional parameters differ"
        assert got[1] or any(got[0]), f"{func}: no parameter read"


def test_chapter_values_are_what_the_runner_injects_over_the_defaults():
    values = pt.chapter_values("04_celeba_kts", "gpu", root=ROOT, device="cuda", overrides={"celeba_lr": 0.5})
    scale = load_params(ROOT, "gpu", "cuda")
    defaults = chapter_defaults("04_celeba_kts", ROOT)[0]
    assert set(values) == set(defaults) and values["celeba_checkpoints"] == scale["celeba_checkpoints"]
    assert values["celeba_lr"] == 0.5 and values["device"] == "cuda" and "cifar_lr" not in values
    with pytest.raises(ParameterError, match="celeba_lr must be"):
        pt.chapter_values("04_celeba_kts", "smoke", root=ROOT, overrides={"celeba_lr": "fast"})
    with pytest.raises(ValueError, match="train no flow model"):
        pt.pretrain(["01"], "smoke", device="cpu", root=ROOT)
    with pytest.raises(ValueError, match=r"--set \['cifar_lr'\]: no selected chapter"):
        pt.pretrain(["04"], "smoke", device="cpu", root=ROOT, overrides={"cifar_lr": 0.1})


def test_sit_backend_has_nothing_to_pretrain(tmp_path):
    report = pt.pretrain(["05"], "paper", device="cpu", root=ROOT, overrides={"cache_dir": str(tmp_path)}, log=None)
    assert report.models == [] and "released weights" in report.skipped["05_semantics_guidance"]
    assert "nothing to train" in report.table()


# ------------------------------------------------------------- chapters 3 and 5 share one class-conditional model
SHARED = ("resolution", "n_train", "unet_width", "channel_mult", "attn_levels", "num_res_blocks", "dropout",
          "train_steps", "batch_size", "lr", "warmup_steps", "ema_decay", "p_uncond", "bf16", "checkpoint_every",
          "clf_width", "clf_steps")  # the classifier too: one cache entry (training.shared.cifar_classifier_config)


@pytest.mark.parametrize("scale", ["cpu", "gpu"])  # the scales whose chapter 5 runs the cifar backend
def test_chapters_3_and_5_ask_for_the_same_model_so_it_trains_once(scale):
    three = pt.chapter_values("03_cifar_support", scale, root=ROOT)
    five = pt.chapter_values("05_semantics_guidance", scale, root=ROOT)
    assert five["sem_backend"] == "cifar" and three["cifar_grayscale"] is False and three["cifar_compile"] is False
    differ = {k: (three[f"cifar_{k}"], five[f"sem_{k}"]) for k in SHARED if three[f"cifar_{k}"] != five[f"sem_{k}"]}
    assert not differ, f"{scale}: chapter 3 and chapter 5 would train two models: {differ}"


def test_the_shared_model_has_one_cache_key_from_either_chapter():
    """Chapter 3's and chapter 5's calls, on the same tiny data, name the same cache entry."""
    from kpe_lib.experiments import cifar_support as cs
    from kpe_lib.experiments.semantics_guidance import prepare
    from kpe_lib.models import build_model
    from kpe_lib.training.cache import model_config_of

    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8) % 10
    three = cs.unet_config(3, 8, [1, 2], [1], 1, 0.0, num_classes=10)
    five = prepare.unet_config(8, [1, 2], 1, [1], 0.0)
    config = TrainConfig(steps=3, p_uncond=0.1)
    key = lambda m, x: cache_key(model_config_of(build_model(m)), config, x, labels)  # noqa: E731
    assert key(three, 2.0 * images.clamp(0, 1) - 1.0) == key(five, 2.0 * images - 1.0)
    assert cs.shared_model_name(16) == "cifar16-cond"


# ------------------------------------------------------------ checkpoint_every and the options keep the cache keys
def test_checkpoint_every_and_the_off_options_keep_the_cpu_cache_keys(tmp_path):
    p = load_params(ROOT, "cpu")
    data = torch.randn(16, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    model = {"kind": "mlp"}
    before = [TrainConfig(steps=s, batch_size=p["celeba_batch_size"], lr=p["celeba_lr"],
                          ema_decay=p["celeba_ema_decay"], seed=0, bf16=resolve_bf16(p["celeba_bf16"], "cpu"))
              for s in p["celeba_checkpoints"]]
    now = celeba_kts.checkpoint_configs(p["celeba_checkpoints"], batch_size=p["celeba_batch_size"], lr=p["celeba_lr"],
                                        ema_decay=p["celeba_ema_decay"], seed=0,
                                        checkpoint_every=p["celeba_checkpoint_every"],
                                        bf16=resolve_bf16(p["celeba_bf16"], "cpu"), compile=p["celeba_compile"])
    gpu = celeba_kts.checkpoint_configs(p["celeba_checkpoints"], batch_size=p["celeba_batch_size"], lr=p["celeba_lr"],
                                        ema_decay=p["celeba_ema_decay"], seed=0, checkpoint_every=5000,
                                        bf16=resolve_bf16(p["celeba_bf16"], "cpu"))
    for a, b, c in zip(before, now, gpu):
        assert cache_key(model, a, data) == cache_key(model, b, data) == cache_key(model, c, data)
    assert cache_key(model, TrainConfig(bf16=True), data) != cache_key(model, TrainConfig(), data)
    assert cache_key(model, TrainConfig(compile=False), data) == cache_key(model, TrainConfig(), data)
    # a model cached without checkpoints is a cache hit for a run asking for them: nothing is trained again
    points = torch.randn(40, 2, generator=torch.Generator().manual_seed(1))
    mlp = {"kind": "mlp", "dim": 2, "hidden": 16, "depth": 2}
    first = cached_model(mlp, TrainConfig(steps=4, batch_size=8, lr=1e-3), points, cache_dir=tmp_path, progress=False)
    again = cached_model(mlp, TrainConfig(steps=4, batch_size=8, lr=1e-3, checkpoint_every=2), points,
                         cache_dir=tmp_path, progress=False)
    assert first.new_steps == 4 and again.new_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    assert isinstance(first.model, TimeMLP)


# ---------------------------------------------------------------------- two gloo processes, then the chapter's call
@needs_celeba
def test_two_rank_pretrain_fills_the_cache_the_chapter_reads(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "KPE_DATA": str(DATA)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "scripts" / "pretrain.py"), "--scale", "smoke", "--chapters", "04", "--device", "cpu",
           "--set", f"cache_dir={cache}", "--set", "celeba_checkpoints=[2, 4]",
           "--set", "celeba_dropout=0.0"]  # without dropout (its masks are drawn per rank) 2 ranks train as 1
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "celeba-n8" in run.stdout and run.stdout.count("pretrain at scale smoke on 2 x cpu") == 1  # rank 0 prints
    entries = list((cache / "models").iterdir())
    assert len(entries) == 1 and sorted(f.name for f in entries[0].iterdir()) == ["step000000002.pt",
                                                                                   "step000000004.pt"]
    # the chapter's own call (one process) finds both snapshots and trains nothing
    over = {"cache_dir": str(cache), "celeba_checkpoints": [2, 4], "data_root": str(DATA), "celeba_dropout": 0.0}
    p = pt.chapter_values("04_celeba_kts", "smoke", root=ROOT, overrides=over)
    from kpe_lib.data import load_celeba

    train = load_celeba(p["data_root"], split="train", n=p["celeba_n_train"], index=p["celeba_index"])
    model_config = celeba_kts.unet_config(p["celeba_unet_width"], p["celeba_channel_mult"], p["celeba_attn_levels"],
                                          p["celeba_num_res_blocks"], p["celeba_dropout"])
    kw = dict(batch_size=p["celeba_batch_size"], lr=p["celeba_lr"], ema_decay=p["celeba_ema_decay"], seed=p["seed"],
              name=f"celeba-n{train.images.shape[0]}", progress=False)
    runs = celeba_kts.train_checkpoints(model_config, train.images, [2, 4], cache_dir=cache / "models", **kw)
    assert [r.new_steps for r in runs.values()] == [0, 0]
    # and the two ranks trained what one process trains on the whole batch
    alone = celeba_kts.train_checkpoints(model_config, train.images, [4], cache_dir=tmp_path / "alone", **kw)[4]
    # (compared by loss and output: where a gradient is 0 but for rounding, e.g. behind the zero-initialised
    # output layers, Adam's first steps m / sqrt(v) turn rounding into whole steps of some weights)
    torch.testing.assert_close(torch.tensor(runs[4].losses), torch.tensor(alone.losses), rtol=1e-5, atol=0)
    probe = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        v2, v1 = (r.model.eval()(probe, torch.full((3,), 0.7)) for r in (runs[4], alone))
    assert float((v2 - v1).abs().max()) < 1e-5 * float(v1.abs().max())
    report = pt.pretrain(["04"], "smoke", device="cpu", root=ROOT, overrides=over, log=None)
    assert [(m.steps, m.new_steps) for m in report.models] == [(2, 0), (4, 0)]
