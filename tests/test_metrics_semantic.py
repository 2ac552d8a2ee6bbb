"""Semantic strength (Mathematics §5): classifier score/margin and CLIP score/margin by hand."""
import math

import pytest
import torch

from kpe_lib.metrics import clip_scores_from_embeddings, semantic_scores


def test_classifier_score_and_margin_by_hand():
    logits = torch.tensor([[2.0, 0.0, 1.0],
                           [0.0, 3.0, 3.0],
                           [-1.0, 5.0, 0.5]])
    labels = torch.tensor([0, 2, 0])
    res = semantic_scores(logits, labels)
    z0 = math.log(math.exp(2) + 1 + math.exp(1))
    z1 = math.log(1 + 2 * math.exp(3))
    z2 = math.log(math.exp(-1) + math.exp(5) + math.exp(0.5))
    torch.testing.assert_close(res.score, torch.tensor([2 - z0, 3 - z1, -1 - z2], dtype=torch.float64))
    torch.testing.assert_close(res.margin, torch.tensor([1.0, 0.0, -6.0], dtype=torch.float64))
    assert res.backend == "classifier"
    # log p(y | x) is invariant to adding a constant to all logits, and so is the margin
    shifted = semantic_scores(logits + 7.0, labels)
    torch.testing.assert_close(shifted.score, res.score)
    torch.testing.assert_close(shifted.margin, res.margin)


def test_classifier_scores_reject_bad_input():
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        semantic_scores(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must lie"):
        semantic_scores(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer tensor"):
        semantic_scores(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_clip_score_and_margin_from_embeddings_by_hand():
    # unit text embeddings along the axes; image 0 at 60 degrees from class 0 and 30 degrees from class 1
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]) * 3.0  # scale is irrelevant
    image = torch.tensor([[math.cos(math.pi / 3), math.sin(math.pi / 3)], [2.0, 0.0]])
    res = clip_scores_from_embeddings(image, text, torch.tensor([0, 0]))
    torch.testing.assert_close(res.score, torch.tensor([50.0, 100.0], dtype=torch.float64))
    torch.testing.assert_close(res.margin, torch.tensor([50.0 - 100 * math.sqrt(3) / 2, 100.0], dtype=torch.float64))
    assert res.backend == "clip"
    with pytest.raises(ValueError, match="share E"):
        clip_scores_from_embeddings(torch.zeros(2, 3), torch.zeros(3, 2), torch.tensor([0, 1]))
