"""Pre-train the flow models of chapters 3-5 at a scale into the chapters' model cache (kpe_lib.book.pretrain).

    torchrun --nproc_per_node=8 scripts/pretrain.py --scale paper --device cuda        # 8 GPUs, DDP
    python scripts/pretrain.py --scale gpu --chapters 04 --device cuda                 # one GPU
    python -m kpe_lib run 04 --scale paper --device cuda                               # then: read from the cache

Every rank trains its slice of the global batch (DistributedDataParallel); rank 0 writes the snapshots and
prints one row per snapshot. ``--set KEY=VALUE`` overrides one parameter as for ``python -m kpe_lib run``.
"""
from __future__ import annotations

import argparse
import sys

import torch.distributed as dist

from kpe_lib.book.cli import _overrides
from kpe_lib.book.pretrain import PRETRAINED_CHAPTERS, pretrain
from kpe_lib.book.scales import SCALES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="gpu", choices=SCALES, help="parameter file to use (default: gpu)")
    parser.add_argument("--chapters", nargs="*", default=None,
                        help=f"names, numbers or slugs among {', '.join(PRETRAINED_CHAPTERS)} (default: all)")
    parser.add_argument("--device", default=None, help="cuda (each rank its LOCAL_RANK GPU) or cpu (default: "
                                                       "cuda when available)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one parameter of the scale's file (YAML value; repeatable)")
    parser.add_argument("--progress", action="store_true", help="tqdm bars while training (rank 0)")
    args = parser.parse_args(argv)
    try:
        report = pretrain(args.chapters, args.scale, device=args.device, overrides=_overrides(args.overrides),
                          progress=args.progress)
    except ValueError as err:
        print(f"pretrain: error: {err}", file=sys.stderr)
        return 2
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(report.table())
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
