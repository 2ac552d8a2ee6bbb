"""Networks of the companion: velocity fields (2D MLP, DDPM UNet), guidance, an image classifier.

Every model records its constructor arguments in ``model.config`` (``{"kind": ..., ...}``), and
``build_model(config)`` rebuilds the same architecture from that plain dict; the training checkpoints and
the model cache (``kpe_lib.training``) key on it.
"""
from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from kpe_lib.models.classifier import Classifier
from kpe_lib.models.guidance import GuidedVelocity
from kpe_lib.models.mlp import TimeMLP
from kpe_lib.models.unet import UNet

MODEL_KINDS: dict[str, type[nn.Module]] = {"mlp": TimeMLP, "unet": UNet, "classifier": Classifier}


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build a model from a plain config dict.

    Args:
        config: ``{"kind": "mlp" | "unet" | "classifier", **constructor keyword arguments}``; missing
            arguments take the constructor's defaults. Lists are accepted where tuples are expected
            (configs that went through JSON).

    Returns:
        The freshly initialised model (weights from the global torch RNG; seed it for reproducibility).

    Example:
        >>> build_model({"kind": "unet", "width": 16}).num_params()
        1010657
    """
    if not isinstance(config, dict) or "kind" not in config:
        raise ValueError(f"config must be a dict with a 'kind' key, one of {sorted(MODEL_KINDS)}; got {config!r}")
    kind = config["kind"]
    if kind not in MODEL_KINDS:
        raise ValueError(f"config['kind'] must be one of {sorted(MODEL_KINDS)}; got {kind!r}")
    cls = MODEL_KINDS[kind]
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    kwargs = {k: v for k, v in config.items() if k != "kind"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"unknown keys {unknown} in a {kind!r} config; allowed: {sorted(allowed)}")
    return cls(**kwargs)


__all__ = ["TimeMLP", "UNet", "GuidedVelocity", "Classifier", "build_model", "MODEL_KINDS"]
