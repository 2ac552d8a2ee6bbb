"""kpe_lib.metrics.roc against brute-force pair counting."""
import math

import numpy as np
import pytest
import torch

from kpe_lib.metrics.roc import detector_auroc, roc_auc


def test_roc_auc_equals_pair_counting_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    y = rng.random(60) < 0.4
    pos, neg = s[y], s[~y]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])
    assert roc_auc(s, y) == pytest.approx(brute, abs=1e-12)
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([True, False, False])) == 1.0
    assert roc_auc(torch.tensor([3.0, 2.0, 1.0]), torch.tensor([False, True, True])) == 0.0
    assert math.isnan(roc_auc([1.0, 2.0], [True, True]))


def test_detector_auroc_interval():
    y = torch.arange(40) % 2 == 0
    s = torch.where(y, 1.0, 0.0) + 0.01 * torch.arange(40)
    r = detector_auroc(s, y, n_boot=200)
    assert r.auroc == 1.0 and r.n_pos == 20 and r.n_neg == 20
    assert r.ci95[0] <= r.auroc <= r.ci95[1] + 1e-12


def test_detector_auroc_perfect_reversed_and_tied_scores():
    y = np.arange(30) % 3 == 0
    perfect = detector_auroc(np.where(y, 2.0, 1.0) + 0.001 * np.arange(30), y, n_boot=300, seed=1)
    assert (perfect.auroc, perfect.ci_low, perfect.ci_high) == (1.0, 1.0, 1.0)
    assert (perfect.n_pos, perfect.n_neg, perfect.n_boot) == (10, 20, 300)
    reversed_ = detector_auroc(np.where(y, -2.0, 1.0), torch.tensor(y), n_boot=300, seed=1)
    assert (reversed_.auroc, reversed_.ci_low, reversed_.ci_high) == (0.0, 0.0, 0.0)
    tied = detector_auroc(np.full(30, 0.7), y.astype(int), n_boot=300, seed=1)
    assert (tied.auroc, tied.ci_low, tied.ci_high) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detector_auroc_interval_holds_the_estimate_and_is_seeded(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = rng.normal(size=200) + 0.8 * y  # AUROC about Phi(0.8 / sqrt 2) = 0.71
    r = detector_auroc(s, y, n_boot=500, seed=seed)
    assert r.auroc == roc_auc(s, y)
    assert r.ci_low < r.auroc < r.ci_high and r.ci95 == r.ci == (r.ci_low, r.ci_high)
    assert 0.55 < r.auroc < 0.85 and 0.02 < r.ci_high - r.ci_low < 0.3 and r.stderr > 0
    again, other = detector_auroc(s, y, n_boot=500, seed=seed), detector_auroc(s, y, n_boot=500, seed=seed + 10)
    assert again == r and other.ci != r.ci
    narrow = detector_auroc(s, y, n_boot=500, seed=seed, level=0.5)
    assert r.ci_low < narrow.ci_low < narrow.ci_high < r.ci_high
    with pytest.raises(ValueError, match="level=0.5"):
        narrow.ci95
    import dataclasses
    import json
    assert json.loads(json.dumps(dataclasses.asdict(r)))["n_boot"] == 500  # plain numbers for the results file


def test_detector_auroc_rejects_bad_input_naming_it():
    with pytest.raises(ValueError, match="scores"):
        detector_auroc([0.1, float("nan"), 0.3], [True, False, True])
    with pytest.raises(ValueError, match="positive must have the shape"):
        detector_auroc([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValueError, match="both classes"):
        detector_auroc([0.1, 0.2, 0.3], [True, True, True])
    with pytest.raises(ValueError, match="booleans"):
        detector_auroc([0.1, 0.2, 0.3], [0, 2, 1])
    with pytest.raises(ValueError, match="n_boot"):
        detector_auroc([0.1, 0.2], [True, False], n_boot=0)
