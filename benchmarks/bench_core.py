"""Core benchmarks (issue 2): measured side by side in one run and printed as ratios.

    python benchmarks/bench_core.py [--repeats 5]

1. KPE accumulation overhead: ``sample`` with energy vs the same loop without it, on a ~1M-parameter conv net.
2. EFM velocity FLOP rate vs a bare matmul of the same shapes (B = 256, n = 4,096, d = 3,072, float32),
   counting the two products EFM needs (logits and weighted sum).
3. ``sample`` (Euler, fixed grid) vs torchdiffeq ``odeint(method="euler")`` on the same model and grid.

Each pair is timed alternately ``repeats`` times and the best time of each is kept, so background load
affects both sides alike. Timings are wall-clock on whatever machine runs this; the ratios are the result.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

from kpe_lib import EmpiricalVelocity, sample, time_grid


class ConvVelocity(nn.Module):
    """A plain time-conditioned conv net of about 1M parameters (3 x 16 x 16 inputs)."""

    def __init__(self, width: int = 144, depth: int = 7) -> None:
        super().__init__()
        self.inp = nn.Conv2d(4, width, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(depth - 2))
        self.out = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, t.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])], 1)
        h = torch.relu(self.inp(h))
        for layer in self.body:
            h = h + torch.relu(layer(h))
        return self.out(h)


def best_of(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Time each function ``repeats`` times, alternating between them; return the best time of each."""
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_energy_overhead(repeats: int) -> tuple[str, float, float, float]:
    torch.manual_seed(0)
    model = ConvVelocity().eval()
    n_params = sum(p.numel() for p in model.parameters())
    x0, grid = torch.randn(16, 3, 16, 16), time_grid(20)
    t = best_of({
        "with": lambda: sample(model, x0, grid=grid),
        "without": lambda: sample(model, x0, grid=grid, track_energy=False),
    }, repeats)
    return (f"KPE overhead, conv net {n_params / 1e6:.2f}M params, B=16, Euler-20", t["with"], t["without"],
            t["with"] / t["without"])


def bench_efm(repeats: int) -> tuple[str, float, float, float]:
    torch.manual_seed(0)
    batch, n, d = 256, 4096, 3072
    train, x, w = torch.randn(n, d), torch.randn(batch, d), torch.randn(batch, n)
    efm = EmpiricalVelocity(train, dtype=torch.float32, chunk_size=4096)
    t = best_of({"efm": lambda: efm(x, 0.5), "matmul": lambda: w @ train}, repeats)
    flops = 2.0 * batch * n * d
    rate_efm, rate_mm = 2 * flops / t["efm"], flops / t["matmul"]
    return (f"EFM vs bare matmul, B={batch} n={n} d={d} fp32 (GFLOP/s)", rate_efm / 1e9, rate_mm / 1e9,
            rate_efm / rate_mm)


def bench_vs_torchdiffeq(repeats: int) -> list[tuple[str, float, float, float]]:
    from torchdiffeq import odeint

    torch.manual_seed(0)
    model = ConvVelocity().eval()
    x0, grid = torch.randn(16, 3, 16, 16), time_grid(20, dtype=torch.float32)

    def diffeq():
        with torch.no_grad():
            return odeint(lambda t, x: model(x, t.expand(len(x))), x0, grid, method="euler")[-1]

    t = best_of({
        "kpe": lambda: sample(model, x0, grid=grid),
        "kpe_noenergy": lambda: sample(model, x0, grid=grid, track_energy=False),
        "torchdiffeq": diffeq,
    }, repeats)
    return [("sample(euler) with KPE vs torchdiffeq euler (s)", t["kpe"], t["torchdiffeq"],
             t["kpe"] / t["torchdiffeq"]),
            ("sample(euler) no energy vs torchdiffeq euler (s)", t["kpe_noenergy"], t["torchdiffeq"],
             t["kpe_noenergy"] / t["torchdiffeq"])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats} (best of)")
    rows = [bench_energy_overhead(args.repeats), bench_efm(args.repeats), *bench_vs_torchdiffeq(args.repeats)]
    print(f"{'benchmark':<62} {'ours':>10} {'baseline':>10} {'ratio':>8}")
    for name, ours, base, ratio in rows:
        print(f"{name:<62} {ours:>10.4g} {base:>10.4g} {ratio:>8.3f}")
    print("targets: KPE overhead ratio <= 1.02; EFM FLOP-rate ratio >= 0.70; sample/torchdiffeq ratio <= 1.00")


if __name__ == "__main__":
    main()
