"""Nearest neighbours, gap ratio d1/d2 and F_mem (Mathematics §5) against hand-built sets and brute force."""
import math

import numpy as np
import pytest
import torch

from kpe_lib.metrics import gap_ratio, memorization_fraction, nearest_neighbors
from kpe_lib.metrics.memorization import to_space


def brute_knn(q: np.ndarray, r: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((q[:, None, :] - r[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, 1), idx


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_neighbors_matches_brute_force_and_chunking(dtype):
    g = torch.Generator().manual_seed(0)
    q, r = torch.randn(37, 6, generator=g), torch.randn(53, 6, generator=g)
    want_d, want_i = brute_knn(q.double().numpy(), r.double().numpy(), 4)
    for qc, rc in [(1000, 1000), (5, 7), (1, 1)]:
        got = nearest_neighbors(q, r, k=4, dtype=dtype, query_chunk=qc, ref_chunk=rc)
        assert torch.equal(got.indices, torch.from_numpy(want_i))
        np.testing.assert_allclose(got.distances.numpy(), want_d, rtol=1e-12, atol=1e-12)


def test_nearest_neighbors_exact_for_near_copies_far_from_origin():
    # norms ~ 1e4 * sqrt(D): the plain norm trick would lose d1 = 1e-3 entirely in float32 and partly in float64
    g = torch.Generator().manual_seed(1)
    r = 1e4 + torch.randn(200, 64, generator=g, dtype=torch.float64)
    q = r[:10] + 1e-3 * torch.nn.functional.normalize(torch.randn(10, 64, generator=g, dtype=torch.float64), dim=1)
    for dtype in (torch.float64, torch.float32):
        got = nearest_neighbors(q, r, k=1, dtype=dtype)
        assert torch.equal(got.indices[:, 0], torch.arange(10))
        np.testing.assert_allclose(got.distances[:, 0].numpy(), 1e-3, rtol=1e-6)


def test_nearest_neighbors_rejects_bad_input():
    with pytest.raises(ValueError, match="k must be <="):
        nearest_neighbors(torch.zeros(2, 3), torch.zeros(2, 3), k=3)
    with pytest.raises(ValueError, match="same number of features"):
        nearest_neighbors(torch.zeros(2, 3), torch.zeros(4, 2), k=1)
    with pytest.raises(ValueError, match="dtype"):
        nearest_neighbors(torch.zeros(2, 3), torch.zeros(4, 3), dtype=torch.float16)
    with pytest.raises(ValueError, match="NaN"):
        nearest_neighbors(torch.full((2, 3), float("nan")), torch.zeros(4, 3))


def hand_built() -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Training points on a line plus a Pythagorean pair; each sample's d1/d2 known in closed form."""
    train = torch.tensor([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0], [3.0, -4.0]])
    gen = torch.tensor([
        [1.0, 0.0],     # d1 = 1 (to 0), d2 = sqrt(4 + 16) = sqrt(20) (to (3, -4))
        [20.0, 0.0],    # d1 = d2 = 10: ratio 1
        [27.5, 0.0],    # d1 = 2.5 (to 30), d2 = 17.5: 1/7
        [3.0, 4.0],     # d1 = 5 (to 0), d2 = 8 (to (3, -4))
        [17.5, 0.0],    # d1 = 7.5 (to 10), d2 = 12.5 (to 30): 0.6
        [32.5, 0.0],    # d1 = 2.5, d2 = 22.5: 1/9
    ])
    ratios = [1 / math.sqrt(20), 1.0, 1 / 7, 5 / 8, 0.6, 1 / 9]
    return gen, train, ratios


def test_gap_ratio_hand_built():
    gen, train, ratios = hand_built()
    np.testing.assert_allclose(gap_ratio(gen, train).numpy(), ratios, rtol=1e-14)


def test_memorization_fraction_hand_built_and_threshold_is_strict():
    gen, train, ratios = hand_built()
    res = memorization_fraction(gen, train, n_boot=200)
    want = [r < 1 / 3 for r in ratios]  # samples 0, 2, 5
    assert res.memorized.tolist() == want
    assert res.value == pytest.approx(3 / 6)
    idx = res.nearest_index.tolist()
    assert [idx[i] for i in (0, 2, 3, 4, 5)] == [0, 2, 0, 1, 2] and idx[1] in (1, 2)  # sample 1 is a tie
    np.testing.assert_allclose(res.nearest_distance.numpy()[[0, 2, 3]], [1.0, 2.5, 5.0])
    # a sample exactly at ratio 1/3 (d1 = 2.5, d2 = 7.5) is not memorised: the rule is d1/d2 < 1/3
    edge = memorization_fraction(torch.tensor([[2.5, 10.0]]), torch.tensor([[0.0, 10.0], [10.0, 10.0]]), n_boot=10)
    assert edge.ratios.item() == pytest.approx(1 / 3, abs=1e-15) and edge.value == 0.0
    # threshold 0.7 memorises sample 3 (5/8) and 4 (0.6) too
    assert memorization_fraction(gen, train, threshold=0.7, n_boot=10).value == pytest.approx(5 / 6)


def test_duplicated_training_item_copy_counts_as_memorised():
    train = torch.tensor([[1.0, 1.0], [1.0, 1.0], [5.0, 5.0]])
    res = memorization_fraction(torch.tensor([[1.0, 1.0]]), train, n_boot=10)
    assert res.ratios.item() == 0.0 and bool(res.memorized.item())


def test_memorization_bootstrap_matches_binomial_stderr():
    # 400 samples, 100 of them exact copies: F_mem = 0.25, binomial stderr sqrt(p (1 - p) / n) = 0.02165
    g = torch.Generator().manual_seed(2)
    train = torch.randn(300, 8, generator=g) * 5
    gen = torch.cat([train[:100].clone(), torch.randn(300, 8, generator=g) * 5])
    res = memorization_fraction(gen, train, n_boot=1000, seed=3)
    assert res.value == pytest.approx(0.25, abs=0.02)  # random samples are essentially never within 1/3
    p = res.value
    assert res.stderr == pytest.approx(math.sqrt(p * (1 - p) / 400), rel=0.12)
    lo, hi = res.ci95
    assert lo < res.value < hi and hi - lo == pytest.approx(2 * 1.96 * res.stderr, rel=0.2)
    again = memorization_fraction(gen, train, n_boot=1000, seed=3)
    assert again.ci95 == res.ci95 and again.stderr == res.stderr


def test_chunked_equals_unchunked_on_images():
    g = torch.Generator().manual_seed(4)
    train = torch.rand(40, 3, 4, 4, generator=g)
    gen = torch.cat([train[:5] + 0.01 * torch.randn(5, 3, 4, 4, generator=g), torch.rand(20, 3, 4, 4, generator=g)])
    a = gap_ratio(gen, train, chunk_size=3)
    b = gap_ratio(gen, train, chunk_size=4096)
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    assert bool((a[:5] < 1 / 3).all())


def test_gray_centered_space_uses_bt601_luma_and_centring_is_distance_neutral():
    g = torch.Generator().manual_seed(5)
    train = torch.rand(30, 3, 4, 4, generator=g)
    gen = torch.rand(10, 3, 4, 4, generator=g)
    gq, gt = to_space(gen, train, "gray_centered")
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
    gray_t = (train.double() * w).sum(1).reshape(30, -1)
    np.testing.assert_allclose(gt.numpy(), (gray_t - gray_t.mean(0)).numpy(), atol=1e-12)
    gray_g = (gen.double() * w).sum(1).reshape(10, -1)
    want = gap_ratio(gray_g, gray_t)  # uncentred grayscale: same distances
    np.testing.assert_allclose(gap_ratio(gen, train, space="gray_centered").numpy(), want.numpy(), rtol=1e-12)
    # single-channel images are used as they are
    np.testing.assert_allclose(gap_ratio(gen[:, :1], train[:, :1], space="gray_centered").numpy(),
                               gap_ratio(gen[:, :1], train[:, :1]).numpy(), rtol=1e-12)


def test_memorization_rejects_bad_arguments():
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="threshold"):
        memorization_fraction(x, x, threshold=0.0)
    with pytest.raises(ValueError, match="space"):
        gap_ratio(x, x, space="gray")
    with pytest.raises(ValueError, match="same item shape"):
        gap_ratio(torch.zeros(3, 2), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="at least 2"):
        gap_ratio(x, torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gap_ratio(x, x, space="gray_centered")
