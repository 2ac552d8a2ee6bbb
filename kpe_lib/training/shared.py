"""The class-conditional CIFAR-10 flow model that chapters 3 and 5 share (Mathematics §6).

Chapter 3 samples it at guidance 1 with class-balanced labels, chapter 5 with classifier-free guidance. Both
chapters build its configuration with :func:`cifar_unet_config` and name its cache entry
:func:`shared_model_name`; with equal settings and the same training tensor (the images clamped to [0, 1],
then scaled to [-1, 1]) ``cached_model`` finds one entry, trained by whichever chapter runs first.

The classifier both chapters train (chapter 3's feature space, chapter 5's semantic scorer) comes from
:func:`cifar_classifier_config`, so it too is trained once and read from the cache.

Example:
    >>> cifar_classifier_config(32, 3000, seed=0).shift
    2
    >>> cifar_unet_config(3, 32, [1, 2, 2], [2], 1, 0.0, num_classes=10)["num_classes"]
    10
    >>> shared_model_name(16)
    'cifar16-cond'
"""
from __future__ import annotations

from typing import Any, Sequence

from kpe_lib.training.classifier import ClassifierTrainConfig

__all__ = ["cifar_unet_config", "shared_model_name", "cifar_classifier_config"]


def cifar_unet_config(in_channels: int, width: int, channel_mult: Sequence[int], attn_levels: Sequence[int],
                      num_res_blocks: int, dropout: float, num_classes: int | None = None) -> dict[str, Any]:
    """The ``kpe_lib.models.build_model`` configuration of a CIFAR-10 UNet; ``num_classes`` K makes it
    class-conditional with a null class (row K of the label embedding), what classifier-free guidance needs."""
    config = {"kind": "unet", "in_channels": in_channels, "width": width, "channel_mult": list(channel_mult),
              "attn_levels": list(attn_levels), "num_res_blocks": num_res_blocks, "dropout": dropout}
    if num_classes is not None:
        config["num_classes"] = num_classes
    return config


def shared_model_name(resolution: int) -> str:
    """The readable name of the shared model's cache entry at image side ``resolution`` (the entry's folder is
    ``<name>-<key>``, the key hashing the configuration and the data)."""
    return f"cifar{resolution}-cond"


def cifar_classifier_config(width: int, steps: int, seed: int) -> ClassifierTrainConfig:
    """The CIFAR-10 classifier's training recipe: AdamW at lr 2e-3 with weight decay 0.05, batch 128, random
    flips and shifts by up to 2 pixels, constant learning rate.

    ``benchmarks/size_classifier.py`` sized it at 16x16, width 32, 3,000 steps (seed 0, 10,000 training
    images): 68.0% on the 1,000 test images the chapters report and 67.8% on 4,000 more, against 63.1%
    without the shifts (and 50.5% for the width-16, 600-step classifier used before).
    """
    return ClassifierTrainConfig(width=width, steps=steps, batch_size=128, lr=2e-3, weight_decay=0.05, flip=True,
                                 shift=2, seed=seed)
