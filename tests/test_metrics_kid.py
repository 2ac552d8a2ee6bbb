"""KID (unbiased polynomial-kernel MMD^2) and paired bootstrap changes of set statistics."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from kpe_lib.metrics.fid import FrechetReference, feature_statistics
from kpe_lib.metrics.kid import KIDResult, kid, kid_with_ci, resampled_kid
from kpe_lib.metrics.paired import PairedChange, paired_kid_change, paired_set_change


def gauss(n: int, d: int, seed: int, shift: float | np.ndarray = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + torch.as_tensor(shift, dtype=torch.float64)


def brute_force_kid(x, y, degree=3, gamma=None, coef=1.0) -> float:
    """The U-statistic by explicit double loops over rows, in plain Python floats."""
    x, y = [list(map(float, r)) for r in x], [list(map(float, r)) for r in y]
    d = len(x[0])
    g = 1.0 / d if gamma is None else gamma

    def k(u, v):
        return (g * sum(a * b for a, b in zip(u, v)) + coef) ** degree

    n, m = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2.0 * kxy


def poly3_expectation(a: np.ndarray, b: np.ndarray) -> float:
    """E[(x.y / d + 1)^3] for independent x ~ N(a, I_d), y ~ N(b, I_d), derived analytically.

    With t = x.y: E t = a.b, E t^2 = d + |a|^2 + |b|^2 + (a.b)^2 (from E x_i x_j = d_ij + a_i a_j), and from the
    Gaussian third moments E x_i x_j x_k = a_i a_j a_k + a_i d_jk + a_j d_ik + a_k d_ij,
    E t^3 = (a.b)^3 + 3 (a.b)(|a|^2 + |b|^2) + (3 d + 6)(a.b). Then
    E (t/d + 1)^3 = 1 + 3 E t / d + 3 E t^2 / d^2 + E t^3 / d^3.
    """
    d = a.shape[0]
    ab, aa, bb = float(a @ b), float(a @ a), float(b @ b)
    t1, t2 = ab, d + aa + bb + ab ** 2
    t3 = ab ** 3 + 3 * ab * (aa + bb) + (3 * d + 6) * ab
    return 1 + 3 * t1 / d + 3 * t2 / d ** 2 + t3 / d ** 3


def poly3_mmd2_closed_form(mu: np.ndarray) -> float:
    """Population MMD^2 of N(0, I_d) and N(mu, I_d) under k(x, y) = (x.y / d + 1)^3.

    E k(x, x') + E k(y, y') - 2 E k(x, y) with the expectations of :func:`poly3_expectation`; with s = |mu|^2
    this is 3 s / d + 3 s^2 / d^2 + (s^3 + 6 s^2 + (3 d + 6) s) / d^3.
    """
    zero = np.zeros_like(mu)
    return poly3_expectation(zero, zero) + poly3_expectation(mu, mu) - 2 * poly3_expectation(zero, mu)


# ----------------------------------------------------------------------------------------------- kid
def test_kid_equals_brute_force_double_loop():
    x, y = gauss(5, 3, 0), gauss(4, 3, 1, shift=0.7)
    assert abs(kid(x, y) - brute_force_kid(x, y)) < 1e-12
    assert abs(kid(x.numpy(), y.numpy()) - brute_force_kid(x, y)) < 1e-12
    for degree, gamma, coef in [(1, 1.0, 0.0), (2, 0.3, 2.0), (4, None, 0.5)]:
        assert abs(kid(x, y, degree=degree, gamma=gamma, coef=coef)
                   - brute_force_kid(x, y, degree=degree, gamma=gamma, coef=coef)) < 1e-12
    # float32 input is promoted to float64 before the kernel
    assert abs(kid(x.float(), y.float()) - brute_force_kid(x.float(), y.float())) < 1e-12


def brute_force_resampled_kid(x, y, idx, degree=3):
    """The resample estimator by explicit loops: within the resample only pairs of different original rows."""
    d = x.shape[1]

    def k(u, v):
        return (float(u @ v) / d + 1.0) ** degree

    n, m = len(x), len(idx)
    kxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    pairs = [(i, j) for i in range(m) for j in range(m) if idx[i] != idx[j]]
    kyy = sum(k(y[idx[i]], y[idx[j]]) for i, j in pairs) / len(pairs)
    kxy = sum(k(x[i], y[idx[j]]) for i in range(n) for j in range(m)) / (n * m)
    return kxx + kyy - 2.0 * kxy


def test_resampled_kid_leaves_out_pairs_that_repeat_an_original_row():
    x, y = gauss(6, 2, 2), gauss(5, 2, 3, shift=0.4)
    idx = np.array([0, 0, 3, 3, 3])   # the pairs (0, 1), (2, 3), ... repeat one original row: left out
    assert abs(resampled_kid(x, y, idx) - brute_force_resampled_kid(x, y, idx)) < 1e-12
    assert abs(resampled_kid(x, y, np.arange(5)) - kid(x, y)) < 1e-12   # no repeat: the plain estimator
    with pytest.raises(ValueError, match="idx"):
        resampled_kid(x, y, np.array([2, 2, 2]))


def test_kid_of_one_gaussian_is_near_zero_and_its_interval_covers_zero():
    x, y = gauss(600, 8, 10), gauss(600, 8, 11)
    value = kid(x, y)
    assert abs(value) < 0.02          # null sd at this size is about 0.006
    res = kid_with_ci(x, y, n_boot=300, seed=0)
    assert isinstance(res, KIDResult) and res.value == pytest.approx(value, abs=1e-12)
    assert res.ci[0] <= 0.0 <= res.ci[1]
    assert res.stderr > 0 and res.n_real == res.n_fake == 600 and res.gamma == pytest.approx(1 / 8)
    # without repeated-row pairs the replicates are centred on the full-set value (no inflation)
    assert abs(res.ci[0] + res.ci[1] - 2 * value) < 2 * res.stderr


def test_kid_interval_covers_zero_for_equal_distributions_at_about_its_level():
    covered = 0
    for r in range(20):
        x, y = gauss(200, 8, 300 + 2 * r), gauss(200, 8, 301 + 2 * r)
        lo, hi = kid_with_ci(x, y, n_boot=200, seed=r).ci
        covered += lo <= 0.0 <= hi
    assert covered >= 15   # a 95% interval; the old duplicate-pair replicates covered 0 about half the time


def test_kid_of_shifted_gaussians_is_positive():
    x = gauss(400, 8, 20)
    values = [kid(x, gauss(400, 8, 21, shift=s)) for s in (0.0, 0.3, 0.6)]
    assert values[1] > 0.05 and values[2] > values[1]


MUS = [np.array([1.0, 0.5]), np.array([0.6, 0.0, -0.3, 0.2])]


@pytest.mark.parametrize("mu", MUS, ids=["d=2", "d=4"])
def test_polynomial_kernel_expectations_match_a_large_sample(mu):
    # the analytic E[(x.y/d + 1)^3] behind the closed form against 400,000 independent pairs (x, y)
    d = mu.shape[0]
    s = float(mu @ mu)
    closed = 3 * s / d + 3 * s ** 2 / d ** 2 + (s ** 3 + 6 * s ** 2 + (3 * d + 6) * s) / d ** 3
    assert poly3_mmd2_closed_form(mu) == pytest.approx(closed, rel=1e-12)
    for a, b in [(0 * mu, 0 * mu), (mu, mu), (0 * mu, mu), (mu, -0.5 * mu)]:
        x, y = gauss(400_000, d, 7, shift=a), gauss(400_000, d, 8, shift=b)
        k = ((x * y).sum(1) / d + 1).pow(3).numpy()
        assert abs(k.mean() - poly3_expectation(a, b)) < 5 * k.std() / math.sqrt(k.size)


@pytest.mark.parametrize("mu", MUS, ids=["d=2", "d=4"])
def test_kid_matches_the_polynomial_kernel_closed_form(mu):
    # KID is unbiased for the population MMD^2, so the mean over R independent replications (n = m = 1000)
    # must lie within a few standard errors of the closed form (a large-sample check)
    d = mu.shape[0]
    truth = poly3_mmd2_closed_form(mu)
    reps = np.array([kid(gauss(1000, d, 100 + 2 * r), gauss(1000, d, 101 + 2 * r, shift=mu)) for r in range(16)])
    se = reps.std(ddof=1) / math.sqrt(reps.size)
    assert abs(reps.mean() - truth) < 4 * se
    assert se < 0.05 * truth          # the check has teeth: the standard error is small against the value


def test_kid_with_ci_replicates_are_kid_of_resampled_fake_rows():
    x, y = gauss(30, 3, 30), gauss(25, 3, 31, shift=0.5)
    res = kid_with_ci(x, y, n_boot=40, seed=7, level=0.9)
    rng = np.random.default_rng(7)
    reps = np.array([resampled_kid(x, y, rng.integers(0, 25, size=25)) for _ in range(40)])
    assert res.stderr == pytest.approx(reps.std(ddof=1), abs=1e-10)
    lo, hi = np.quantile(reps, [0.05, 0.95])
    assert res.ci == pytest.approx((lo, hi), abs=1e-10) and res.level == 0.9


# -------------------------------------------------------------------------------------- paired change
def test_identical_samplers_give_zero_change_and_p_one():
    real, z = gauss(80, 4, 40), gauss(60, 4, 41)
    for res in (paired_set_change(kid, real, z, z.clone(), n_boot=50),
                paired_kid_change(real, z, z.clone(), n_boot=50)):
        assert isinstance(res, PairedChange)
        assert res.change == 0.0 and res.pvalue == 1.0 and res.ci == (0.0, 0.0) and res.n == 60
        assert res.value_a == res.value_b


def test_consistent_shift_gives_an_interval_that_excludes_zero():
    real, z = gauss(300, 4, 50), gauss(300, 4, 51)
    res = paired_kid_change(real, z, z + 0.3, n_boot=400, seed=1)
    assert res.change == pytest.approx(res.value_b - res.value_a)
    assert res.change > 0 and res.ci[0] > 0 and res.pvalue < 0.01
    flipped = paired_kid_change(real, z + 0.3, z, n_boot=400, seed=1)
    assert flipped.change == pytest.approx(-res.change) and flipped.ci[1] < 0


def test_pairing_makes_the_interval_much_narrower():
    # sampler B = sampler A plus a little per-sample jitter on the same noise: the KIDs of a and b move together
    # across resamples, so their paired difference is far more stable than two independent resamples suggest.
    # The unpaired bootstrap of the difference resamples a and b independently (other seeds), so its
    # standard deviation is the root sum of squares of the two kid_with_ci standard errors.
    real, z = gauss(300, 4, 60), gauss(300, 4, 61)
    a, b = z, z + 0.05 * gauss(300, 4, 62)
    paired = paired_kid_change(real, a, b, n_boot=300, seed=2)
    sd_a, sd_b = kid_with_ci(real, a, n_boot=300, seed=3).stderr, kid_with_ci(real, b, n_boot=300, seed=4).stderr
    unpaired_sd = math.hypot(sd_a, sd_b)
    assert paired.stderr < unpaired_sd / 10
    # the same shows in the intervals: the paired one is a small fraction of +-1.96 unpaired sd
    assert (paired.ci[1] - paired.ci[0]) < 2 * 1.96 * unpaired_sd / 10
    assert paired.ci[0] < 0 < paired.ci[1]


def test_cached_kid_change_equals_resampled_kid_by_brute_force():
    real, z = gauss(50, 3, 70), gauss(40, 3, 71)
    a, b = z, z * 1.1 + 0.2
    for kw in ({}, {"degree": 2, "gamma": 0.7, "coef": 0.5}):
        fast = paired_kid_change(real, a, b, n_boot=60, seed=3, level=0.8, **kw)
        rng = np.random.default_rng(3)
        changes = []
        for _ in range(60):
            idx = rng.integers(0, 40, size=40)
            changes.append(resampled_kid(real, b, idx, **kw) - resampled_kid(real, a, idx, **kw))
        changes = np.array(changes)
        assert fast.change == pytest.approx(kid(real, b, **kw) - kid(real, a, **kw), abs=1e-12)
        assert fast.stderr == pytest.approx(changes.std(ddof=1), abs=1e-10)
        np.testing.assert_allclose(fast.ci, np.quantile(changes, [0.1, 0.9]), rtol=0, atol=1e-10)


def test_generic_paired_change_works_with_a_fid_statistic():
    real, z = gauss(300, 3, 80), gauss(200, 3, 81)
    ref = FrechetReference.from_stats(feature_statistics(real))
    calls = []

    def fid_stat(r, fake):
        calls.append(type(fake))
        return ref.fid(fake)

    same = paired_set_change(fid_stat, real.numpy(), z.numpy(), z.numpy().copy(), n_boot=30)
    assert same.change == 0.0 and same.pvalue == 1.0
    assert set(calls) == {np.ndarray}   # numpy in, numpy to the statistic
    shifted = paired_set_change(fid_stat, real, z, z + 0.4, n_boot=200, seed=4)
    assert shifted.change > 0 and shifted.ci[0] > 0 and shifted.pvalue == 0.0


def test_results_are_frozen():
    res = paired_kid_change(gauss(10, 2, 90), gauss(8, 2, 91), gauss(8, 2, 92), n_boot=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.change = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        kid_with_ci(gauss(10, 2, 90), gauss(8, 2, 91), n_boot=5).value = 0.0


# ------------------------------------------------------------------------------------------ bad input
X, Y = gauss(10, 3, 0), gauss(10, 3, 1)


@pytest.mark.parametrize("call, name", [
    (lambda: kid(X[:, 0], Y), "real_feats"),
    (lambda: kid(X, Y[:, 0].numpy()), "fake_feats"),
    (lambda: kid(X, Y[:, :2]), "fake_feats"),
    (lambda: kid(X[:1], Y), "real_feats"),
    (lambda: kid(X, Y[:1]), "fake_feats"),
    (lambda: kid(X, [[1.0, 2.0, 3.0]] * 3), "fake_feats"),
    (lambda: kid(X, Y, degree=0), "degree"),
    (lambda: kid(X, Y, gamma=-1.0), "gamma"),
    (lambda: kid(X, Y, coef=float("nan")), "coef"),
    (lambda: kid(X, Y * float("nan")), "fake_feats"),
    (lambda: kid_with_ci(X, Y, n_boot=0), "n_boot"),
    (lambda: kid_with_ci(X, Y, level=1.0), "level"),
    (lambda: kid_with_ci(X, Y, level=0.0), "level"),
    (lambda: kid_with_ci(X, Y[:, :2]), "fake_feats"),
    (lambda: paired_kid_change(X, Y, Y[:9]), "feats_b"),
    (lambda: paired_set_change(kid, X, Y, Y[:9]), "feats_b"),
    (lambda: paired_set_change(kid, X, Y[:, 0], Y), "feats_a"),
    (lambda: paired_set_change(kid, X, Y, Y[:, :2]), "feats_b"),
    (lambda: paired_set_change(kid, X[:, 0], Y, Y), "real_feats"),
    (lambda: paired_set_change(kid, X, Y[:1], Y[:1]), "feats_a"),
    (lambda: paired_set_change(kid, X, Y, Y, n_boot=0), "n_boot"),
    (lambda: paired_set_change(kid, X, Y, Y, level=1.5), "level"),
    (lambda: paired_kid_change(X, Y, Y, n_boot=-3), "n_boot"),
    (lambda: paired_kid_change(X, Y, Y, level=-0.1), "level"),
    (lambda: paired_set_change("kid", X, Y, Y), "stat"),
])
def test_bad_inputs_raise_value_errors_naming_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
