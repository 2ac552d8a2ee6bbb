"""Two processes with torchrun and gloo on the CPU (tests/_distributed_worker.py), against one process:
DDP training on the split global batch, sharded sampling of fixed noise, an interrupted run resumed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kpe_lib import KTS, sample
from kpe_lib.training import TrainConfig, train_flow_matching

sys.path.insert(0, str(Path(__file__).parent))
import _distributed_worker as worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def torchrun(out: Path, phase: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(Path(__file__).parent / "_distributed_worker.py"), str(out), phase]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    first = torchrun(out, "first")
    assert (out / "first.pt").is_file(), first.stdout[-3000:] + first.stderr[-3000:]
    resumed = torchrun(out, "resume")
    return out, first, resumed


def close(a: dict, b: dict) -> bool:
    return all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_two_ranks_on_the_split_batch_train_like_one_rank_on_the_whole_batch(runs):
    out, _, _ = runs
    got = torch.load(out / "first.pt", weights_only=True)
    one = train_flow_matching(worker.tiny_mlp(), worker.points(), config=TrainConfig(steps=4, batch_size=8, lr=1e-3),
                              progress=False)
    assert close(got["state"], one.model.state_dict())
    assert torch.allclose(torch.tensor(got["losses"]), torch.tensor(one.losses), rtol=1e-5)


def test_sharded_sampling_of_fixed_noise_equals_one_process(runs):
    out, _, _ = runs
    got = torch.load(out / "first.pt", weights_only=True)
    model = worker.tiny_mlp().eval()
    ref = sample(model, worker.noise(), n_steps=12, gain=KTS(alpha0=0.05, beta0=0.02))
    for name in ("x", "kpe", "kpe_late", "energy"):
        assert got[name].shape == getattr(ref, name).shape, name
        assert torch.allclose(got[name], getattr(ref, name), rtol=1e-5, atol=1e-6), name
    x = worker.noise()
    assert torch.allclose(got["feats"], model(x, torch.full((7,), 0.5)).detach(), atol=1e-6)


def test_an_interrupted_two_rank_run_resumes_from_its_checkpoint(runs):
    out, first, resumed = runs
    assert first.returncode != 0  # the stop at step 3 ended the first launch
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    got = torch.load(out / "resumed.pt", weights_only=True)
    assert got["new_steps"] == 4  # from the step-2 checkpoint to step 6
    one = train_flow_matching(worker.tiny_mlp(), worker.points(), config=worker.resumable_config(6), progress=False)
    assert close(got["state"], one.model.state_dict())
    assert torch.allclose(torch.tensor(got["losses"]), torch.tensor(one.losses), rtol=1e-5)
