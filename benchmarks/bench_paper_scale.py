"""Paper-scale paths (issue 16), measured side by side in one run and printed as ratios.

    python benchmarks/bench_paper_scale.py [--repeats 3] [--small] [--no-compile] [--device cpu]

1. a UNet training step: float32 vs bf16 autocast vs ``torch.compile`` (TrainConfig bf16 / compile);
2. sampling with KPE (``kpe_lib.sample``) vs a bare Euler loop of model calls;
3. the paired FID bootstrap: numpy on the CPU (the default) vs float64 torch (``paired_fid_change_device``);
4. the empirical closed form (two products) vs one bare matrix product of the same shapes, default and
   ``fused=True`` (B = 256, n = 4,096, d = 3,072, float32; ``--small`` shrinks every size).

Pairs are timed alternately and the best of ``repeats`` kept, so background load affects both sides alike;
the ratios are the result, absolute times depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from kpe_lib import EmpiricalVelocity, sample
from kpe_lib.metrics.device_stats import paired_fid_change_device
from kpe_lib.metrics.fid import FrechetReference, feature_statistics
from kpe_lib.models import build_model
from kpe_lib.training.loss import cfm_loss


def best_of(fns: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]) -> dict[str, float]:
    best = {name: float("inf") for name in fns}
    for fn in fns.values():
        fn()  # warm-up (and compilation)
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="small sizes (a loaded machine, a quick look)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on a CPU)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    small = args.small
    rows: list[tuple[str, float, float, float]] = []
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'benchmark':<72} {'ours':>10} {'baseline':>10} {'ratio':>7}")

    def report() -> None:  # rows as they are measured, so an interrupted run still shows the finished ones
        while rows:
            name, ours, base, ratio = rows.pop(0)
            print(f"{name:<72} {ours:>10.4g} {base:>10.4g} {ratio:>7.3f}", flush=True)

    # 1. training step
    side, width, batch = (16, 8, 8) if small else (32, 32, 64)
    torch.manual_seed(0)
    model = build_model({"kind": "unet", "in_channels": 1, "width": width, "channel_mult": [1, 2, 4],
                         "attn_levels": [2], "dropout": 0.0}).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x1 = torch.randn(batch, 1, side, side, device=dev)
    x0, t = torch.randn_like(x1), torch.rand(batch, device=dev)

    def step(net, bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                loss = cfm_loss(net, x1, x0, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    fns = {"fp32": step(model, False), "bf16": step(model, True)}
    if not args.no_compile:
        fns["compiled"] = step(torch.compile(model), False)
    tr = best_of(fns, args.repeats, sync)
    label = f"UNet W={width} {side}x{side} batch {batch} train step (s)"
    rows.append((f"{label}: bf16 vs fp32", tr["bf16"], tr["fp32"], tr["bf16"] / tr["fp32"]))
    if "compiled" in tr:
        rows.append((f"{label}: compiled vs fp32", tr["compiled"], tr["fp32"], tr["compiled"] / tr["fp32"]))
    report()

    # 2. sampling with KPE vs a bare loop
    model.eval()
    n_s, steps = (16, 10) if small else (256, 50)
    z = torch.randn(n_s, 1, side, side, device=dev)

    def bare() -> torch.Tensor:
        with torch.no_grad():
            x, dt = z.clone(), 1.0 / steps
            for i in range(steps):
                x = x + dt * model(x, torch.full((n_s,), i * dt, device=dev))
            return x

    sm = best_of({"kpe": lambda: sample(model, z, n_steps=steps), "bare": bare}, args.repeats, sync)
    rows.append((f"sample Euler-{steps}, {n_s} images: KPE vs bare loop (s)", sm["kpe"], sm["bare"],
                 sm["kpe"] / sm["bare"]))
    report()

    # 3. the paired FID bootstrap
    m, d, n_boot = (200, 128, 10) if small else (2000, 2048, 10)
    g = torch.Generator().manual_seed(0)
    ref = FrechetReference.from_stats(feature_statistics(torch.randn(2 * m, d, generator=g)))
    a = torch.randn(m, d, generator=g, dtype=torch.float64)
    b = a + 0.1 * torch.randn(m, d, generator=g, dtype=torch.float64)
    bs = best_of({"numpy": lambda: ref.paired_change(a, b, n_boot=n_boot),
                  "torch": lambda: paired_fid_change_device(ref, a, b, n_boot=n_boot, device=dev)}, 1, sync)
    rows.append((f"paired FID bootstrap m={m} D={d} x{n_boot}: torch {dev.type} vs numpy (s)", bs["torch"],
                 bs["numpy"], bs["torch"] / bs["numpy"]))
    report()

    # 4. the closed form vs one bare product
    bb, n, dd = (128, 2048, 1024) if small else (256, 4096, 3072)
    train, x, w = torch.randn(n, dd, device=dev), torch.randn(bb, dd, device=dev), torch.randn(bb, n, device=dev)
    slow = EmpiricalVelocity(train, dtype=torch.float32, chunk_size=4096)
    fast = EmpiricalVelocity(train, dtype=torch.float32, chunk_size=4096, fused=True)
    cf = best_of({"matmul": lambda: w @ train, "default": lambda: slow(x, 0.5), "fused": lambda: fast(x, 0.5)},
                 max(args.repeats, 5), sync)
    flops = 2.0 * bb * n * dd
    mm_rate = flops / cf["matmul"] / 1e9
    for name in ("default", "fused"):
        rate = 2 * flops / cf[name] / 1e9
        rows.append((f"closed form B={bb} n={n} d={dd} fp32 {name} vs matmul (GFLOP/s)", rate, mm_rate,
                     rate / mm_rate))

    report()
    print("targets: closed-form FLOP-rate ratio >= 0.9 (fused); sampling KPE/bare <= 1.05")


if __name__ == "__main__":
    main()
