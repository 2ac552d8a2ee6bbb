"""The paper-scale backend of the semantics chapter: SiT-XL/2 + Stable Diffusion VAE decoder + a CLIP scorer.

The paper measures KPE and CLIP semantics on a class-conditional ImageNet-256 latent flow model sampled
with classifier-free guidance 1.5. This module wires the three networks of :mod:`kpe_lib.models.paper`
(where to get their weights is said there) and :class:`kpe_lib.metrics.semantic.ClipSemantics` into one
:class:`PaperPipeline`, whose fields are those of :class:`kpe_lib.experiments.semantics_guidance.SemanticBackend`
(model, guide, sample_shape, num_classes, class_names, to_images, semantics, ...), so the chapter drives
it exactly as the CPU backend.

``tiny_paper_pipeline(seed)`` builds randomly initialised tiny configurations of the same three
architectures (same parameter names, guidance wiring, decoding and scoring; a random CLIP stand-in) so the
smoke scale and CI exercise this path without any download. Its numbers mean nothing.

Example:
    >>> from kpe_lib.models.guidance import class_balanced_noise, sample_guided
    >>> pipe = tiny_paper_pipeline(seed=0)
    >>> noise = class_balanced_noise(4, pipe.sample_shape, pipe.num_classes, seed=1)
    >>> run = sample_guided(pipe.model, noise.x0, noise.labels, scale=1.5, n_steps=3, guide=pipe.guide,
    ...                     progress=False)
    >>> pipe.to_images(run.x).shape, pipe.semantics(pipe.to_images(run.x), noise.labels).score.shape
    (torch.Size([4, 3, 32, 32]), torch.Size([4]))
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from kpe_lib.metrics.semantic import ClipSemantics, SemanticResult
from kpe_lib.models.paper import imagenet_class_names
from kpe_lib.models.paper.clip import ClipEncoders, TinyClipEncoders, load_clip_encoders
from kpe_lib.models.paper.sit import SIT_CONFIGS, SiT, SiTConfig
from kpe_lib.models.paper.sit_velocity import SiTVelocity, load_sit
from kpe_lib.models.paper.vae import VAEDecoder, load_vae_decoder

__all__ = ["PaperPipeline", "load_paper_pipeline", "tiny_paper_pipeline", "TINY_CLASS_NAMES"]

TINY_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""Class names of the tiny pipeline (the CIFAR-10 classes, for prompts that read naturally)."""


@dataclass
class PaperPipeline:
    """A class-conditional latent generator, its decoder and a CLIP scorer, ready for the semantics chapter.

    Attributes:
        name: e.g. "sit-xl-2" or "sit-tiny".
        model: the :class:`SiT` network (eval mode).
        vae: the :class:`VAEDecoder` (eval mode).
        semantics: ``(images (N, 3, H, W) in [0, 1], labels (N,)) -> SemanticResult`` (CLIP score / margin).
        class_names: the K class names used in the prompts.
        guide: ``guide(model, w) -> v(x, t, y=labels)``, the guided velocity in the project's convention
            (a partial of :class:`SiTVelocity` carrying ``cfg_channels`` and ``time_convention``).
        sample_shape: one latent, (4, 32, 32) for SiT-XL/2.
        num_classes: K (label K is the null class).
        score_name, margin_name: what the two semantic numbers are.
        protocol: the settings, for result files.
        decode_batch: latents per VAE forward in :meth:`to_images`.
    """

    name: str
    model: SiT
    vae: VAEDecoder
    semantics: Callable[[torch.Tensor, torch.Tensor], SemanticResult]
    class_names: list[str]
    guide: Callable[[Any, float], nn.Module]
    sample_shape: tuple[int, ...]
    num_classes: int
    score_name: str = "CLIP score (100 cos)"
    margin_name: str = "CLIP margin"
    protocol: dict[str, Any] = field(default_factory=dict)
    decode_batch: int = 16

    def velocity(self, guidance_scale: float) -> nn.Module:
        """The guided velocity ``v_w(x, t, y=labels)`` for weight ``guidance_scale``."""
        return self.guide(self.model, guidance_scale)

    def to_images(self, latents: torch.Tensor) -> torch.Tensor:
        """Generated latents (B, *sample_shape) -> images (B, 3, H, W) in [0, 1] through the VAE decoder."""
        return self.vae.decode(latents, batch_size=self.decode_batch)


