"""Tests of kpe_lib.metrics.quality with identity features, where FID and precision/recall are known exactly."""
import pytest
import torch

from kpe_lib.metrics.quality import reference_set, sample_quality

flat = lambda x: x.reshape(x.shape[0], -1)  # noqa: E731


def _images(n, seed):
    return torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_fid_is_the_squared_mean_shift_for_a_translated_set(tmp_path):
    real = _images(40, 0)
    ref = reference_set(real, {"reference_split": "toy"}, features=flat, feature_name="pixels")
    same = sample_quality(ref, real, {"solver": "euler"}, features=flat, feature_name="pixels")
    assert same.fid == pytest.approx(0.0, abs=1e-9)
    assert same.precision == 1.0 and same.recall == 1.0
    shift = torch.tensor([0.1, -0.2, 0.3, 0.05], dtype=torch.float64)
    moved = sample_quality(ref, real + shift.reshape(1, 1, 2, 2), features=flat, feature_name="pixels")
    # same covariance: only the mean term; features are stored in float32, hence the tolerance
    assert moved.fid == pytest.approx(float(shift.pow(2).sum()), rel=1e-6)
    assert same.protocol["reference_split"] == "toy" and same.protocol["n_fake"] == 40
    assert same.protocol["solver"] == "euler" and same.protocol["feature_network"] == "pixels"


def test_far_away_set_has_zero_precision_and_recall():
    real = _images(30, 1)
    ref = reference_set(real, features=flat, feature_name="pixels")
    q = sample_quality(ref, real + 100.0, features=flat, feature_name="pixels")
    assert q.precision == 0.0 and q.recall == 0.0 and q.n_real == 30 and q.k == 3


def test_reference_features_are_cached_by_content(tmp_path):
    calls = []

    def counting(x):
        calls.append(x.shape[0])
        return flat(x)

    real = _images(12, 2)
    a = reference_set(real, features=counting, feature_name="pixels", cache_dir=tmp_path)
    b = reference_set(real, features=counting, feature_name="pixels", cache_dir=tmp_path)
    c = reference_set(_images(12, 3), features=counting, feature_name="pixels", cache_dir=tmp_path)
    assert calls == [12, 12] and not a.from_cache and b.from_cache and not c.from_cache
    assert torch.equal(a.features, b.features)
    assert len(list(tmp_path.iterdir())) == 2  # two cache files (two image sets), no temporary file left


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="N >= 4"):
        reference_set(torch.rand(3, 1, 2, 2), features=flat, feature_name="pixels")
    with pytest.raises(ValueError, match="feature_name"):
        reference_set(torch.rand(5, 1, 2, 2), features=flat)
    ref = reference_set(_images(10, 4), features=flat, feature_name="pixels")
    with pytest.raises(ValueError, match="dimension"):
        sample_quality(ref, torch.rand(10, 1, 3, 3), features=flat, feature_name="pixels")


def test_kid_and_features_come_with_every_quality_result():
    real = _images(40, 0)
    ref = reference_set(real, features=flat, feature_name="pixels")
    same = sample_quality(ref, real, features=flat, feature_name="pixels")
    far = sample_quality(ref, real + 3.0, features=flat, feature_name="pixels")
    assert same.features.shape == (40, 4) and torch.equal(same.features, flat(real).float())
    assert abs(same.kid.value) < 0.05                              # a set against itself: KID ~ 0
    assert far.kid.value > 1.0 and far.kid.ci[0] > 0.0
    assert "kid" in far.protocol
