"""The memorised fraction F_mem (Mathematics §5).

For a generated sample, ``d1`` and ``d2`` are its L2 distances to the nearest and second-nearest training
item; the sample counts as memorised when ``d1 / d2 < 1/3`` (it sits far closer to one training item than
to any other).

Which space (Mathematics §5.1): the model's own space; the reference code uses mean-centred grayscale pixels.
Subtracting one common mean from both sets leaves every L2 distance unchanged, so mean-centring is a no-op
for d1/d2; what matters is the grayscale conversion. **[choice]** ``space="raw"`` (default) uses the tensors
exactly as given, flattened: the project's data loaders already return the model's own space (for CelebA:
1-channel grayscale centred by the training mean, as the reference). ``space="gray_centered"`` reproduces the
reference's space from RGB input: ITU-R BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (1-channel input is used
as is), then the training set's mean image is subtracted from both sets (kept for fidelity; distance-neutral).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kpe_lib.metrics._checks import as_matrix, check_positive_int
from kpe_lib.metrics.neighbors import nearest_neighbors
from kpe_lib.metrics.stats import bootstrap_ci

SPACES = ("raw", "gray_centered")
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class MemorizationResult:
    """F_mem with its bootstrap uncertainty and the per-sample evidence (Mathematics §5).

    Attributes:
        value: fraction of generated samples with ``d1 / d2 < threshold``.
        stderr: bootstrap standard error of ``value``.
        ci95: (lo, hi) 95% percentile bootstrap interval.
        ratios: (M,) float64 gap ratios d1/d2.
        memorized: (M,) bool, ``ratios < threshold``.
        nearest_index: (M,) int64 index of each sample's nearest training item.
        nearest_distance: (M,) float64 d1.
        threshold: the threshold used.
        space: the distance space used.
        n_boot: number of bootstrap resamples.
    """

    value: float
    stderr: float
    ci95: tuple[float, float]
    ratios: torch.Tensor
    memorized: torch.Tensor
    nearest_index: torch.Tensor
    nearest_distance: torch.Tensor
    threshold: float
    space: str
    n_boot: int


def to_space(generated: torch.Tensor, train: torch.Tensor, space: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Map both sets into the distance space of Mathematics §5 and flatten them to (M, D) and (n, D).

    Args:
        generated: (M, ...) samples.
        train: (n, ...) training items, same trailing shape.
        space: "raw" (as given) or "gray_centered" (BT.601 grayscale of (N, 3, H, W) or (N, 1, H, W) images,
            minus the training mean image).

    Returns:
        (generated, train) as float tensors of shape (M, D) and (n, D).
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not isinstance(generated, torch.Tensor) or not isinstance(train, torch.Tensor):
        raise ValueError("generated and train must be torch tensors")
    if tuple(generated.shape[1:]) != tuple(train.shape[1:]):
        raise ValueError(f"generated and train must have the same item shape, got {tuple(generated.shape[1:])} "
                         f"and {tuple(train.shape[1:])}")
    if space == "raw":
        return as_matrix(generated, "generated"), as_matrix(train, "train")
    if generated.ndim != 4 or generated.shape[1] not in (1, 3):
        raise ValueError(f"space='gray_centered' needs images of shape (N, C, H, W) with C in (1, 3), got "
                         f"{tuple(generated.shape)}")

    def gray(x: torch.Tensor) -> torch.Tensor:
        x = x.detach().cpu().to(torch.float64)
        if x.shape[1] == 1:
            return x
        w = torch.tensor(_LUMA, dtype=torch.float64).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)

    g, t = gray(generated), gray(train)
    mean = t.mean(0, keepdim=True)
    return as_matrix(g - mean, "generated"), as_matrix(t - mean, "train")


def gap_ratio(generated: torch.Tensor, train: torch.Tensor, space: str = "raw", chunk_size: int = 2048,
              dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Gap ratio d1/d2 of each generated sample to the training set (Mathematics §5).

    A sample with d2 = 0 coincides with a training item that appears at least twice; **[choice]** its ratio
    is 0 (an exact copy is memorised).

    Args:
        generated: (M, ...) samples.
        train: (n, ...) training items, n >= 2.
        space: "raw" (default: as given, flattened) or "gray_centered" (module docstring).
        chunk_size: queries per block of the neighbour search (training items go in blocks of 2 x this).
        dtype: search dtype of :func:`~kpe_lib.metrics.neighbors.nearest_neighbors`.

    Returns:
        (M,) float64 ratios in [0, 1].
    """
    return _ratios(generated, train, space, chunk_size, dtype)[0]


def _ratios(generated: torch.Tensor, train: torch.Tensor, space: str, chunk_size: int, dtype: torch.dtype
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    check_positive_int(chunk_size, "chunk_size")
    g, t = to_space(generated, train, space)
    if t.shape[0] < 2:
        raise ValueError(f"train must hold at least 2 items for a nearest/second-nearest ratio, got {t.shape[0]}")
    nn = nearest_neighbors(g, t, k=2, dtype=dtype, query_chunk=chunk_size, ref_chunk=2 * chunk_size)
    d1, d2 = nn.distances[:, 0], nn.distances[:, 1]
    ratios = torch.where(d2 > 0, d1 / torch.where(d2 > 0, d2, torch.ones_like(d2)), torch.zeros_like(d1))
    return ratios, nn.indices[:, 0], d1


def memorization_fraction(generated: torch.Tensor, train: torch.Tensor, threshold: float = 1 / 3,
                          n_boot: int = 1000, seed: int = 0, space: str = "raw", chunk_size: int = 2048,
                          dtype: torch.dtype = torch.float64) -> MemorizationResult:
    """F_mem: the fraction of generated samples with ``d1 / d2 < threshold`` (Mathematics §5).

    Args:
        generated: (M, ...) samples in the model's own space.
        train: (n, ...) the training set, same item shape.
        threshold: memorisation threshold on d1/d2, in (0, 1]; Mathematics §5 uses 1/3.
        n_boot: bootstrap resamples for stderr and ci95 (Mathematics §5: 1,000).
        seed: bootstrap seed.
        space: "raw" or "gray_centered" (module docstring).
        chunk_size: queries per block of the neighbour search.
        dtype: search dtype (float64 default; float32 is re-ranked exactly, see nearest_neighbors).

    Returns:
        MemorizationResult.

    Example:
        >>> train = torch.tensor([[0.0], [10.0]])
        >>> memorization_fraction(torch.tensor([[1.0], [4.0]]), train, n_boot=10).memorized
        tensor([ True, False])
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    ratios, nearest, d1 = _ratios(generated, train, space, chunk_size, dtype)
    memorized = ratios < threshold
    boot = bootstrap_ci(np.mean, memorized.numpy().astype(np.float64), n_boot=n_boot, seed=seed, level=0.95)
    return MemorizationResult(value=boot.value, stderr=boot.stderr, ci95=boot.ci, ratios=ratios, memorized=memorized,
                              nearest_index=nearest, nearest_distance=d1, threshold=float(threshold), space=space,
                              n_boot=n_boot)
