"""Sizing of the CIFAR-10 classifier that chapters 3 and 5 share (feature space and semantic scorer).

Trains ``kpe_lib.models.Classifier`` on the chapter's training images (resolution from the parameter file)
with each recipe below and prints one table: held-out accuracy on the 1,000 test images the chapters report,
on 4,000 further test images (a tighter estimate: +-0.8 points), training accuracy and seconds::

    KPE_DATA=../shared/data .venv/bin/python benchmarks/size_classifier.py --recipes base shift2 shift2-cos

Nothing is cached: every recipe trains from scratch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from kpe_lib.book.scales import load_params
from kpe_lib.experiments.semantics_guidance.prepare import load_semantics_data
from kpe_lib.training import ClassifierTrainConfig, train_classifier
from kpe_lib.training.classifier import accuracy

ROOT = Path(__file__).resolve().parents[1]
#: name -> ClassifierTrainConfig arguments beside the width and steps of the command line
RECIPES = {
    "chapter": {},  # the chapters' settings before this sizing (lr 1e-3, no weight decay, flips only)
    "base": {"lr": 2e-3, "weight_decay": 0.05},
    "shift1": {"lr": 2e-3, "weight_decay": 0.05, "shift": 1},
    "shift2": {"lr": 2e-3, "weight_decay": 0.05, "shift": 2},
    "shift1-cos": {"lr": 2e-3, "weight_decay": 0.05, "shift": 1, "cosine": True},
    "shift2-cos": {"lr": 2e-3, "weight_decay": 0.05, "shift": 2, "cosine": True},
    "base-cos": {"lr": 2e-3, "weight_decay": 0.05, "cosine": True},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="cpu", help="parameter file under notebooks/params (default cpu)")
    ap.add_argument("--recipes", nargs="+", default=["base", "shift2", "shift2-cos"], choices=sorted(RECIPES))
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    p = load_params(ROOT, args.scale, "cpu")
    data = load_semantics_data(None, p["sem_resolution"], n_train=p["sem_n_train"], n_test=5000)
    test = data.test
    rows = []
    for name in args.recipes:
        config = ClassifierTrainConfig(width=args.width, steps=args.steps, seed=args.seed, **RECIPES[name])
        res = train_classifier(data.train_unit, data.train.labels, config, val_images=test.images[:1000],
                               val_labels=test.labels[:1000], cache=False, progress=True)
        more = accuracy(res.model, test.images[1000:5000], test.labels[1000:5000])
        rows.append((name, res.val_accuracy, more, res.train_accuracy, res.seconds))
        print(f"{name}: test {res.val_accuracy:.3f} / {more:.3f}", flush=True)
    print(f"\nclassifier sizing, {p['sem_resolution']}x{p['sem_resolution']}, width {args.width}, {args.steps} steps, "
          f"seed {args.seed}, {data.train_unit.shape[0]} training images")
    print(f"{'recipe':<12} {'test 1k':>8} {'test 4k':>8} {'train':>7} {'seconds':>8}")
    for r in rows:
        print(f"{r[0]:<12} {r[1]:>8.3f} {r[2]:>8.3f} {r[3]:>7.3f} {r[4]:>8.0f}")


if __name__ == "__main__":
    main()
