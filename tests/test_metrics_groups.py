"""Tests of kpe_lib.metrics.groups: rank cuts, Welch's t and Mann-Whitney U against hand computations."""
import itertools

import numpy as np
import pytest
import scipy.stats
import torch

from kpe_lib.metrics.groups import (KPEGroups, compare_groups, kpe_groups, mann_whitney_u,
                                    stratified_permutation_test, welch_t)


def test_thirds_of_a_permutation_pick_the_extreme_ranks():
    rng = np.random.default_rng(0)
    kpe = rng.permutation(30).astype(float)
    g = kpe_groups(torch.from_numpy(kpe))
    assert g.n_low == g.n_high == 10
    assert set(kpe[g.low]) == set(range(10)) and set(kpe[g.high]) == set(range(20, 30))
    assert not (g.low & g.high).any()
    assert g.thresholds["all"] == (9.0, 20.0)
    assert "thirds" in g.cut


def test_ties_never_put_a_sample_in_both_groups():
    g = kpe_groups(np.ones(7), cut="halves")
    assert g.n_low == g.n_high == 3 and not (g.low & g.high).any()


def test_stratified_cut_is_made_within_each_class():
    # class 0 has all the large energies; a global cut would put only class 0 in the high group
    kpe = np.concatenate([np.arange(6) + 100.0, np.arange(6)])
    strata = np.array([0] * 6 + [1] * 6)
    g = kpe_groups(kpe, cut="thirds", strata=strata)
    assert g.n_low == g.n_high == 4
    for c in (0, 1):
        assert g.low[strata == c].sum() == 2 and g.high[strata == c].sum() == 2
    assert set(kpe[g.high & (strata == 1)]) == {4.0, 5.0}
    assert set(g.thresholds) == {0, 1}


@pytest.mark.parametrize("bad", ["tertiles", 0.0, 0.7])
def test_bad_cut_is_refused(bad):
    with pytest.raises(ValueError, match="cut"):
        kpe_groups(np.arange(9.0), cut=bad)


def test_small_stratum_and_bad_input_are_refused():
    with pytest.raises(ValueError, match="stratum"):
        kpe_groups(np.arange(4.0), strata=np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        kpe_groups(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="strata"):
        kpe_groups(np.arange(6.0), strata=np.zeros(5, int))


def test_welch_t_matches_the_textbook_formula():
    a, b = np.array([1.0, 2.0, 4.0, 7.0]), np.array([3.0, 5.0, 6.0, 9.0, 12.0])
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 5
    t_hand = (b.mean() - a.mean()) / np.sqrt(va + vb)
    dof_hand = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 4)
    t, dof = welch_t(a, b)
    assert t == pytest.approx(t_hand, rel=1e-12) and dof == pytest.approx(dof_hand, rel=1e-12)


def test_mann_whitney_u_counts_winning_pairs():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 9).astype(float), rng.integers(1, 7, 11).astype(float)  # ties on purpose
    brute = sum((y > x) + 0.5 * (y == x) for x, y in itertools.product(a, b))
    assert mann_whitney_u(a, b) == pytest.approx(brute)


def test_compare_groups_reports_group_statistics_and_tests():
    rng = np.random.default_rng(2)
    kpe = np.arange(60.0)
    values = kpe / 10 + rng.normal(size=60)  # increases with KPE
    g = kpe_groups(kpe)
    c = compare_groups(values, g)
    lo, hi = values[:20], values[40:]
    assert c.mean_low == pytest.approx(lo.mean()) and c.std_high == pytest.approx(hi.std(ddof=1))
    assert c.diff == pytest.approx(hi.mean() - lo.mean()) and c.diff > 0
    assert c.welch_p == pytest.approx(scipy.stats.ttest_ind(hi, lo, equal_var=False).pvalue)
    assert c.welch_p < 1e-6 and c.mw_p < 1e-4
    assert c.rank_biserial == pytest.approx(2 * mann_whitney_u(lo, hi) / 400 - 1) and c.rank_biserial > 0.8
    assert "Welch p" in c.summary()


