"""Worker of tests/test_distributed.py, started by ``python -m torch.distributed.run --nproc_per_node=2``.

    _distributed_worker.py OUT first    # DDP training, sharded sampling, then a run stopped at step 3
    _distributed_worker.py OUT resume   # a new launch resuming the stopped run from its step-2 checkpoint

Rank 0 writes its results under OUT as torch files; the test compares them with one process.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from kpe_lib import KTS
from kpe_lib.distributed import init_distributed, map_sharded, sample_sharded
from kpe_lib.models import TimeMLP
from kpe_lib.training import TrainConfig, train_flow_matching

STOP_AT = 3


def tiny_mlp() -> TimeMLP:
    torch.manual_seed(0)
    return TimeMLP(dim=2, hidden=32, depth=3)


def points() -> torch.Tensor:
    return torch.randn(40, 2, generator=torch.Generator().manual_seed(7))


def noise() -> torch.Tensor:
    return torch.randn(7, 2, generator=torch.Generator().manual_seed(4))  # 7 rows: shards of 3 and 4


def resumable_config(steps: int) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=8, lr=1e-3, checkpoint_every=2)


class Stop(Exception):
    """Raised on every rank at the same step: the interruption."""


def main(out: Path, phase: str) -> None:
    info = init_distributed("cpu")
    assert info.world_size == 2, info
    if phase == "first":
        res = train_flow_matching(tiny_mlp(), points(), config=TrainConfig(steps=4, batch_size=8, lr=1e-3),
                                  progress=False)
        model = tiny_mlp().eval()
        s = sample_sharded(model, noise(), batch_size=2, n_steps=12, gain=KTS(alpha0=0.05, beta0=0.02))
        feats = map_sharded(lambda b: model(b, torch.full((b.shape[0],), 0.5)).detach(), noise(), batch_size=2)
        if info.is_main:
            torch.save({"state": res.model.state_dict(), "losses": res.losses, "x": s.x, "kpe": s.kpe,
                        "kpe_late": s.kpe_late, "energy": s.energy, "feats": feats}, out / "first.pt")

        def stop(step: int, loss: float) -> None:
            if step == STOP_AT:
                raise Stop

        try:
            train_flow_matching(tiny_mlp(), points(), config=resumable_config(6), checkpoint=out / "run.pt",
                                progress=False, callback=stop)
        except Stop:
            sys.exit(17)  # both ranks leave after step 3; the checkpoint holds step 2
    else:
        res = train_flow_matching(tiny_mlp(), points(), config=resumable_config(6), checkpoint=out / "run.pt",
                                  progress=False)
        if info.is_main:
            torch.save({"state": res.model.state_dict(), "losses": res.losses, "new_steps": res.new_steps},
                       out / "resumed.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
