"""Exact McNemar, Holm-Bonferroni and the two-sample wrappers of kpe_lib.metrics.significance."""
import dataclasses
import itertools
import math

import numpy as np
import pytest
import scipy.stats
import torch

from kpe_lib.metrics.groups import compare_groups, kpe_groups
from kpe_lib.metrics.significance import (McNemarResult, TwoSampleResult, holm, holm_reject, mann_whitney,
                                          mcnemar_exact, welch_test)


def paired(n01: int, n10: int, n11: int = 0, n00: int = 0) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([0] * n01 + [1] * n10 + [1] * n11 + [0] * n00, dtype=bool)
    b = np.array([1] * n01 + [0] * n10 + [1] * n11 + [0] * n00, dtype=bool)
    return a, b


def brute_force_mcnemar(n01: int, n10: int) -> float:
    """P(a result at least as extreme) by enumerating all 2^N sign patterns of the N discordant pairs."""
    n = n01 + n10
    if n == 0:
        return 1.0
    observed = min(n01, n10)
    extreme = sum(1 for signs in itertools.product((0, 1), repeat=n) if min(sum(signs), n - sum(signs)) <= observed)
    return extreme / 2 ** n


# -------------------------------------------------------------------------------------------- McNemar
def test_mcnemar_hand_counts():
    res = mcnemar_exact(*paired(0, 6, n11=3, n00=11))
    assert isinstance(res, McNemarResult)
    assert (res.n01, res.n10, res.n) == (0, 6, 20)
    assert res.pvalue == 2 / 64 == 0.03125
    assert res.prop_a == 9 / 20 and res.prop_b == 3 / 20 and res.change == pytest.approx(-6 / 20)
    assert mcnemar_exact(*paired(6, 0)).pvalue == 0.03125       # symmetric
    assert mcnemar_exact(*paired(1, 1)).pvalue == 1.0            # 2 * P(X <= 1 | 2) = 1.5, capped
    assert mcnemar_exact(*paired(1, 4)).pvalue == pytest.approx(2 * 6 / 32)   # 2 * (1 + 5) / 32
    res = mcnemar_exact(*paired(0, 0, n11=4, n00=5))             # no discordant pairs
    assert res.pvalue == 1.0 and res.change == 0.0


@pytest.mark.parametrize("n01, n10", [(0, 1), (0, 5), (2, 7), (3, 3), (4, 5), (1, 11), (6, 6), (0, 12)])
def test_mcnemar_matches_brute_force_enumeration(n01, n10):
    a, b = paired(n01, n10, n11=2, n00=1)
    assert mcnemar_exact(a, b).pvalue == pytest.approx(brute_force_mcnemar(n01, n10), rel=1e-12, abs=1e-15)


def test_mcnemar_accepts_0_1_arrays_lists_and_tensors():
    a, b = paired(2, 7, n11=3)
    want = mcnemar_exact(a, b)
    assert mcnemar_exact(a.astype(int), b.astype(float)) == want
    assert mcnemar_exact(a.tolist(), b.tolist()) == want
    assert mcnemar_exact(torch.from_numpy(a), torch.from_numpy(b).int()) == want
    with pytest.raises(dataclasses.FrozenInstanceError):
        want.pvalue = 0.0


