"""A small CNN image classifier: semantic scores and penultimate-layer features (Mathematics §5).

Where CLIP is not available, the book measures semantic strength with a classifier trained on the same
data (score ``log p(y | x)``, margin ``logit_y - max_{k != y} logit_k``), and uses its penultimate
features as one of the feature spaces of the local-support analysis. Training and caching live in
``kpe_lib.training.train_classifier``.
"""
from __future__ import annotations

import torch
from torch import nn

from kpe_lib.models.common import Described, check_groups


class Classifier(Described):
    """Three stages of two 3x3 conv-GroupNorm-SiLU layers (widths W, 2W, 4W, average-pool between stages),
    global average pooling to a 4W-dim feature, and a linear head.

    Inputs are images exactly as the data loaders return them, (B, C, H, W) with H, W >= 4 (any
    normalisation, as long as training and use agree). GroupNorm rather than BatchNorm and no dropout,
    so ``train()`` and ``eval()`` compute the same function.

    Args:
        in_channels: C of the images.
        num_classes: K, the number of classes.
        width: W, channels of the first stage (a multiple of ``groups``).
        groups: GroupNorm groups.

    Example:
        >>> clf = Classifier(in_channels=3, num_classes=10, width=16)
        >>> clf(torch.randn(2, 3, 32, 32)).shape, clf.features(torch.randn(2, 3, 32, 32)).shape
        (torch.Size([2, 10]), torch.Size([2, 64]))
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 32, groups: int = 8) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or width < 1:
            raise ValueError("in_channels >= 1, num_classes >= 2 and width >= 1 are required; got "
                             f"{in_channels}, {num_classes}, {width}")
        check_groups(width, groups, "the first stage")
        self.config = {"kind": "classifier", "in_channels": in_channels, "num_classes": num_classes,
                       "width": width, "groups": groups}
        self.in_channels, self.num_classes = in_channels, num_classes
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, mult in enumerate((1, 2, 4)):
            c = mult * width
            for c_from in (c_in, c):
                layers += [nn.Conv2d(c_from, c, 3, padding=1), nn.GroupNorm(groups, c), nn.SiLU()]
            if stage < 2:
                layers.append(nn.AvgPool2d(2))
            c_in = c
        self.body = nn.Sequential(*layers)
        self.feature_dim = 4 * width
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features: (B, C, H, W) -> (B, 4W), the global average of the last stage."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or min(x.shape[2:]) < 4:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W) with H, W >= 4; got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of images (B, C, H, W)."""
        return self.head(self.features(x))
