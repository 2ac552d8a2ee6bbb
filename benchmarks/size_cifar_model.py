"""Sizing of the CIFAR-10 model chapters 3 and 5 share: FID and recall against training length.

Trains (or continues, through the model cache) the chapter's model to each step count in ``--steps``, draws
the chapter's class-balanced samples (Euler, ``cifar_nfe`` steps), and scores them exactly as chapter 3 does:
FID and precision / recall (k = 3) on Inception features against the chapter's reference of training images,
beside the same number of held-out test images. One table, one row per step count, printed at the end::

    KPE_DATA=../shared/data .venv/bin/python benchmarks/size_cifar_model.py --steps 1500 2250 3000

The cache snapshots mean that asking for 1,500, 2,250 and 3,000 steps trains 3,000 steps in all, and the
chapter then reads the snapshot it asks for.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from kpe_lib.accelerate import resolve_bf16
from kpe_lib.book.scales import load_params
from kpe_lib.experiments import cifar_support as study_lib
from kpe_lib.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="cpu", help="parameter file under notebooks/params (default cpu)")
    ap.add_argument("--steps", type=int, nargs="+", required=True, help="training lengths to score")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "kpe"), help="the book's cache folder")
    args = ap.parse_args()
    if sorted(args.steps) != args.steps or min(args.steps) < 1:
        ap.error("--steps must be positive and increasing")
    p = load_params(ROOT, args.scale, args.device)
    torch.manual_seed(args.seed)
    bf16 = resolve_bf16(p["cifar_bf16"], args.device)
    cache = Path(args.cache)
    data = study_lib.load_cifar_splits(None, size=p["cifar_resolution"], n_train=p["cifar_n_train"],
                                       n_test=max(p["cifar_n_samples"], 1000), grayscale=p["cifar_grayscale"])
    (c, h, w), k = data.shape, len(data.train.class_names)
    model_config = study_lib.unet_config(c, p["cifar_unet_width"], p["cifar_channel_mult"], p["cifar_attn_levels"],
                                         p["cifar_num_res_blocks"], p["cifar_dropout"], num_classes=k)
    settings = study_lib.SpaceSettings(pca_components=1, ae_latent=1, ae_steps=1, clf_width=8, clf_steps=1,
                                       seed=args.seed, cache=cache, device=args.device)
    ref = study_lib.inception_reference(data.n_train, p["cifar_inception_n_ref"], args.seed)
    n = p["cifar_n_samples"]
    rows = []
    for steps in args.steps:
        train_config = TrainConfig(steps=steps, batch_size=p["cifar_batch_size"], lr=p["cifar_lr"],
                                   ema_decay=p["cifar_ema_decay"], warmup_steps=p["cifar_warmup_steps"],
                                   p_uncond=p["cifar_p_uncond"], seed=args.seed, bf16=bf16,
                                   compile=p["cifar_compile"])
        t0 = time.perf_counter()
        flow = study_lib.train_flow_model(model_config, train_config, data.x_train, data.train.labels, cache=cache,
                                          name=study_lib.shared_model_name(p["cifar_resolution"]),
                                          device=args.device, progress=True, bf16=bf16)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        samples = study_lib.sample_main(flow.velocity, n, (c, h, w), nfe=p["cifar_nfe"], seed=args.seed,
                                        device=args.device, batch_size=p["cifar_sample_batch"], num_classes=k)
        feats = study_lib.encode_spaces(["inception"], data, samples.samples_unit, settings, ref)
        quality = study_lib.inception_quality(feats, data.test.images[:n], nfe=p["cifar_nfe"], n_train=data.n_train,
                                              resolution=p["cifar_resolution"], ema=flow.fm.ema is not None)
        real = quality.table.iloc[1]
        rows.append((steps, flow.loss_last, quality.fid, real["FID"], quality.fid / real["FID"],
                     quality.pr.precision, quality.pr.recall, real["recall"], t_train, time.perf_counter() - t0))
        print(f"steps {steps}: FID {quality.fid:.1f} / floor {real['FID']:.1f}, recall {quality.pr.recall:.3f}",
              flush=True)
    print(f"\nshared model sizing, scale {args.scale}, seed {args.seed}, {n} samples, NFE {p['cifar_nfe']}, "
          f"bf16 {bf16}")
    print(f"{'steps':>6} {'loss':>7} {'FID':>7} {'floor':>7} {'ratio':>6} {'prec':>6} {'recall':>6} "
          f"{'real rec':>8} {'train s':>8} {'score s':>8}")
    for r in rows:
        print(f"{r[0]:>6} {r[1]:>7.4f} {r[2]:>7.1f} {r[3]:>7.1f} {r[4]:>6.2f} {r[5]:>6.3f} {r[6]:>6.3f} "
              f"{r[7]:>8.3f} {r[8]:>8.0f} {r[9]:>8.0f}")


if __name__ == "__main__":
    main()
