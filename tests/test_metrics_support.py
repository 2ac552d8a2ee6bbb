"""Local support (Mathematics §5): kNN against sklearn and brute force, KDE against scipy.stats.gaussian_kde."""
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from sklearn.neighbors import NearestNeighbors

from kpe_lib.metrics import kde_bandwidth, kde_support, knn_support


def test_knn_support_matches_sklearn_and_the_density_formula():
    rng = np.random.default_rng(0)
    ref, query = rng.normal(size=(120, 4)), rng.normal(size=(30, 4))
    res = knn_support(torch.from_numpy(query), torch.from_numpy(ref), k=5, chunk_size=7)
    dist, _ = NearestNeighbors(n_neighbors=5).fit(ref).kneighbors(query)
    np.testing.assert_allclose(res.radius.numpy(), dist[:, -1], rtol=1e-12)
    np.testing.assert_allclose(res.mean_distance.numpy(), dist.mean(1), rtol=1e-12)
    # log(k / (n V_d r^d)) with V_4 = pi^2 / 2
    want = np.log(5 / 120) - np.log(math.pi ** 2 / 2) - 4 * np.log(dist[:, -1])
    np.testing.assert_allclose(res.log_density.numpy(), want, rtol=1e-12)
    assert res.k == 5 and "knn" in res.rule


def test_knn_density_is_consistent_for_a_uniform_cube():
    # uniform on [0, 1]^2: true density 1, so log p ~ 0 on average for interior queries
    rng = np.random.default_rng(1)
    ref = torch.from_numpy(rng.uniform(size=(20000, 2)))
    query = torch.from_numpy(rng.uniform(0.25, 0.75, size=(200, 2)))
    res = knn_support(query, ref, k=50)
    assert abs(float(res.log_density.mean())) < 0.05


def isotropic_sample(n: int, d: int, scale: float, seed: int) -> np.ndarray:
    """Points whose unbiased sample covariance is exactly scale^2 * I (whitened), shifted off the origin."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    x -= x.mean(0)
    chol = np.linalg.cholesky(np.cov(x, rowvar=False))
    return scale * x @ np.linalg.inv(chol).T + 3.0


@pytest.mark.parametrize("rule", ["scott", "silverman"])
def test_kde_matches_scipy_gaussian_kde_on_isotropic_data(rule):
    ref = isotropic_sample(200, 3, 0.7, seed=2)
    query = np.random.default_rng(3).normal(3.0, 1.0, size=(40, 3))
    scipy_kde = scipy.stats.gaussian_kde(ref.T, bw_method=rule)
    res = kde_support(torch.from_numpy(query), torch.from_numpy(ref), bandwidth=rule, chunk_size=6)
    np.testing.assert_allclose(res.log_density.numpy(), scipy_kde.logpdf(query.T), rtol=1e-10)
    assert res.bandwidth == pytest.approx(0.7 * scipy_kde.factor, rel=1e-12)
    assert rule in res.rule


def test_kde_fixed_bandwidth_matches_brute_force_even_far_from_the_data():
    rng = np.random.default_rng(4)
    ref, query = rng.normal(size=(50, 5)), rng.normal(size=(10, 5)) * 6  # far queries: tiny densities
    h = 0.3
    d2 = ((query[:, None] - ref[None]) ** 2).sum(-1)
    want = scipy.special.logsumexp(-d2 / (2 * h * h), axis=1) - np.log(50) - 2.5 * np.log(2 * np.pi * h * h)
    res = kde_support(torch.from_numpy(query), torch.from_numpy(ref), bandwidth=h, chunk_size=3)
    np.testing.assert_allclose(res.log_density.numpy(), want, rtol=1e-10)
    assert np.isfinite(res.log_density.numpy()).all() and res.bandwidth == h


def test_kde_bandwidth_rules_by_hand():
    ref = torch.from_numpy(isotropic_sample(100, 2, 2.0, seed=5))
    assert kde_bandwidth(ref, "scott") == pytest.approx(2.0 * 100 ** (-1 / 6))
    assert kde_bandwidth(ref, "silverman") == pytest.approx(2.0 * (100 * 4 / 4) ** (-1 / 6))


def test_support_rejects_bad_input():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="bandwidth"):
        kde_support(x, x, bandwidth="normal")
    with pytest.raises(ValueError, match="bandwidth"):
        kde_support(x, x, bandwidth=-1.0)
    with pytest.raises(ValueError, match="zero variance"):
        kde_support(x, x)
    with pytest.raises(ValueError, match="k must be"):
        knn_support(x, x, k=6)
    with pytest.raises(ValueError, match="same number of features"):
        kde_support(torch.zeros(2, 3), x, bandwidth=1.0)
