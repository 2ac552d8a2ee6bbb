"""Image tensors shared by the CIFAR-10 and CelebA loaders: the result type and the paper's preprocessing.

Preprocessing (Mathematics §6, "The CelebA setting"), in this order, on float images in [0, 1]:

1. resize so the SHORT side equals ``size``: bilinear with antialiasing
   (``torch.nn.functional.interpolate(mode="bilinear", antialias=True, align_corners=False)``, the filter
   Pillow's ``Image.BILINEAR`` resize and torchvision's ``Resize`` use); the long side becomes
   ``int(size * long / short)`` (truncated, torchvision's rule);
2. centre crop ``size x size``, offset ``int(round((L - size) / 2))`` on each axis (torchvision's rule);
3. optionally grayscale by ITU-R BT.601-2 luma ``0.299 R + 0.587 G + 0.114 B`` (1 channel).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor

from kpe_lib._numbers import as_bool, as_int

__all__ = ["ImageData", "LUMA_601", "resize_short_side", "center_crop", "to_grayscale", "preprocess"]

#: ITU-R BT.601-2 luma weights for R, G, B (the ones Pillow's ``convert("L")`` uses).
LUMA_601: tuple[float, float, float] = (0.299, 0.587, 0.114)


@dataclass
class ImageData:
    """A set of images with everything needed to undo its preprocessing.

    Attributes:
        images: (N, C, H, W) float32; values in [0, 1] minus ``mean``.
        labels: (N,) long class indices, or ``None`` (CelebA has no classes).
        mean: what was subtracted from every pixel: ``0.0`` when not centred, else one scalar (the training
            set mean, Mathematics §6) or a tensor broadcastable to ``images``.
        scale: ``"[0,1]"`` or ``"[0,1]-mean"``: the value range before / after centring.
        names: file name of every image (CelebA) or the batch file's ``filenames`` entry (CIFAR-10).
        class_names: names of the label indices, or ``None``.
        source: the folder or archive read.
        split: the split loaded (``"train"``, ``"test"``, ...).
        attributes: (N, 40) long of +1 / -1 (CelebA ``list_attr_celeba.txt``), or ``None``.
        attribute_names: the 40 attribute names, or ``None``.
        settings: the loader arguments that produced this set (for provenance in results files).
    """

    images: Tensor
    labels: Tensor | None
    mean: float | Tensor
    scale: str
    names: list[str] | None
    class_names: list[str] | None
    source: str
    split: str
    attributes: Tensor | None = None
    attribute_names: list[str] | None = None
    settings: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def centered(self) -> bool:
        """Whether a mean was subtracted."""
        return self.scale != "[0,1]"

    def to_unit(self, x: Tensor | None = None) -> Tensor:
        """Undo the centring: map ``x`` (default: ``self.images``) back to the [0, 1] scale.

        Also the way to bring generated samples, which live in the centred space, back to pixels.

        Args:
            x: (B, C, H, W) tensor in this set's space; default the set's own images.

        Returns:
            (B, C, H, W) ``x + mean`` (not clamped, so out-of-range model samples stay visible).
        """
        x = self.images if x is None else x
        mean = self.mean.to(x) if isinstance(self.mean, Tensor) else self.mean
        return x + mean


def resize_short_side(x: Tensor, size: int) -> Tensor:
    """Resize (B, C, H, W) images so that min(H, W) == ``size`` (bilinear, antialiased; module docstring).

    Returns the input unchanged when the short side already equals ``size``.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if min(h, w) == size:
        return x
    if h <= w:
        new_h, new_w = size, int(size * w / h)
    else:
        new_h, new_w = int(size * h / w), size
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)


def center_crop(x: Tensor, size: int) -> Tensor:
    """Centre crop (B, C, H, W) to (B, C, size, size); offsets ``int(round((L - size) / 2))``."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h < size or w < size:
        raise ValueError(f"cannot centre-crop {h}x{w} images to size={size}")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[..., top : top + size, left : left + size]


def to_grayscale(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB -> (B, 1, H, W) luma ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601-2)."""
    if x.shape[-3] != 3:
        raise ValueError(f"to_grayscale expects 3 channels, got shape {tuple(x.shape)}")
    r, g, b = x.unbind(dim=-3)
    return (LUMA_601[0] * r + LUMA_601[1] * g + LUMA_601[2] * b).unsqueeze(-3)


def preprocess(x: Tensor, size: int, grayscale: bool) -> Tensor:
    """The paper's pipeline (Mathematics §6) on (B, 3, H, W) float images in [0, 1]: resize -> crop -> grayscale.

    Returns:
        (B, 1 or 3, size, size) float32.
    """
    size, grayscale = as_int(size, "size", minimum=1), as_bool(grayscale, "grayscale")
    x = center_crop(resize_short_side(x.float(), size), size)
    return (to_grayscale(x) if grayscale else x).contiguous()
