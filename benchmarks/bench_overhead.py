"""Per-step overhead of ``kpe_lib.sample`` against torchdiffeq's Euler on a small 2D MLP (issue 15).

    python benchmarks/bench_overhead.py [--repeats 5] [--steps 100] [--threads 1] [--batches 1024 4096]

On a small model the sampler's own work per step (building t, the update, the energy bookkeeping) is a visible
share of the time; this prints, per batch size, the best wall time of torchdiffeq ``odeint(method="euler")`` on
the same grid and model and the ratios of ``sample`` with energy tracking off, on (the default) and with all
diagnostics. Pairs are timed alternately and the best of ``repeats`` is kept, so background load affects all
alike; the ratios are the result, the absolute times depend on the machine.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn
from torchdiffeq import odeint

from bench_core import best_of  # the script folder is on sys.path
from kpe_lib import TimeFirst, sample, time_grid


class MLP2D(nn.Module):
    """torchcfm's 2D example network: 3 -> 64 -> 64 -> 64 -> 2 with SELU, input (x, t)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, width), nn.SELU(), nn.Linear(width, width), nn.SELU(),
                                 nn.Linear(width, width), nn.SELU(), nn.Linear(width, 2))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # torchdiffeq order, 0-d t
        return self.net(torch.cat([x, t.expand(x.shape[0])[:, None]], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, nargs="+", default=[1024, 4096])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = MLP2D().eval()
    v = TimeFirst(model)
    grid = time_grid(args.steps)
    grid32 = grid.float()
    print(f"Euler, {args.steps} steps, 2D MLP ({sum(p.numel() for p in model.parameters())} parameters), "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"{'batch':>7} {'torchdiffeq ms':>15} {'energy off':>11} {'energy on':>10} {'diagnostics':>12} "
          f"{'ms/step over torchdiffeq (energy on)':>38}")
    for batch in args.batches:
        x0 = torch.randn(batch, 2)
        with torch.no_grad():
            best = best_of({
                "torchdiffeq": lambda: odeint(model, x0, grid32, method="euler")[-1],
                "off": lambda: sample(v, x0, grid=grid, track_energy=False),
                "on": lambda: sample(v, x0, grid=grid),
                "diag": lambda: sample(v, x0, grid=grid, diagnostics=True),
            }, args.repeats)
        ref = best["torchdiffeq"]
        print(f"{batch:>7} {1e3 * ref:>15.2f} {best['off'] / ref:>10.3f}x {best['on'] / ref:>9.3f}x "
              f"{best['diag'] / ref:>11.3f}x {1e3 * (best['on'] - ref) / args.steps:>38.4f}")


if __name__ == "__main__":
    main()