def _class_names(source: str | os.PathLike | Sequence[str] | None, num_classes: int) -> list[str]:
    if source is None and num_classes == 1000:
        return imagenet_class_names(None)
    if source is None:
        raise ValueError(f"class_names is required for a {num_classes}-class model (a list or a text file)")
    if num_classes == 1000:
        return imagenet_class_names(source)
    names = ([ln.strip() for ln in Path(source).read_text(encoding="utf-8").splitlines() if ln.strip()]
             if isinstance(source, (str, os.PathLike)) else [str(n) for n in source])
    if len(names) != num_classes:
        raise ValueError(f"class_names must hold the model's {num_classes} classes; got {len(names)}")
    return names


def load_paper_pipeline(sit_ckpt: str | os.PathLike, vae_dir: str | os.PathLike,
                        clip_name_or_path: str | os.PathLike | ClipEncoders, device: str | torch.device = "cpu", *,
                        clip_arch: str | None = None, class_names: str | os.PathLike | Sequence[str] | None = None,
                        sit_config: SiTConfig | str = "SiT-XL/2", cfg_channels: int | None = None,
                        time_convention: str = "sit", bf16: bool = False, decode_batch: int = 16) -> PaperPipeline:
    """Load the paper-scale pipeline from local files (module docstring: where to get them).

    Args:
        sit_ckpt: ``SiT-XL-2-256x256.pt`` (or a training checkpoint with "ema"/"model").
        vae_dir: local ``stabilityai/sd-vae-ft-ema`` folder (or its weight file).
        clip_name_or_path: a local transformers CLIP folder, an open_clip checkpoint file, or an already built
            :class:`~kpe_lib.models.paper.clip.ClipEncoders` object.
        device: where the three networks run.
        clip_arch: open_clip architecture name when ``clip_name_or_path`` is a checkpoint file.
        class_names: the model's class names in index order (a list or a text file, one per line); None for
            a 1000-class model takes open_clip's ImageNet names (:func:`imagenet_class_names`).
        sit_config: the SiT architecture of ``sit_ckpt``.
        cfg_channels: None guides all latent channels (standard CFG); 3 reproduces the official sample.py.
        time_convention: "sit" for the released weights (see ``kpe_lib.models.paper.sit``).
        bf16: run SiT under bfloat16 autocast (GPU; states and KPE stay float32 / float64).
        decode_batch: latents per VAE forward.

    Raises:
        FileNotFoundError: a missing file or folder (all paths are checked before anything loads).
        ValueError / ImportError: a checkpoint that does not match, or a missing optional package.
    """
    clip_is_path = clip_name_or_path is None or isinstance(clip_name_or_path, (str, os.PathLike))
    paths = [("sit_ckpt", sit_ckpt), ("vae_dir", vae_dir)] + ([("clip_name_or_path", clip_name_or_path)]
                                                               if clip_is_path else [])
    missing = [f"{what}={None if p is None else str(p)!r}" for what, p in paths if p is None or not Path(p).exists()]
    if missing:
        raise FileNotFoundError("paper-scale weights not found: " + ", ".join(missing) + ". Download SiT-XL-2-256x256"
                                ".pt (official SiT release), stabilityai/sd-vae-ft-ema and a CLIP model, and pass "
                                "their local paths (see kpe_lib.models.paper)")
    if isinstance(sit_config, str) and sit_config not in SIT_CONFIGS:
        raise ValueError(f"sit_config must be a SiTConfig or one of {sorted(SIT_CONFIGS)}; got {sit_config!r}")
    cfg = SIT_CONFIGS[sit_config] if isinstance(sit_config, str) else sit_config
    # cheap checks and the optional imports first, the multi-GB SiT last
    names = _class_names(class_names, cfg.num_classes)
    encoders = (load_clip_encoders(clip_name_or_path, arch=clip_arch, device=device) if clip_is_path
                else clip_name_or_path)
    vae = load_vae_decoder(vae_dir, device=device)
    model = load_sit(sit_ckpt, cfg, device=device)
    _freeze(model, vae, encoders)
    return PaperPipeline(
        name=cfg.name.lower().replace("/", "-"), model=model, vae=vae,
        semantics=ClipSemantics(encoders, names, device=device), class_names=names,
        guide=functools.partial(SiTVelocity, cfg_channels=cfg_channels, time_convention=time_convention,
                                autocast_dtype=torch.bfloat16 if bf16 else None),
        sample_shape=(cfg.in_channels, cfg.input_size, cfg.input_size), num_classes=cfg.num_classes,
        decode_batch=decode_batch,
        protocol={"generator": cfg.name, "sit_ckpt": str(sit_ckpt), "vae": str(vae_dir),
                  "vae_scaling_factor": vae.config.scaling_factor, "clip": str(getattr(encoders, "name", "")),
                  "clip_arch": clip_arch, "prompt": "a photo of a {class}", "cfg_channels": cfg_channels,
                  "time_convention": time_convention, "bf16": bf16})


