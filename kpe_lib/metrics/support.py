"""Local training support of generated samples in a feature space (Mathematics §5).

Two estimates of how densely the training set populates the neighbourhood of each generated sample:

* kNN (Loftsgaarden & Quesenberry): with ``r_k`` the distance to the k-th nearest training item,
  ``p(x) ~ k / (n V_d r_k^d)``, ``V_d = pi^{d/2} / Gamma(d/2 + 1)`` the unit-ball volume, so
  ``log p = log k - log n - log V_d - d log r_k``. Only ``-d log r_k`` varies between samples; rank
  statistics (Spearman) see the same order as ``-r_k``. The mean distance to the k nearest is kept too.
* Gaussian KDE with an isotropic kernel of standard deviation ``h``:
  ``log p(x) = logsumexp_i(-||x - a_i||^2 / (2 h^2)) - log n - (d/2) log(2 pi h^2)``, streamed over chunks.
  **[choice]** bandwidth rules (isotropic versions of scipy.stats.gaussian_kde's): ``h = sigma * factor``
  with ``sigma^2 = trace(Cov) / d`` (unbiased covariance, ddof = 1), Scott ``factor = n^(-1/(d+4))``,
  Silverman ``factor = (n (d + 2) / 4)^(-1/(d+4))``; a float is ``h`` itself. On data whose covariance is
  isotropic this equals gaussian_kde exactly.

Mathematics §5 leaves k and the bandwidth open; k = 5 and Scott are the defaults here, recorded in ``rule``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kpe_lib.metrics._checks import as_matrix, check_positive_int
from kpe_lib.metrics.neighbors import nearest_neighbors, squared_distances

BANDWIDTH_RULES = ("scott", "silverman")


@dataclass
class SupportResult:
    """Per-sample local support of the training set.

    Attributes:
        log_density: (M,) float64 log density estimate (nats, in feature-space units).
        rule: the estimator and its parameters, e.g. "knn(k=5)" or "kde(scott, h=0.31)".
        radius: (M,) distance to the k-th nearest training item (kNN only, else None).
        mean_distance: (M,) mean distance to the k nearest training items (kNN only, else None).
        k: neighbours used (kNN only).
        bandwidth: kernel standard deviation h (KDE only).
    """

    log_density: torch.Tensor
    rule: str
    radius: torch.Tensor | None = None
    mean_distance: torch.Tensor | None = None
    k: int | None = None
    bandwidth: float | None = None


def log_unit_ball_volume(d: int) -> float:
    """log V_d, the log volume of the unit ball in d dimensions."""
    return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1.0)


def knn_support(query: torch.Tensor, ref: torch.Tensor, k: int = 5, chunk_size: int = 2048,
                dtype: torch.dtype = torch.float64) -> SupportResult:
    """kNN local support of each query among the reference (training) features (Mathematics §5).

    Args:
        query: (M, D) generated-sample features (or (M, ...) flattened).
        ref: (n, D) training features, n >= k.
        k: neighbour rank defining the radius r_k.
        chunk_size: queries per block of the neighbour search.
        dtype: search dtype.

    Returns:
        SupportResult with log_density = log(k / (n V_d r_k^d)) (``-inf`` where r_k = 0), radius = r_k,
        mean_distance = mean of the k nearest distances.
    """
    q, r = as_matrix(query, "query"), as_matrix(ref, "ref")
    check_positive_int(k, "k")
    nn = nearest_neighbors(q, r, k=k, dtype=dtype, query_chunk=chunk_size, ref_chunk=2 * chunk_size)
    radius = nn.distances[:, -1]
    n, d = r.shape
    const = math.log(k) - math.log(n) - log_unit_ball_volume(d)
    with torch.no_grad():
        log_density = const - d * torch.log(radius)
    return SupportResult(log_density=log_density, rule=f"knn(k={k}): log(k / (n V_d r_k^d))", radius=radius,
                         mean_distance=nn.distances.mean(1), k=k)


def kde_bandwidth(ref: torch.Tensor, bandwidth: str | float = "scott", k: int = 5) -> float:
    """The isotropic KDE kernel standard deviation h for a rule name or a given float.

    Rules (the first two as in the module docstring, unchanged):

    * ``"scott"``: ``h = sigma * n^(-1/(d+4))``, ``sigma^2 = trace(Cov) / d`` (ddof = 1).
    * ``"silverman"``: ``h = sigma * (n (d + 2) / 4)^(-1/(d+4))``.
    * ``"knn_median"``: ``h = median_i r_k(a_i)``, the median over the reference points of the distance
      from ``a_i`` to its k-th nearest *other* reference point (the point itself is left out; exact
      duplicates of it count as neighbours at distance 0). With an even number of points the median is
      the mean of the two middle values (numpy's convention). Scott and Silverman shrink only like
      ``n^(-1/(d+4))``, so in 32+ dimensions h stays near sigma while neighbour distances are about
      ``sigma sqrt(2 d)``: the kernel then sees only the nearest training item and the KDE ranks queries
      exactly as the 1-NN distance does. The knn_median h is on the scale of those neighbour distances,
      so the KDE averages over several neighbours. Costs one exact all-pairs neighbour search of the
      reference set (O(n^2 D), :func:`kpe_lib.metrics.neighbors.nearest_neighbors`, float64).

    Args:
        ref: (n, D) reference (training) features; n >= 2, and n >= k + 1 for ``"knn_median"``.
        bandwidth: ``"scott"``, ``"silverman"``, ``"knn_median"``, or h itself as a positive float.
        k: neighbour rank of ``"knn_median"`` (integer >= 1); ignored by the other rules.

    Returns:
        h > 0 as a float.

    Raises:
        ValueError: an unknown rule or non-positive float, fewer than 2 reference items, k not an integer
            in [1, n - 1] for ``"knn_median"``, or a rule that gives h = 0 (constant or duplicated data).

    Example:
        >>> ref = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
        >>> kde_bandwidth(ref, "knn_median", k=1)   # nearest-other distances 1, 1, 2, 3, 4
        2.0
    """
    r = as_matrix(ref, "ref").to(torch.float64)
    rules = BANDWIDTH_RULES + ("knn_median",)
    if isinstance(bandwidth, str) and bandwidth == "knn_median":
        n = r.shape[0]
        if n < 2:
            raise ValueError("a bandwidth rule needs at least 2 reference items")
        check_positive_int(k, "k")
        if k > n - 1:
            raise ValueError(f"k must be <= n - 1 = {n - 1} (other reference items) for bandwidth='knn_median', "
                             f"got {k}")
        # the k+1 nearest include the point itself at distance 0, the smallest, so column k is the k-th other
        nn = nearest_neighbors(r, r, k=k + 1, dtype=torch.float64)
        dist = torch.sort(nn.distances[:, k]).values
        h = float(dist[n // 2]) if n % 2 else float((dist[n // 2 - 1] + dist[n // 2]) / 2)
        if h <= 0:
            raise ValueError(f"the median distance to the k-th nearest other reference item is 0 (k = {k}, "
                             "duplicated data); raise k or give bandwidth as a positive float")
        return h
    if isinstance(bandwidth, str):
        if bandwidth not in BANDWIDTH_RULES:
            raise ValueError(f"bandwidth must be one of {rules} or a positive float, got {bandwidth!r}")
        n, d = r.shape
        if n < 2:
            raise ValueError("a bandwidth rule needs at least 2 reference items")
        sigma = math.sqrt(float(r.var(0, unbiased=True).mean()))
        factor = n ** (-1.0 / (d + 4)) if bandwidth == "scott" else (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
        h = sigma * factor
        if h <= 0:
            raise ValueError("the reference features have zero variance; give bandwidth as a positive float")
        return h
    if isinstance(bandwidth, bool) or not isinstance(bandwidth, (int, float)) or not bandwidth > 0:
        raise ValueError(f"bandwidth must be one of {rules} or a positive float, got {bandwidth!r}")
    return float(bandwidth)


def kde_support(query: torch.Tensor, ref: torch.Tensor, bandwidth: str | float = "scott", chunk_size: int = 2048
                ) -> SupportResult:
    """Gaussian-KDE log density of each query under the reference (training) features (Mathematics §5).

    The log-sum-exp is streamed over chunks of ``2 * chunk_size`` reference items, in float64.

    Args:
        query: (M, D) generated-sample features.
        ref: (n, D) training features.
        bandwidth: "scott" (default), "silverman", or the kernel standard deviation h as a float.
        chunk_size: queries per block.

    Returns:
        SupportResult with log_density (M,), bandwidth h and rule.
    """
    q, r = as_matrix(query, "query"), as_matrix(ref, "ref")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query and ref must have the same number of features, got {q.shape[1]} and {r.shape[1]}")
    check_positive_int(chunk_size, "chunk_size")
    h = kde_bandwidth(r, bandwidth)
    n, d = r.shape
    ref_chunk = 2 * chunk_size
    norms = torch.cat([r[j:j + ref_chunk].to(torch.float64).pow(2).sum(1) for j in range(0, n, ref_chunk)])
    out = []
    for s in range(0, q.shape[0], chunk_size):
        qc = q[s:s + chunk_size].to(torch.float64)
        lse = torch.full((qc.shape[0],), -math.inf, dtype=torch.float64)
        for j in range(0, n, ref_chunk):
            logits = -squared_distances(qc, r[j:j + ref_chunk].to(torch.float64), norms[j:j + ref_chunk]) / (2 * h * h)
            lse = torch.logaddexp(lse, torch.logsumexp(logits, 1))
        out.append(lse)
    log_density = torch.cat(out) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h * h)
    name = bandwidth if isinstance(bandwidth, str) else "fixed"
    return SupportResult(log_density=log_density, rule=f"kde({name}, h={h:.6g}): isotropic Gaussian", bandwidth=h)