@pytest.mark.parametrize("a, b, name", [
    ([0, 1, 1], [0, 1], "b"),
    ([[0, 1]], [[0, 1]], "a"),
    ([], [], "a"),
    ([0, 2, 1], [0, 1, 1], "a"),
    ([0, 1, 1], [0, 0.5, 1], "b"),
    ([0, 1, float("nan")], [0, 1, 1], "a"),
    (["x", "y"], [0, 1], "a"),
])
def test_mcnemar_bad_inputs(a, b, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        mcnemar_exact(a, b)


# ----------------------------------------------------------------------------------------------- Holm
def test_holm_hand_computed_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    adj = holm([0.01, 0.04, 0.03, 0.005])
    assert adj == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm_reject([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm_reject([0.01, 0.04, 0.03, 0.005], alpha=0.1) == [True, True, True, True]
    assert holm([0.3, 0.5]) == [0.6, 0.6] and holm([0.7, 0.9]) == [1.0, 1.0]     # capped at 1
    assert holm([]) == [] and holm([0.2]) == [0.2]


def test_holm_nan_passes_through_and_is_not_counted():
    adj = holm([0.01, float("nan"), 0.04, 0.03, float("nan"), 0.005])
    assert math.isnan(adj[1]) and math.isnan(adj[4])
    assert [adj[i] for i in (0, 2, 3, 5)] == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm_reject([float("nan"), 0.001]) == [False, True]
    assert all(math.isnan(v) for v in holm(np.array([np.nan, np.nan])))


def test_holm_is_monotone_bounded_and_dominates_the_raw_values():
    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 30):
        p = rng.uniform(size=m) ** 3
        p[rng.integers(0, m)] = p[0]            # a tie
        adj = np.array(holm(p))
        order = np.argsort(p, kind="stable")
        assert np.all(np.diff(adj[order]) >= 0)
        assert np.all(adj >= p) and np.all(adj <= 1.0)
        assert np.all(adj <= np.minimum(1.0, m * p) + 1e-15)       # never worse than Bonferroni
        assert adj[p == p[0]].min() == adj[p == p[0]].max()       # ties get one value
        assert np.array_equal(holm(torch.from_numpy(p)), adj)


@pytest.mark.parametrize("p, name", [([0.1, 1.2], "pvalues"), ([-0.01], "pvalues"), ([[0.1, 0.2]], "pvalues"),
                                     (["0.1"], "pvalues"), ([0.1, float("inf")], "pvalues")])
def test_holm_bad_inputs(p, name):
    with pytest.raises(ValueError, match=name):
        holm(p)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5, True, "0.05"])
def test_holm_reject_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha"):
        holm_reject([0.01], alpha=alpha)


# ----------------------------------------------------------------------------------------- two-sample
def test_welch_and_mann_whitney_agree_with_scipy_and_compare_groups():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.0, 1.0, size=40), rng.normal(0.6, 2.0, size=55)
    w = welch_test(a, b)
    ref = scipy.stats.ttest_ind(b, a, equal_var=False)
    assert isinstance(w, TwoSampleResult) and w.test == "welch" and (w.n_a, w.n_b) == (40, 55)
    assert w.statistic == pytest.approx(ref.statistic, rel=1e-12) and w.pvalue == pytest.approx(ref.pvalue, rel=1e-10)
    assert w.dof == pytest.approx(ref.df, rel=1e-12) and w.difference == pytest.approx(b.mean() - a.mean())
    u = mann_whitney(a, b)
    ref = scipy.stats.mannwhitneyu(b, a, alternative="two-sided")
    assert u.statistic == ref.statistic and u.pvalue == pytest.approx(ref.pvalue, rel=1e-12) and u.dof is None
    assert u.difference == pytest.approx(np.median(b) - np.median(a))
    # the same numbers as the KPE-group comparison, which shares welch_t / mann_whitney_u
    b = b[:40]
    w, u = welch_test(a, b), mann_whitney(a, b)
    values = np.concatenate([a, b])
    cmp = compare_groups(values, kpe_groups(np.arange(80.0), cut="halves"))   # low = a, high = b
    assert cmp.welch_t == pytest.approx(w.statistic, rel=1e-12) and cmp.welch_p == pytest.approx(w.pvalue, rel=1e-10)
    assert cmp.mw_u == u.statistic and cmp.mw_p == pytest.approx(u.pvalue, rel=1e-12)


def test_welch_constant_samples():
    assert welch_test([1.0, 1.0], [1.0, 1.0]).pvalue == 1.0
    r = welch_test([1.0, 1.0], [2.0, 2.0])
    assert r.statistic == math.inf and r.pvalue == 0.0


@pytest.mark.parametrize("call, name", [
    (lambda: welch_test([1.0], [1.0, 2.0]), "a"),
    (lambda: welch_test([1.0, 2.0], [[1.0, 2.0]]), "b"),
    (lambda: welch_test([1.0, float("nan")], [1.0, 2.0]), "a"),
    (lambda: mann_whitney([], [1.0]), "a"),
    (lambda: mann_whitney([1.0], np.ones((2, 2))), "b"),
])
def test_two_sample_bad_inputs(call, name):
    with pytest.raises(ValueError, match=f"^{name} "):
        call()