def test_compare_groups_null_case_and_shape_check():
    rng = np.random.default_rng(3)
    g = kpe_groups(np.arange(300.0))
    c = compare_groups(rng.normal(size=300), g)  # values independent of KPE
    assert c.welch_p > 0.01 and abs(c.rank_biserial) < 0.3
    with pytest.raises(ValueError, match="shape"):
        compare_groups(np.zeros(10), g)


def test_ranked_indices_and_cuts_match_a_brute_force_sort():
    rng = np.random.default_rng(0)
    kpe = rng.permutation(50).astype(float) * 0.5 + 3.0
    g = kpe_groups(torch.from_numpy(kpe), cut=0.1)
    assert g.n_low == g.n_high == 5
    assert kpe[g.ranked(kpe, "low")].tolist() == sorted(kpe)[:5]
    assert kpe[g.ranked(kpe, "high")].tolist() == sorted(kpe, reverse=True)[:5]
    assert g.low_max == sorted(kpe)[4] and g.high_min == sorted(kpe)[-5]
    with pytest.raises(ValueError, match="group must be 'low' or 'high'"):
        g.ranked(kpe, "middle")
    with pytest.raises(ValueError, match="the \\(50,\\) vector"):
        g.ranked(kpe[:10], "low")
    stratified = kpe_groups(kpe, cut="thirds", strata=np.arange(50) % 2)
    with pytest.raises(ValueError, match="one cut per stratum"):
        stratified.low_max


def _class_confounded(shift_within: float, seed: int = 0):
    """KPE and score both driven by the class; ``shift_within`` adds a within-class KPE -> score effect."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(6), 30)
    kpe = labels + rng.random(labels.size)            # classes own disjoint KPE ranges
    score = 2.0 * labels + rng.normal(0, 1, labels.size) + shift_within * (kpe - labels)
    return kpe, score, labels


def test_stratified_test_ignores_a_difference_between_classes():
    kpe, score, labels = _class_confounded(0.0)
    pooled = compare_groups(score, kpe_groups(kpe))
    assert pooled.welch_p < 1e-10                      # the pooled groups differ: they are different classes
    test = stratified_permutation_test(score, kpe_groups(kpe, strata=labels), labels, n_perm=4000)
    assert test.p > 0.05 and abs(test.diff) < 0.5 and test.n_strata == 6 and test.n == 120
    assert test.ci95[0] < 0 < test.ci95[1]


def test_stratified_test_finds_a_within_class_effect():
    kpe, score, labels = _class_confounded(3.0)
    test = stratified_permutation_test(score, kpe_groups(kpe, strata=labels), labels, n_perm=4000)
    assert test.p < 0.01 and test.diff > 1.0 and test.ci95[0] > 0.5 and test.ci95[0] < test.diff < test.ci95[1]
    assert set(test.per_stratum) == set(range(6)) and all(d > 0 for d in test.per_stratum.values())


def test_stratified_test_matches_brute_force_enumeration():
    values = np.array([0.1, 0.5, 0.9, 2.0, 1.0, 1.4, 0.2, 3.0])
    strata = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    low = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    groups = KPEGroups(low=low, high=~low, fraction=0.5, cut="test", thresholds={})
    stat = lambda lo0, lo1: 0.5 * sum(values[idx][~m].mean() - values[idx][m].mean()  # noqa: E731
                                      for idx, m in ((np.arange(4), lo0), (np.arange(4, 8), lo1)))
    masks = [np.isin(np.arange(4), c) for c in itertools.combinations(range(4), 2)]
    null = np.array([stat(a, b) for a in masks for b in masks])
    observed = stat(low[:4], low[4:])
    exact = np.mean(np.abs(null) >= abs(observed) - 1e-12)
    test = stratified_permutation_test(values, groups, strata, n_perm=20000, seed=3)
    assert test.diff == pytest.approx(observed)
    assert test.p == pytest.approx(exact, abs=0.015)


def test_stratified_test_rejects_bad_input():
    kpe, score, labels = _class_confounded(0.0)
    groups = kpe_groups(kpe, strata=labels)
    with pytest.raises(ValueError, match="n_perm"):
        stratified_permutation_test(score, groups, labels, n_perm=10)
    with pytest.raises(ValueError, match="n_boot"):
        stratified_permutation_test(score, groups, labels, n_boot=5)
    with pytest.raises(ValueError, match="strata"):
        stratified_permutation_test(score, groups, labels[:-1])
