"""Semantic strength of generated samples (Mathematics §5).

The paper compares low- and high-KPE groups by CLIP score (``100 * cos(image, text)`` with the prompt
"a photo of a {class}") and CLIP margin (true-class score minus the best other class score). Where CLIP is not
available, a classifier trained on the same data gives the analogue: score ``log p(y | x)``, margin
``logit_y - max_{k != y} logit_k``. Each result names its backend, so a table can say which one it shows.

This module holds the scoring math and :class:`ClipSemantics`, the CLIP scorer; the CLIP encoders
themselves (local weights only, nothing downloaded) come from ``kpe_lib.models.paper.clip``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from kpe_lib.models.paper.clip import ClipEncoders, as_embedding, clip_preprocess

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
    """Classifier semantic score and margin (Mathematics §5).

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
    """CLIP score and margin from image and class-prompt embeddings (Mathematics §5).

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


class ClipSemantics:
    """CLIP score and margin of images against "a photo of a {class}" prompts: ``(images, labels) ->
    SemanticResult`` (Mathematics §5).

    Args:
        encoders: any :class:`ClipEncoders` (real CLIP from :func:`load_clip_encoders` or the tiny stand-in).
        class_names: the K class names (K >= 2).
        prompt: template with one ``{}``.
        batch_size: images per encoder call.
        device: where the encoders run (images are moved there).

    Example:
        >>> from kpe_lib.models.paper.clip import TinyClipEncoders
        >>> scorer = ClipSemantics(TinyClipEncoders(seed=0), ["cat", "dog"])
        >>> scorer(torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 0])).score.shape
        torch.Size([3])
    """

    def __init__(self, encoders: ClipEncoders, class_names: Sequence[str], prompt: str = DEFAULT_PROMPT,
                 batch_size: int = 64, device: str | torch.device = "cpu") -> None:
        if len(class_names) < 2:
            raise ValueError(f"class_names needs at least 2 names; got {len(class_names)}")
        if prompt.count("{}") != 1:
            raise ValueError(f"prompt must contain exactly one '{{}}'; got {prompt!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.encoders, self.class_names, self.prompt = encoders, list(class_names), prompt
        self.batch_size, self.device = batch_size, torch.device(device)
        self.prompts = [prompt.format(c) for c in self.class_names]
        with torch.no_grad():
            self.text_embeds = as_embedding(encoders.encode_text(self.prompts)).float().cpu()

    @property
    def backend(self) -> str:
        return f"clip:{self.encoders.name}"

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) images in [0, 1] -> (N, E) image embeddings (CPU, float32)."""
        size = int(self.encoders.image_size)
        return torch.cat([
            as_embedding(self.encoders.encode_image(clip_preprocess(images[s:s + self.batch_size].to(self.device),
                                                                  size))).float().cpu()
            for s in range(0, images.shape[0], self.batch_size)])

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> SemanticResult:
        """Score ``images`` (N, C, H, W) in [0, 1] whose intended classes are ``labels`` (N,)."""
        labels = torch.as_tensor(labels).long().cpu()
        return clip_scores_from_embeddings(self.image_embeds(images), self.text_embeds, labels, backend=self.backend)
