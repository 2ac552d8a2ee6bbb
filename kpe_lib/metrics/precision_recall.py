"""Improved precision and recall of a generated set (Kynkaanniemi et al. 2019), on any features (Mathematics §5).

Example:
    >>> import torch
    >>> real = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    >>> precision_recall(real, real).precision
    1.0
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kpe_lib.metrics._checks import as_matrix, check_positive_int
from kpe_lib.metrics.neighbors import nearest_neighbors, squared_distances

__all__ = ["PRResult", "precision_recall"]


@dataclass
class PRResult:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Attributes:
        precision: fraction of generated features inside the real manifold.
        recall: fraction of real features inside the generated manifold.
        k: neighbour rank of the manifold radii.
        n_real, n_fake: set sizes.
    """

    precision: float
    recall: float
    k: int
    n_real: int
    n_fake: int


def _manifold_coverage(manifold: torch.Tensor, probes: torch.Tensor, k: int, chunk_size: int) -> float:
    """Fraction of probes inside the union of balls around manifold points of radius = k-th other neighbour."""
    # k + 1 neighbours of a set within itself: the first is the point itself (distance 0)
    radii = nearest_neighbors(manifold, manifold, k=k + 1, query_chunk=chunk_size).distances[:, k]
    r2 = radii.pow(2)
    m = manifold.to(torch.float64)
    center = m.mean(0)  # shifting both sets leaves distances unchanged and shrinks the norm-trick error
    m = m - center
    norms = m.pow(2).sum(1)
    inside = []
    for s in range(0, probes.shape[0], chunk_size):
        pc = probes[s:s + chunk_size].to(torch.float64) - center
        hit = torch.zeros(pc.shape[0], dtype=torch.bool)
        for j in range(0, m.shape[0], 4 * chunk_size):
            d2 = squared_distances(pc, m[j:j + 4 * chunk_size], norms[j:j + 4 * chunk_size])
            hit |= (d2 <= r2[j:j + 4 * chunk_size].unsqueeze(0)).any(1)
        inside.append(hit)
    return float(torch.cat(inside).double().mean())


def precision_recall(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 3, chunk_size: int = 1024
                     ) -> PRResult:
    """k-NN manifold precision and recall (Kynkaanniemi et al. 2019; Mathematics §5: k = 3).

    The real manifold is the union of balls centred at each real feature with radius its distance to its
    k-th nearest other real feature (likewise for the generated set). Precision: fraction of generated
    features in the real manifold (boundary included, up to float64 rounding); recall: fraction of real
    features in the generated one.

    Args:
        real_feats: (N, D) real features, N > k.
        fake_feats: (M, D) generated features, M > k.
        k: neighbour rank.
        chunk_size: rows per distance block.

    Returns:
        PRResult(precision, recall, k, n_real, n_fake).
    """
    r, f = as_matrix(real_feats, "real_feats"), as_matrix(fake_feats, "fake_feats")
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"real_feats and fake_feats must have the same dimension, got {r.shape[1]} and {f.shape[1]}")
    check_positive_int(k, "k")
    check_positive_int(chunk_size, "chunk_size")
    if min(r.shape[0], f.shape[0]) <= k:
        raise ValueError(f"both sets need more than k = {k} items, got {r.shape[0]} real and {f.shape[0]} generated")
    return PRResult(precision=_manifold_coverage(r, f, k, chunk_size), recall=_manifold_coverage(f, r, k, chunk_size),
                    k=k, n_real=int(r.shape[0]), n_fake=int(f.shape[0]))
