"""The KPE-vs-support table (kpe_lib.experiments.cifar_support): brute-force and geometric oracles."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from kpe_lib.experiments.cifar_support import SpaceFeatures, support_correlations


def test_queries_moving_away_from_the_data_give_rho_minus_one():
    # Beyond the reference cloud's radius, moving a query outwards along a ray increases its distance to
    # EVERY reference point (d/dr |r u - a|^2 = 2 (r - u.a) > 0 for r > |a|), so both the k-th neighbour
    # distance and the KDE density are strictly monotone in r: rank correlation exactly -1 (or +1).
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    ref = ref / ref.norm(dim=1, keepdim=True).clamp_min(1.0)  # inside the unit ball
    u = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64) / math.sqrt(6.0)
    r = torch.linspace(1.5, 6.0, 25, dtype=torch.float64)
    query = r[:, None] * u
    perm = torch.randperm(25, generator=gen)
    study = support_correlations(r[perm], [SpaceFeatures("ray", query[perm], ref)], ks=(1, 7),
                                 bandwidth_factors=(0.5, 2.0), n_boot=50)
    assert len(study.rows) == 4
    for row in study.rows:
        assert row.rho == pytest.approx(-1.0, abs=1e-12)
        assert row.ci_low == pytest.approx(-1.0, abs=1e-12) and row.ci_high == pytest.approx(-1.0, abs=1e-12)
        assert row.n == 25 and row.dim == 3 and row.n_ref == 300
    flipped = support_correlations(-r, [SpaceFeatures("ray", query, ref)], n_boot=10)
    assert flipped.rho("ray", "knn") == pytest.approx(1.0) and flipped.rho("ray", "kde") == pytest.approx(1.0)


def test_rho_matches_scipy_on_brute_force_support():
    rng = np.random.default_rng(3)
    ref, query = rng.normal(size=(200, 5)), rng.normal(size=(60, 5)) * 1.3
    kpe = rng.gamma(2.0, size=60) + np.linalg.norm(query, axis=1)
    study = support_correlations(kpe, [SpaceFeatures("gauss", torch.from_numpy(query), torch.from_numpy(ref))],
                                 ks=(4,), bandwidth_factors=(1.0,), n_boot=200, seed=1)
    d = np.linalg.norm(query[:, None, :] - ref[None, :, :], axis=2)
    r4 = np.sort(d, axis=1)[:, 3]
    want_knn = scipy.stats.spearmanr(kpe, -r4).statistic
    # Scott's isotropic bandwidth by hand: sigma^2 = mean per-coordinate variance (ddof 1), n^(-1/(d+4))
    h = math.sqrt(ref.var(0, ddof=1).mean()) * 200 ** (-1 / 9)
    kde = scipy.special.logsumexp(-d ** 2 / (2 * h * h), axis=1)
    want_kde = scipy.stats.spearmanr(kpe, kde).statistic
    assert study.rho("gauss", "knn") == pytest.approx(want_knn, abs=1e-12)
    assert study.rho("gauss", "kde") == pytest.approx(want_kde, abs=1e-12)
    row = study.row("gauss", "kde")
    assert f"h={h:.6g}" in row.rule and row.ci_low <= row.rho <= row.ci_high and row.stderr > 0
    table = study.table()
    assert list(table["estimator"]) == ["knn", "kde"] and list(table["setting"]) == ["k=4", "h=1*scott"]
    summary = study.summary()
    assert summary.index.tolist() == ["gauss"] and summary.loc["gauss", "dim"] == 5


def test_primary_setting_and_support_values():
    rng = np.random.default_rng(4)
    ref, query = torch.from_numpy(rng.normal(size=(100, 2))), torch.from_numpy(rng.normal(size=(20, 2)))
    kpe = torch.from_numpy(rng.uniform(size=20))
    study = support_correlations(kpe, [SpaceFeatures("a", query, ref), SpaceFeatures("b", query * 2, ref * 2)],
                                 ks=(3, 10), bandwidth_factors=(), n_boot=20)
    assert study.row("a", "knn").setting == "k=3"
    assert study.rho("a", "knn", "k=10") == study.row("a", "knn", "k=10").rho
    # scaling every feature by 2 keeps all distance ranks, hence rho
    assert study.rho("a", "knn") == pytest.approx(study.rho("b", "knn"), abs=1e-12)
    assert study.support("a", "knn").shape == (20,)
    with pytest.raises(ValueError, match="no rows"):
        study.rho("a", "kde")


def test_bad_inputs_raise_clear_errors():
    q, r = torch.randn(10, 3), torch.randn(30, 3)
    kpe = torch.rand(10)
    with pytest.raises(ValueError, match="match one to one"):
        support_correlations(torch.rand(9), [SpaceFeatures("s", q, r)])
    with pytest.raises(ValueError, match="dimensions differ"):
        support_correlations(kpe, [SpaceFeatures("s", q, torch.randn(30, 4))])
    with pytest.raises(ValueError, match="unique"):
        support_correlations(kpe, [SpaceFeatures("s", q, r), SpaceFeatures("s", q, r)])
    with pytest.raises(ValueError, match="at least one SpaceFeatures"):
        support_correlations(kpe, [])
    with pytest.raises(ValueError, match="ks"):
        support_correlations(kpe, [SpaceFeatures("s", q, r)], ks=(0,))
    with pytest.raises(ValueError, match="bandwidth_factors"):
        support_correlations(kpe, [SpaceFeatures("s", q, r)], bandwidth_factors=(-1.0,))
    with pytest.raises(ValueError, match="bandwidth_rule"):
        support_correlations(kpe, [SpaceFeatures("s", q, r)], bandwidth_rule="auto")
    with pytest.raises(ValueError, match="exceeds"):
        support_correlations(kpe, [SpaceFeatures("s", q, r)], ks=(31,))
    with pytest.raises(ValueError, match="distance 0"):
        support_correlations(kpe, [SpaceFeatures("s", r[:10], r)], ks=(1,), bandwidth_factors=())


def test_partial_spearman_equals_the_correlation_of_rank_residuals():
    from kpe_lib.experiments.cifar_support import partial_spearman

    rng = np.random.default_rng(5)
    c = rng.normal(size=300)
    a, b = c + 0.5 * rng.normal(size=300), c + 0.5 * rng.normal(size=300)
    ranks = [scipy.stats.rankdata(v) for v in (a, b, c)]
    design = np.stack([np.ones(300), ranks[2]], 1)
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in ranks[:2]]
    want = np.corrcoef(res[0], res[1])[0, 1]
    got = partial_spearman(a, b, c)
    assert got == pytest.approx(want, abs=1e-12)
    # a and b share only c: the raw rank correlation is large, the partial one is not
    assert scipy.stats.spearmanr(a, b).statistic > 0.6 and abs(got) < 0.15
    with pytest.raises(ValueError, match="same length"):
        partial_spearman(a, b[:10], c)


def test_rho_verdict_rules():
    from kpe_lib.experiments.cifar_support import rho_verdict

    assert rho_verdict(-0.65, -0.58, (-0.70, -0.45)) == "reproduced in magnitude"
    assert rho_verdict(-0.65, -0.30, (-0.42, -0.18)) == "reproduced in direction"
    assert rho_verdict(-0.65, -0.10, (-0.25, 0.05)) == "not reproduced"
    assert rho_verdict(-0.65, 0.40, (0.30, 0.50)) == "not reproduced"
    assert rho_verdict(0.5, 0.45, (0.30, 0.60)) == "reproduced in magnitude"
    with pytest.raises(ValueError, match="paper"):
        rho_verdict(0.0, 0.1, (0.0, 0.2))
