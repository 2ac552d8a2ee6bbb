"""Tests of kpe_lib.experiments.semantics_guidance: the CIFAR backend's wiring and the classifier scorer."""
import pytest
import torch
from torch import nn

from kpe_lib.models.guidance import class_balanced_noise, sample_guided
from kpe_lib.models import Classifier, UNet
from kpe_lib.experiments.semantics_guidance import cifar_backend, classifier_semantics, unit_from_symmetric


class FixedLogits(nn.Module):
    """Logits that are a fixed linear map of the image mean per channel (known by hand)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, -1.0]]), requires_grad=False)

    def forward(self, x):
        return x.mean(dim=(2, 3)) @ self.w.T


def test_classifier_semantics_batches_and_scores_by_hand():
    clf = FixedLogits()
    images = torch.rand(7, 3, 4, 4)
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 0])
    res = classifier_semantics(clf, batch_size=3)(images, labels)
    logits = clf(images).double()
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.gather(1, (1 - labels)[:, None]).squeeze(1)
    assert torch.allclose(res.margin, true - other, atol=1e-6)
    assert torch.allclose(res.score, torch.log_softmax(logits, 1).gather(1, labels[:, None]).squeeze(1), atol=1e-6)
    assert res.backend == "classifier"


def test_unit_from_symmetric_maps_and_clips():
    x = torch.tensor([-1.5, -1.0, 0.0, 1.0, 1.2])
    assert unit_from_symmetric(x).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_cifar_backend_runs_the_chapter_pipeline_end_to_end():
    torch.manual_seed(0)
    unet = UNet(in_channels=3, width=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,), num_classes=4).eval()
    clf = Classifier(in_channels=3, num_classes=4, width=8).eval()
    backend = cifar_backend(unet, clf, ["a", "b", "c", "d"], resolution=8)
    noise = class_balanced_noise(6, backend.sample_shape, backend.num_classes, seed=0)
    run = sample_guided(backend.model, noise.x0, noise.labels, scale=1.5, n_steps=3, guide=backend.guide)
    images = backend.to_images(run.x)
    sem = backend.semantics(images, run.labels)
    assert images.shape == (6, 3, 8, 8) and 0 <= float(images.min()) and float(images.max()) <= 1
    assert sem.score.shape == (6,) and bool((sem.score <= 0).all()) and run.model_evals == 6


def test_cifar_backend_refuses_an_unconditional_or_mismatched_model():
    clf = Classifier(in_channels=3, num_classes=4, width=8)
    with pytest.raises(ValueError, match="class-conditional"):
        cifar_backend(UNet(in_channels=3, width=8, channel_mult=(1, 2), attn_levels=()), clf, list("abcd"), 8)
    with pytest.raises(ValueError, match="num_classes"):
        cifar_backend(UNet(in_channels=3, width=8, channel_mult=(1, 2), attn_levels=(), num_classes=3), clf,
                      list("abcd"), 8)


def test_load_reference_batch_reads_adm_layout(tmp_path):
    import numpy as np

    from kpe_lib.experiments.semantics_guidance import load_reference_batch

    arr = np.random.default_rng(0).integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    path = tmp_path / "ref.npz"
    np.savez(path, arr_0=arr)
    x = load_reference_batch(path, n=3)
    assert x.shape == (3, 3, 4, 6) and x.dtype == torch.float32
    assert torch.equal(x[1, 2], torch.from_numpy(arr[1, :, :, 2]).float() / 255)
    with pytest.raises(FileNotFoundError, match="VIRTUAL_imagenet256"):
        load_reference_batch(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="n must be"):
        load_reference_batch(path, n=6)
    np.savez(tmp_path / "bad.npz", images=arr)
    with pytest.raises(ValueError, match="arr_0"):
        load_reference_batch(tmp_path / "bad.npz")


def test_paper_backend_drives_the_tiny_paper_pipeline():
    from kpe_lib.experiments.semantics_guidance.paper_pipeline import tiny_paper_pipeline
    from kpe_lib.experiments.semantics_guidance import paper_backend

    backend = paper_backend(tiny_paper_pipeline(seed=0))
    noise = class_balanced_noise(4, backend.sample_shape, backend.num_classes, seed=0)
    r1 = sample_guided(backend.model, noise.x0, noise.labels, scale=1.0, n_steps=2, guide=backend.guide)
    r2 = sample_guided(backend.model, noise.x0, noise.labels, scale=2.0, n_steps=2, guide=backend.guide)
    assert r1.model_evals == 2 and r2.model_evals == 4
    assert not torch.allclose(r1.kpe, r2.kpe)  # guidance changes the field, hence the energy
    images = backend.to_images(r2.x)
    assert images.shape[:2] == (4, 3) and 0 <= float(images.min()) and float(images.max()) <= 1
    sem = backend.semantics(images, noise.labels)
    assert sem.score.shape == (4,) and torch.isfinite(sem.margin).all() and backend.protocol["ema"] is True
    with pytest.raises(ValueError, match="lacks"):
        paper_backend(object())
