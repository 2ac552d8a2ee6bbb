"""Training (and caching) of the image classifier behind the semantic scores and features (Mathematics §5)."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from kpe_lib.models import Classifier
from kpe_lib.training._util import EpochSampler, private_global_rng, progress_bar, seed_global_rng
from kpe_lib.training.cache import default_cache_dir
from kpe_lib.training.checkpoint import CLASSIFIER_FORMAT, atomic_save, config_hash, data_fingerprint, \
    load_checkpoint


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Settings of ``train_classifier``.

    Attributes:
        width: W of ``Classifier`` (features are 4W-dimensional).
        steps: Adam steps.
        batch_size: images per step.
        lr: Adam learning rate.
        weight_decay: decoupled weight decay (AdamW).
        flip: random horizontal flips as augmentation (right for CIFAR-10 and faces).
        shift: random translations by up to ``shift`` pixels in each direction (edge pixels repeated), as
            augmentation; 0: none (and absent from the cache key, so entries trained before it stay valid).
        seed: seeds the initial weights, the batches and the augmentations.
        cosine: decay the learning rate from ``lr`` to 0 along a half cosine over the ``steps``; False: constant
            (and absent from the cache key, as ``shift`` = 0).
    """

    width: int = 32
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    flip: bool = True
    seed: int = 0
    shift: int = 0
    cosine: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.cosine, bool):
            raise ValueError(f"ClassifierTrainConfig.cosine must be True or False; got {self.cosine!r}")
        if not isinstance(self.shift, int) or self.shift < 0:
            raise ValueError(f"ClassifierTrainConfig.shift must be an integer >= 0 (pixels); got {self.shift!r}")
        for name in ("width", "steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"ClassifierTrainConfig.{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"ClassifierTrainConfig needs lr > 0 and weight_decay >= 0; got {self.lr}, {self.weight_decay}")


@dataclass
class ClassifierResult:
    """A trained classifier and how well it does.

    Attributes:
        model: the ``Classifier`` (eval mode).
        losses: cross-entropy of every training step.
        train_accuracy: accuracy on the training images.
        val_accuracy: accuracy on the validation images, or None when none were given.
        seconds: training wall time (of the run that wrote the cache entry).
        cached: True when loaded from the cache without training.
        path: the cache file, or None when caching was off.
    """

    model: Classifier
    losses: list[float]
    train_accuracy: float
    val_accuracy: float | None
    seconds: float
    cached: bool
    path: Path | None


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of ``x`` (B, C, H, W) by its own random offset in [-shift, shift]^2 (edges repeated).

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> random_shift(x, 1, torch.Generator().manual_seed(0)).shape
        torch.Size([1, 1, 4, 4])
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def lr_at(config: ClassifierTrainConfig, step: int) -> float:
    """Learning rate of step ``step`` (0-based): ``config.lr``, or its half-cosine decay when ``config.cosine``.

    Example:
        >>> lr_at(ClassifierTrainConfig(lr=1.0, steps=4, cosine=True), 2)
        0.5
    """
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * step / config.steps)) if config.cosine else config.lr


@torch.no_grad()
def accuracy(model: Classifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``images`` (N, C, H, W) whose arg-max logit equals ``labels`` (N,)."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        pred = model(images[i:i + batch_size].to(device)).argmax(dim=1).cpu()
        correct += int((pred == labels[i:i + batch_size].cpu()).sum())
    return correct / max(images.shape[0], 1)


def train_classifier(images: torch.Tensor, labels: torch.Tensor, config: ClassifierTrainConfig | None = None, *,
                     num_classes: int | None = None, val_images: torch.Tensor | None = None,
                     val_labels: torch.Tensor | None = None, cache: bool = True, cache_dir: str | Path | None = None,
                     name: str = "classifier", progress: bool = True,
                     device: str | torch.device | None = None) -> ClassifierResult:
    """Train ``Classifier`` with cross-entropy, or load it from the cache keyed by config and data.

    Args:
        images: (N, C, H, W) float images as the data loader gives them.
        labels: (N,) class indices in [0, K).
        config: training settings (default ``ClassifierTrainConfig()``).
        num_classes: K (default ``labels.max() + 1``).
        val_images, val_labels: an optional held-out set to report accuracy on (not part of the cache key).
        cache: read/write the cache; ``cache_dir`` its folder (default ``default_cache_dir()``, the model
            cache's folder); ``name`` the file-name prefix.
        progress: tqdm bar (off when env CI is set or stderr is no terminal).
        device: where to train (default CPU).

    Returns:
        ClassifierResult.

    Example::

        res = train_classifier(x_train, y_train, ClassifierTrainConfig(steps=500), val_images=x_test,
                               val_labels=y_test)
        res.val_accuracy, res.model.features(x_test[:8]).shape   # e.g. 0.7, (8, 128)
    """
    config = config or ClassifierTrainConfig()
    labels = torch.as_tensor(labels).long()
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (N, C, H, W); got {tuple(getattr(images, 'shape', ()))}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},); got {tuple(labels.shape)}")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"labels must lie in [0, {k - 1}] for num_classes={k}")
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    device = torch.device(device) if device is not None else torch.device("cpu")
    with private_global_rng(torch.device("cpu")):
        seed_global_rng(config.seed, torch.device("cpu"))  # weights are drawn on the CPU
        model = Classifier(images.shape[1], k, config.width).to(device)
    train_key = dataclasses.asdict(config)
    for option in ("shift", "cosine"):  # options added later: keyed only when set, so older entries stay valid
        if not train_key[option]:
            del train_key[option]
    full = {"model": model.config, "train": train_key, "data": data_fingerprint(images, labels)}
    path = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / f"{name}-{config_hash(full)}.pt"

    if cache and path.exists():
        ck = load_checkpoint(path, CLASSIFIER_FORMAT)
        model.load_state_dict(ck["model"])
        losses, train_acc, seconds, cached = ck["losses"].tolist(), float(ck["train_accuracy"]), float(ck["seconds"]), True
    else:
        losses, start = [], time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed)
        sampler = EpochSampler(images.shape[0])
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        model.train()
        with progress_bar(progress, total=config.steps, desc="classifier", unit="step") as bar:
            for step in range(config.steps):
                if config.cosine:
                    for group in optimizer.param_groups:
                        group["lr"] = lr_at(config, step)
                idx = sampler.next(config.batch_size, generator)
                x, y = images[idx].to(device), labels[idx].to(device)
                if config.flip:
                    flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(device)
                    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                if config.shift:
                    x = random_shift(x, config.shift, generator)
                loss = F.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                bar.update(1)
                if (step + 1) % 10 == 0:
                    bar.set_postfix(loss=f"{sum(losses[-10:]) / 10:.3f}")
        model.eval()
        seconds, cached = time.perf_counter() - start, False
        train_acc = accuracy(model, images, labels)
        if cache:
            atomic_save({"format": CLASSIFIER_FORMAT, "config": full, "model": model.state_dict(),
                         "losses": torch.tensor(losses, dtype=torch.float64), "train_accuracy": train_acc,
                         "seconds": seconds}, path)
    model.eval()
    val_acc = accuracy(model, val_images, torch.as_tensor(val_labels).long()) if val_images is not None else None
    return ClassifierResult(model=model, losses=losses, train_accuracy=train_acc, val_accuracy=val_acc,
                            seconds=seconds, cached=cached, path=path if cache else None)