def _freeze(*nets: Any) -> None:
    """Inference only: no parameter asks for gradients, so sampling builds no autograd graph (the sampler
    runs without ``torch.no_grad``; a graph kept across 250 SiT-XL/2 steps would fill any GPU)."""
    for net in nets:
        if isinstance(net, nn.Module):
            net.requires_grad_(False)
        elif isinstance(getattr(net, "model", None), nn.Module):  # transformers / open_clip wrappers
            net.model.requires_grad_(False)


def _randomise_zero_init(model: SiT, std: float) -> None:
    """Give the adaLN-Zero layers (zero at initialisation) small random weights, so a tiny random SiT is not
    identically zero and its guidance, time and label inputs all change the output."""
    with torch.no_grad():
        layers = [blk.adaLN_modulation[1] for blk in model.blocks]
        layers += [model.final_layer.adaLN_modulation[1], model.final_layer.linear]
        for layer in layers:
            layer.weight.normal_(0.0, std)
            layer.bias.normal_(0.0, std)


def tiny_paper_pipeline(seed: int = 0, device: str | torch.device = "cpu") -> PaperPipeline:
    """Randomly initialised tiny configurations of the paper's three networks, for smoke runs and tests.

    SiT "tiny" (8 x 8 x 4 latents, 2 blocks of width 32, 10 classes + null), VAE "tiny" (4x: 32 x 32 RGB),
    and :class:`TinyClipEncoders`; same parameter names, guidance wiring (:class:`SiTVelocity`), decoding and
    CLIP scoring as :func:`load_paper_pipeline`. Weights depend only on ``seed``; the global RNG is untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = SiT(SIT_CONFIGS["tiny"])
        _randomise_zero_init(model, std=0.2)
        vae = VAEDecoder("tiny")
    model, vae = model.to(device).eval(), vae.to(device).eval()
    encoders = TinyClipEncoders(seed=int(seed) + 1).to(device)
    _freeze(model, vae, encoders)
    cfg = model.config
    return PaperPipeline(
        name="sit-tiny", model=model, vae=vae, semantics=ClipSemantics(encoders, TINY_CLASS_NAMES, device=device),
        class_names=list(TINY_CLASS_NAMES), guide=functools.partial(SiTVelocity, cfg_channels=None),
        sample_shape=(cfg.in_channels, cfg.input_size, cfg.input_size), num_classes=cfg.num_classes,
        score_name="CLIP score (100 cos; random tiny stand-in)", margin_name="CLIP margin (random tiny stand-in)",
        protocol={"generator": cfg.name, "weights": f"random, seed {seed}", "vae": vae.config.name,
                  "clip": encoders.name, "prompt": "a photo of a {class}"})
