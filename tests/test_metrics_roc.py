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
