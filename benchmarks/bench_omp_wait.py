"""OpenMP wait policy and bf16 autocast on the book's small networks: one run, ratios side by side.

    python benchmarks/bench_omp_wait.py [--repeats 3] [--steps 20] [--threads 2]

The OpenMP wait policy is read once, when a process starts, so every cell of the table is timed in a fresh
subprocess: a chapter-4 UNet training step (W = 16, 32x32 grayscale, batch 32, multipliers 1-2-4, attention at
8x8) and a sampling forward pass of the same UNet on 256 states, each in float32 and under bfloat16 autocast,
with ``OMP_WAIT_POLICY`` PASSIVE, unset (the library default, OpenMP's own policy) and ACTIVE. Policies are
measured in turn, ``repeats`` times, and the best time of each cell is kept, so background load affects all
alike. The ratios are the result (relative to PASSIVE float32); the absolute times depend on the machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

POLICIES = ("PASSIVE", None, "ACTIVE")

CHILD = r"""
import contextlib, sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from kpe_lib.experiments.celeba_kts.runs import unet_config
from kpe_lib.models import build_model
steps, bf16 = int(sys.argv[2]), sys.argv[3] == "1"
autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
g = torch.Generator().manual_seed(0)
net = build_model(unet_config(16, [1, 2, 4], [2], 2, 0.1))
opt = torch.optim.Adam(net.parameters(), 1e-3)
x1 = torch.randn(32, 1, 32, 32, generator=g)
def train_step():
    x0, t = torch.randn(32, 1, 32, 32, generator=g), torch.rand(32, generator=g)
    xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
    with autocast():
        loss = ((net(xt, t).float() - (x1 - x0)) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
states = torch.randn(256, 1, 32, 32, generator=g)
def forward():
    with torch.no_grad(), autocast():
        net.eval()(states, torch.full((256,), 0.5))
def best(fn, n):
    fn(); fn()
    out = float("inf")
    for _ in range(n):
        start = time.perf_counter(); fn(); out = min(out, time.perf_counter() - start)
    return out
print(best(train_step, steps), best(forward, max(3, steps // 4)))
"""


def measure(policy: str | None, bf16: bool, steps: int, threads: int) -> tuple[float, float]:
    """(best training-step seconds, best forward seconds) in a fresh process with ``policy``."""
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(steps), "1" if bf16 else "0"], env=env,
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cells = [(p, b) for b in (False, True) for p in POLICIES]
    best = {c: (float("inf"), float("inf")) for c in cells}
    for _ in range(args.repeats):
        for cell in cells:
            step, fwd = measure(*cell, args.steps, args.threads)
            best[cell] = (min(best[cell][0], step), min(best[cell][1], fwd))
    base_step, base_fwd = best[("PASSIVE", False)]
    print(f"chapter-4 UNet, {args.threads} threads, best of {args.repeats}; ratio = PASSIVE float32 time / time")
    print(f"{'OMP_WAIT_POLICY':<16}{'autocast':<10}{'train step s':>13}{'ratio':>7}{'forward s':>11}{'ratio':>7}")
    for (policy, bf16), (step, fwd) in best.items():
        print(f"{policy or 'unset':<16}{'bf16' if bf16 else 'fp32':<10}{step:>13.3f}{base_step / step:>7.2f}"
              f"{fwd:>11.3f}{base_fwd / fwd:>7.2f}")


if __name__ == "__main__":
    main()
