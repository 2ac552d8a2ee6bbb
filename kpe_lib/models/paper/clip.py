"""CLIP score and margin of generated images, from LOCAL weights (Mathematics §5, the paper's semantic strength).

score  = 100 * cos(image embedding, text embedding of "a photo of a {true class}")
margin = score - max over the other classes of the same score

The scoring (``kpe_lib.metrics.semantic.ClipSemantics``) lives with the metrics; this module supplies the
two encoders behind one small interface (:class:`ClipEncoders`) so that the real CLIP and a tiny stand-in
run through the same scorer:

- :func:`load_clip_encoders`: a local ``transformers`` folder (``save_pretrained`` layout, or a hub snapshot
  folder such as ``openai/clip-vit-large-patch14``) or a local ``open_clip`` checkpoint file (with its
  architecture name, e.g. ``ViT-B-32``). Both packages are optional (the ``paper`` extra); nothing is
  downloaded.
- :class:`TinyClipEncoders`: a randomly initialised stand-in with the same interface (a small conv image
  encoder and a byte-level bag-of-embeddings text encoder). Its scores carry no meaning: it exists so the
  smoke-scale wiring check and the tests run without weights.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn


__all__ = ["ClipEncoders", "TinyClipEncoders", "load_clip_encoders", "clip_preprocess", "as_embedding",
           "CLIP_MEAN", "CLIP_STD"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
"""CLIP's published input normalisation (OpenAI and OpenCLIP ViTs alike)."""


class ClipEncoders(Protocol):
    """What :class:`ClipSemantics` needs from a CLIP model.

    Attributes:
        name: a label recorded in results ("clip:<name>").
        image_size: the square input side the image encoder expects.
    """

    name: str
    image_size: int

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> (B, E) embeddings (any scale)."""

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """K prompts -> (K, E) embeddings (any scale)."""


def clip_preprocess(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images in [0, 1] (B, 1 or 3, H, W) -> CLIP input: short side resized to ``size`` (bicubic, antialiased),
    centre crop ``size`` x ``size``, normalised with ``CLIP_MEAN`` / ``CLIP_STD``."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape (B, 1 or 3, H, W); got {tuple(images.shape)}")
    x = images.float().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    h, w = x.shape[-2:]
    s = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                      align_corners=False, antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def as_embedding(out: Any) -> torch.Tensor:
    """transformers may return a model-output object instead of a tensor; take its pooled embedding."""
    if isinstance(out, torch.Tensor):
        return out
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"a CLIP encoder returned {type(out).__name__}, not a tensor of embeddings")


class TinyClipEncoders(nn.Module):
    """A randomly initialised CLIP stand-in with the :class:`ClipEncoders` interface (for tests and smoke runs).

    Image encoder: 4x4 stride-4 convolution -> SiLU -> 2 x 2 average pool -> linear to ``embed_dim``.
    Text encoder: the prompt's UTF-8 bytes -> mean of a 256-row embedding table -> linear. Weights come from
    ``seed`` (the global RNG is left alone). Its scores mean nothing.
    """

    def __init__(self, embed_dim: int = 16, image_size: int = 32, seed: int = 0) -> None:
        super().__init__()
        if embed_dim < 1 or image_size < 4:
            raise ValueError(f"embed_dim must be >= 1 and image_size >= 4; got {embed_dim}, {image_size}")
        self.name, self.image_size = "tiny-random-stand-in", image_size
        with torch.random.fork_rng(devices=[]):  # the layers' default init draws from the global RNG
            self.conv = nn.Conv2d(3, 8, 4, stride=4)
            self.image_proj = nn.Linear(8 * 4, embed_dim)
            self.token_table = nn.EmbeddingBag(256, embed_dim, mode="mean")
            self.text_proj = nn.Linear(embed_dim, embed_dim)
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.eval()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        h = F.adaptive_avg_pool2d(F.silu(self.conv(pixels)), 2)
        return self.image_proj(h.flatten(1))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        device = self.token_table.weight.device
        ids = [torch.tensor(list(t.encode("utf-8")) or [0], dtype=torch.long) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.text_proj(self.token_table(torch.cat(ids).to(device), offsets.to(device)))


class _TransformersClip:
    def __init__(self, folder: Path, device: torch.device) -> None:
        from transformers import CLIPModel, CLIPTokenizer
        self.model = CLIPModel.from_pretrained(str(folder), local_files_only=True).to(device).eval()
        self.tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.name, self.device = folder.name, device
        self.image_size = int(self.model.config.vision_config.image_size)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return as_embedding(self.model.get_image_features(pixel_values=pixels))

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        return as_embedding(self.model.get_text_features(**tokens))


class _OpenClip:
    def __init__(self, file: Path, arch: str, device: torch.device) -> None:
        import open_clip
        self.model, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(file), device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.name, self.device = f"{arch}:{file.name}", device
        size = getattr(self.model.visual, "image_size", 224)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(self.device))


def _installed(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def load_clip_encoders(path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu"
                       ) -> ClipEncoders:
    """Real CLIP encoders from local files only.

    Args:
        path: a folder loadable by ``transformers.CLIPModel.from_pretrained`` (``config.json`` + weights +
            tokenizer files), or an ``open_clip`` checkpoint file (``.pt`` / ``.bin`` / ``.safetensors``).
        arch: the open_clip architecture name of a checkpoint file (e.g. "ViT-B-32", "ViT-L-14").
        device: where the model runs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a checkpoint file without ``arch``.
        ImportError: the package that reads this kind of path is not installed (names it).
    """
    p = Path(path)
    dev = torch.device(device)
    if not p.exists():
        raise FileNotFoundError(f"CLIP weights not found at {str(p)!r}: pass a local transformers CLIP folder or an "
                                "open_clip checkpoint file (nothing is downloaded)")
    if p.is_dir():
        if not _installed("transformers"):
            raise ImportError(f"loading the CLIP folder {p} needs the 'transformers' package (the 'paper' extra: "
                              "pip install transformers), which is not installed")
        return _TransformersClip(p, dev)
    if arch is None:
        raise ValueError(f"arch (the open_clip architecture, e.g. 'ViT-B-32') is required for the checkpoint file {p}")
    if not _installed("open_clip"):
        raise ImportError(f"loading the CLIP checkpoint file {p} needs the 'open_clip_torch' package (the 'paper' "
                          "extra: pip install open_clip_torch), which is not installed")
    return _OpenClip(p, arch, dev)
