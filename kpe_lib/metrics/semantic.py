"""Semantic strength of generated samples (SPEC 5).

The paper compares low- and high-KPE groups by CLIP score (``100 * cos(image, text)`` with the prompt
"a photo of a {class}") and CLIP margin (true-class score minus the best other class score). Where CLIP is not
available, a classifier trained on the same data gives the analogue: score ``log p(y | x)``, margin
``logit_y - max_{k != y} logit_k``. Each result names its backend, so a table can say which one it shows.

The CLIP backend loads weights from a LOCAL path only (open_clip or transformers, whichever is installed);
nothing is downloaded.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from kpe_lib.metrics._checks import check_images

DEFAULT_PROMPT = "a photo of a {}"
# CLIP's published image normalisation (same for all OpenAI CLIP checkpoints)
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


class ClipScorer:
    """CLIP score and margin of images against "a photo of a {class}" prompts, from LOCAL weights only.

    Backends, tried in this order: transformers (``path`` is a folder saved with ``save_pretrained``, loaded
    with ``local_files_only=True``); open_clip (``path`` is a checkpoint file, ``arch`` names its model, e.g.
    "ViT-B-32"). Images are resized (bicubic) so the short side is ``image_size``, centre-cropped and normalised
    with CLIP's mean/std.

    Args:
        path: local folder (transformers) or checkpoint file (open_clip).
        class_names: the K class names.
        prompt: template with one ``{}``.
        arch: open_clip architecture name (open_clip backend only).
        image_size: CLIP input resolution.
        device: where to run the model.

    Raises:
        ImportError: neither transformers nor open_clip is installed.
        FileNotFoundError: ``path`` does not exist (nothing is downloaded).
    """

    def __init__(self, path: str | os.PathLike, class_names: Sequence[str], prompt: str = DEFAULT_PROMPT,
                 arch: str | None = None, image_size: int = 224, device: str = "cpu") -> None:
        if not Path(path).exists():
            raise FileNotFoundError(f"CLIP weights not found at {path}; the CLIP backend loads local files only")
        if len(class_names) < 2 or "{}" not in prompt:
            raise ValueError("class_names needs >= 2 names and prompt must contain '{}'")
        self.path, self.device, self.image_size = str(path), device, image_size
        texts = [prompt.format(c) for c in class_names]
        with torch.no_grad():
            if Path(path).is_dir() and _has("transformers"):
                from transformers import CLIPModel, CLIPTokenizer
                self.model = CLIPModel.from_pretrained(self.path, local_files_only=True).to(device).eval()
                tok = CLIPTokenizer.from_pretrained(self.path, local_files_only=True)
                self._encode_image = lambda x: self.model.get_image_features(pixel_values=x)
                tokens = tok(texts, padding=True, return_tensors="pt").to(device)
                self.text_embeds = self.model.get_text_features(**tokens)
            elif _has("open_clip"):
                import open_clip
                if arch is None:
                    raise ValueError("arch (e.g. 'ViT-B-32') is required with the open_clip backend")
                self.model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=self.path, device=device)
                self.model.eval()
                self._encode_image = self.model.encode_image
                self.text_embeds = self.model.encode_text(open_clip.get_tokenizer(arch)(texts).to(device))
            else:
                kind, pkg = ("folder", "transformers") if Path(path).is_dir() else ("file", "open_clip_torch")
                raise ImportError(f"The CLIP backend needs '{pkg}' to load the local {kind} {path} and it is not "
                                  "installed (transformers loads save_pretrained folders, open_clip_torch checkpoint "
                                  "files). Without CLIP use semantic_scores(classifier_logits, labels), the "
                                  "classifier analogue of SPEC 5.")

    def _preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images).float().clamp(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        s = self.image_size / min(h, w)
        x = F.interpolate(x, size=(max(self.image_size, round(h * s)), max(self.image_size, round(w * s))),
                          mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (x.shape[-2] - self.image_size) // 2, (x.shape[-1] - self.image_size) // 2
        x = x[..., top:top + self.image_size, left:left + self.image_size]
        mean, std = torch.tensor(_CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(_CLIP_STD).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 64) -> SemanticResult:
        """CLIP score/margin of (N, C, H, W) images in [0, 1] with true classes ``labels`` (N,)."""
        with torch.no_grad():
            emb = torch.cat([self._encode_image(self._preprocess(images[s:s + batch_size]).to(self.device)).cpu()
                             for s in range(0, images.shape[0], batch_size)])
        return clip_scores_from_embeddings(emb, self.text_embeds.cpu(), labels, backend=f"clip:{self.path}")


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None
