"""Bootstrap helpers (Mathematics §5) against analytic standard errors and scipy."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from kpe_lib.metrics import bootstrap_ci, spearman_with_ci


def test_bootstrap_of_the_mean_matches_the_analytic_stderr():
    x = np.random.default_rng(0).normal(size=500)
    res = bootstrap_ci(np.mean, x, n_boot=2000, seed=1)
    assert res.value == pytest.approx(x.mean())
    assert res.stderr == pytest.approx(x.std(ddof=1) / math.sqrt(500), rel=0.08)
    lo, hi = res.ci95
    assert lo < res.value < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 * res.stderr, rel=0.1)
    assert res.level == 0.95 and res.n_boot == 2000


def test_bootstrap_is_seeded_paired_and_accepts_tensors():
    a = torch.arange(50, dtype=torch.float64)
    b = 2 * a + 1
    # paired resampling keeps the exact linear relation in every replicate: zero spread
    res = bootstrap_ci(lambda x, y: float(np.corrcoef(x, y)[0, 1]), a, b, n_boot=100)
    assert res.value == pytest.approx(1.0) and res.stderr == pytest.approx(0.0, abs=1e-12)
    r1 = bootstrap_ci(np.median, a.numpy(), n_boot=300, seed=7)
    r2 = bootstrap_ci(np.median, a.numpy(), n_boot=300, seed=7)
    r3 = bootstrap_ci(np.median, a.numpy(), n_boot=300, seed=8)
    assert r1 == r2 and r1 != r3


def test_bootstrap_level_and_ci95_guard():
    x = np.random.default_rng(0).normal(size=200)
    r90 = bootstrap_ci(np.mean, x, n_boot=500, level=0.9)
    r95 = bootstrap_ci(np.mean, x, n_boot=500, level=0.95)
    assert r90.ci[1] - r90.ci[0] < r95.ci[1] - r95.ci[0]
    with pytest.raises(ValueError, match="level=0.95"):
        _ = r90.ci95


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="share their length"):
        bootstrap_ci(np.mean, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.mean, np.zeros(3), n_boot=0)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci(np.mean, np.zeros(3), level=1.5)


def test_spearman_matches_scipy_with_ties_and_has_a_sensible_interval():
    rng = np.random.default_rng(3)
    a = rng.normal(size=300)
    b = -a + rng.normal(size=300)
    b[:40] = np.round(b[:40])  # ties
    res = spearman_with_ci(a, b, n_boot=500, seed=0)
    want = scipy.stats.spearmanr(a, b)
    assert res.value == pytest.approx(want.statistic, abs=1e-12)
    assert res.pvalue == pytest.approx(want.pvalue)
    assert res.n == 300 and res.ci[0] < res.value < res.ci[1] < 0
    # Fisher-z approximation of the sampling sd of rho: (1 - rho^2) / sqrt(n - 3) (rough for Spearman)
    assert res.stderr == pytest.approx((1 - res.value ** 2) / math.sqrt(297), rel=0.35)
    # monotone transforms leave rho unchanged
    assert spearman_with_ci(np.exp(a), b ** 3, n_boot=10).value == pytest.approx(res.value, abs=1e-12)


def test_spearman_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        spearman_with_ci(np.zeros(5), np.zeros(6))
    with pytest.raises(ValueError, match="NaN"):
        spearman_with_ci(np.array([1.0, np.nan, 2.0]), np.zeros(3))
