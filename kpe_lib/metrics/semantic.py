"""Semantic strength of generated samples (SPEC 5).

The paper compares low- and high-KPE groups by CLIP score (``100 * cos(image, text)`` with the prompt
"a photo of a {class}") and CLIP margin (true-class score minus the best other class score). Where CLIP is not
available, a classifier trained on the same data gives the analogue: score ``log p(y | x)``, margin
``logit_y - max_{k != y} logit_k``. Each result names its backend, so a table can say which one it shows.

This module holds the scoring math; the CLIP encoders themselves (local weights only, nothing downloaded)
are ``kpe_lib.models.paper.clip.load_clip_encoders`` behind ``ClipSemantics``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

DEFAULT_PROMPT = "a photo of a {}"


@dataclass
class SemanticResult:
    """Per-sample semantic strength.

    Attributes:
        score: (N,) classifier: log p(y | x); CLIP: 100 * cos(image, text of the true class).
        margin: (N,) true-class score minus the best other class score (same units as ``score`` for CLIP,
            logits for the classifier).
        backend: "classifier" or "clip:<model path>".
    """

    score: torch.Tensor
    margin: torch.Tensor
    backend: str


def _check_scores(scores: torch.Tensor, labels: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[1] < 2 or scores.shape[0] < 1:
        raise ValueError(f"{name} must be a tensor of shape (N, K) with K >= 2 classes")
    if not isinstance(labels, torch.Tensor) or labels.shape != (scores.shape[0],) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor of shape ({scores.shape[0]},)")
    if bool((labels < 0).any()) or bool((labels >= scores.shape[1]).any()):
        raise ValueError(f"labels must lie in [0, {scores.shape[1] - 1}]")
    return scores.detach().cpu().to(torch.float64), labels.detach().cpu().long()


def _true_and_margin(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    true = scores.gather(1, labels[:, None]).squeeze(1)
    others = scores.scatter(1, labels[:, None], float("-inf"))
    return true, true - others.max(1).values


def semantic_scores(logits: torch.Tensor, labels: torch.Tensor) -> SemanticResult:
    """Classifier semantic score and margin (SPEC 5).

    Args:
        logits: (N, K) classifier logits of the generated samples.
        labels: (N,) intended class of each sample (int).

    Returns:
        SemanticResult(score = log_softmax(logits)[y] (N,), margin = logit_y - max_{k != y} logit_k (N,),
        backend="classifier"), float64.

    Example:
        >>> r = semantic_scores(torch.tensor([[2.0, 0.0, 1.0]]), torch.tensor([0]))
        >>> r.margin
        tensor([1.], dtype=torch.float64)
    """
    z, y = _check_scores(logits, labels, "logits")
    score = torch.log_softmax(z, 1).gather(1, y[:, None]).squeeze(1)
    return SemanticResult(score=score, margin=_true_and_margin(z, y)[1], backend="classifier")


def clip_scores_from_embeddings(image_embeds: torch.Tensor, text_embeds: torch.Tensor, labels: torch.Tensor,
                                backend: str = "clip") -> SemanticResult:
    """CLIP score and margin from image and class-prompt embeddings (SPEC 5).

    Args:
        image_embeds: (N, E) image embeddings (any scale; they are L2-normalised here).
        text_embeds: (K, E) embeddings of the K class prompts.
        labels: (N,) true class indices.
        backend: name recorded in the result.

    Returns:
        SemanticResult(score = 100 cos(image, text_y), margin = score - max_{k != y} 100 cos(image, text_k)).
    """
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape[1] != text_embeds.shape[1]:
        raise ValueError(f"image_embeds (N, E) and text_embeds (K, E) must share E, got {tuple(image_embeds.shape)} "
                         f"and {tuple(text_embeds.shape)}")
    sims = 100.0 * F.normalize(image_embeds.double(), dim=1) @ F.normalize(text_embeds.double(), dim=1).T
    sims, y = _check_scores(sims, labels, "image/text similarities")
    score, margin = _true_and_margin(sims, y)
    return SemanticResult(score=score, margin=margin, backend=backend)
