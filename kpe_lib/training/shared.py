"""The class-conditional CIFAR-10 flow model that chapters 3 and 5 share (Mathematics §6).

Chapter 3 samples it at guidance 1 with class-balanced labels, chapter 5 with classifier-free guidance. Both
chapters build its configuration with :func:`cifar_unet_config` and name its cache entry
:func:`shared_model_name`; with equal settings and the same training tensor (the images clamped to [0, 1],
then scaled to [-1, 1]) ``cached_model`` finds one entry, trained by whichever chapter runs first.

Example:
    >>> cifar_unet_config(3, 32, [1, 2, 2], [2], 1, 0.0, num_classes=10)["num_classes"]
    10
    >>> shared_model_name(16)
    'cifar16-cond'
"""
from __future__ import annotations

from typing import Any, Sequence

__all__ = ["cifar_unet_config", "shared_model_name"]


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
