"""The "knn_median" KDE bandwidth rule of kpe_lib.metrics.support.kde_bandwidth."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from kpe_lib.metrics.neighbors import nearest_neighbors
from kpe_lib.metrics.support import kde_bandwidth, kde_support


def old_kde_bandwidth(ref: torch.Tensor, bandwidth: str) -> float:
    """The Scott / Silverman code as it was before the knn_median rule (bit-identity reference)."""
    r = ref.to(torch.float64)
    n, d = r.shape
    sigma = math.sqrt(float(r.var(0, unbiased=True).mean()))
    factor = n ** (-1.0 / (d + 4)) if bandwidth == "scott" else (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    return sigma * factor


def test_knn_median_on_a_hand_checkable_set():
    ref = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # nearest other point: 1, 1, 2, 3, 4 -> median 2; second nearest other: 3, 2, 3, 4, 7 -> median 3
    assert kde_bandwidth(ref, "knn_median", k=1) == 2.0
    assert kde_bandwidth(ref, "knn_median", k=2) == 3.0
    # even count: the mean of the two middle values; 1, 1, 2, 3 -> 1.5
    assert kde_bandwidth(ref[:4], "knn_median", k=1) == 1.5
    # 2-D: unit square corners, nearest other at 1 for all, second nearest 1, third sqrt(2)
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert kde_bandwidth(square, "knn_median", k=2) == 1.0
    assert kde_bandwidth(square, "knn_median", k=3) == pytest.approx(math.sqrt(2), rel=1e-15)
    # an exact duplicate counts as a neighbour at distance 0 (the point itself does not)
    dup = torch.tensor([[0.0], [0.0], [5.0]])          # nearest other: 0, 0, 5 -> median 0
    with pytest.raises(ValueError, match="duplicated"):
        kde_bandwidth(dup, "knn_median", k=1)
    assert kde_bandwidth(dup, "knn_median", k=2) == 5.0  # second nearest other: 5, 5, 5


def test_knn_median_default_k_and_kde_support_by_name():
    rng = np.random.default_rng(0)
    ref = torch.from_numpy(rng.normal(size=(50, 3)))
    nn = nearest_neighbors(ref, ref, k=6)
    assert kde_bandwidth(ref, "knn_median") == pytest.approx(float(np.median(nn.distances[:, 5].numpy())), rel=1e-15)
    res = kde_support(ref[:5], ref, bandwidth="knn_median")
    assert res.bandwidth == kde_bandwidth(ref, "knn_median") and "knn_median" in res.rule


def test_scott_and_silverman_are_unchanged():
    rng = np.random.default_rng(1)
    for shape in [(40, 2), (300, 33), (7, 64)]:
        ref = torch.from_numpy(rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=shape[1]))
        for rule in ("scott", "silverman"):
            assert kde_bandwidth(ref, rule) == old_kde_bandwidth(ref, rule)       # bit-identical
    assert kde_bandwidth(ref, 0.25) == 0.25 and kde_bandwidth(ref, 2) == 2.0


def test_in_high_dimension_scott_kde_ranks_like_1nn_but_knn_median_does_not():
    # 32-D Gaussian training set; each query sits at a chosen distance r_i from one training point (the
    # distances are distinct and far below the typical neighbour distance of about 8)
    rng = np.random.default_rng(0)
    n, d, m = 400, 32, 60
    ref = rng.normal(size=(n, d))
    u = rng.normal(size=(m, d))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    r = rng.permutation(np.linspace(0.5, 3.0, m))
    query = ref[rng.choice(n, m, replace=False)] + r[:, None] * u
    q, t = torch.from_numpy(query), torch.from_numpy(ref)
    d1 = nearest_neighbors(q, t, k=1).distances[:, 0].numpy()
    np.testing.assert_allclose(d1, r, rtol=1e-12)

    scott = kde_support(q, t, bandwidth="scott")
    knn = kde_support(q, t, bandwidth="knn_median")
    assert scott.bandwidth < 1.0 < 5.0 < knn.bandwidth          # h ~ 0.84 against neighbour distances ~ 8
    # Scott: the kernel sees only the nearest training point, the KDE order is the 1-NN order exactly
    assert np.array_equal(np.argsort(-scott.log_density.numpy(), kind="stable"), np.argsort(d1, kind="stable"))
    assert scipy.stats.spearmanr(scott.log_density, -d1).statistic == pytest.approx(1.0, abs=1e-12)
    # knn_median: the KDE averages over many training points and orders the queries differently
    rho = scipy.stats.spearmanr(knn.log_density, -d1).statistic
    assert rho < 0.8
    assert not np.array_equal(np.argsort(-knn.log_density.numpy(), kind="stable"), np.argsort(d1, kind="stable"))


@pytest.mark.parametrize("kwargs, name", [
    ({"bandwidth": "knn_median", "k": 0}, "k"),
    ({"bandwidth": "knn_median", "k": 2.5}, "k"),
    ({"bandwidth": "knn_median", "k": 5}, "k"),        # only 5 points: k <= 4
    ({"bandwidth": "knn-median"}, "bandwidth"),
    ({"bandwidth": -1.0}, "bandwidth"),
])
def test_knn_median_bad_inputs(kwargs, name):
    ref = torch.arange(5.0).reshape(5, 1)
    with pytest.raises(ValueError, match=f"^{name} "):
        kde_bandwidth(ref, **kwargs)
    with pytest.raises(ValueError, match="at least 2"):
        kde_bandwidth(ref[:1], "knn_median")
