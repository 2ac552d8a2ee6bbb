"""Feature spaces of Mathematics §5: pixels, PCA (vs sklearn), HOG (vs skimage), autoencoder cache, classifier, registry."""
import numpy as np
import pytest
import torch
from skimage.feature import hog
from sklearn.decomposition import PCA
from torch import nn

from kpe_lib.metrics import (AutoencoderFeatures, ClassifierFeatures, HOGFeatures, InceptionFeatures, PCAFeatures,
                             PixelFeatures, feature_space)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run fastest on one thread (and do not fight other processes for cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(n: int, c: int = 1, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_pixel_features_flatten():
    x = images(3, 3, 4)
    f = PixelFeatures()(x)
    assert f.shape == (3, 48) and torch.equal(f, x.reshape(3, -1)) and PixelFeatures.name == "pixels"


@pytest.mark.parametrize("n", [200, 20])  # D = 64: covariance route (n >= D) and SVD route (n < D)
def test_pca_matches_sklearn(n):
    train = images(n, 1, 8, seed=1)
    space = PCAFeatures(train, n_components=5)
    sk = PCA(n_components=5, svd_solver="full").fit(train.reshape(n, -1).double().numpy())
    test = images(7, 1, 8, seed=2)
    ours, theirs = space(test).double().numpy(), sk.transform(test.reshape(7, -1).double().numpy())
    # components are defined up to sign: align by the sign of the inner product
    signs = np.sign((space.components.numpy() * sk.components_).sum(1))
    np.testing.assert_allclose(ours, theirs * signs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(space.explained_variance.numpy(), sk.explained_variance_, rtol=1e-8)
    assert space.name == "pca5"
    # whitened coordinates have unit variance on the training set
    w = PCAFeatures(train, n_components=5, whiten=True)(train).double()
    np.testing.assert_allclose(w.var(0, unbiased=True).numpy(), 1.0, rtol=1e-4)


def test_hog_matches_skimage_with_stated_parameters():
    gray, rgb = images(2, 1, 32, seed=3), images(2, 3, 32, seed=4)
    f = HOGFeatures()(gray)
    assert f.shape == (2, 324)  # 3 x 3 blocks x 2 x 2 cells x 9 orientations
    want = hog(gray[1, 0].double().numpy(), orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
               block_norm="L2-Hys")
    np.testing.assert_allclose(f[1].numpy(), want, rtol=1e-5, atol=1e-6)
    want = hog(rgb[0].permute(1, 2, 0).double().numpy(), orientations=9, pixels_per_cell=(8, 8),
               cells_per_block=(2, 2), block_norm="L2-Hys", channel_axis=-1)
    np.testing.assert_allclose(HOGFeatures()(rgb)[0].numpy(), want, rtol=1e-5, atol=1e-6)
    # gradient-based: adding a constant changes nothing
    torch.testing.assert_close(HOGFeatures()(gray - 0.4), f)
    with pytest.raises(ValueError, match="smaller than one HOG block"):
        HOGFeatures()(images(1, 1, 8))


def test_autoencoder_trains_caches_and_reloads(tmp_path):
    # smooth images (upsampled 2 x 2 noise) are compressible, so the loss must fall within 30 steps
    train = nn.functional.interpolate(images(64, 1, 2, seed=5), size=(8, 8), mode="bilinear", align_corners=False)
    kw = dict(latent_dim=8, steps=30, batch_size=64, width=4, lr=1e-2, cache=tmp_path)
    ae = AutoencoderFeatures(train, **kw)
    assert not ae.from_cache and ae.losses[-5:].mean() < 0.85 * ae.losses[:5].mean()  # it learns
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    again = AutoencoderFeatures(train, **kw)
    assert again.from_cache
    np.testing.assert_array_equal(again.losses, ae.losses)
    torch.testing.assert_close(again(train[:5]), ae(train[:5]), rtol=0, atol=0)
    assert ae(train).shape == (64, 8) and ae.name == "ae8"
    # a change of configuration, then of data, is a different cache entry each time
    AutoencoderFeatures(train, **{**kw, "steps": 2})
    AutoencoderFeatures(train[:63], **{**kw, "steps": 2})
    assert len(list(tmp_path.iterdir())) == 3
    vae = AutoencoderFeatures(train, variational=True, **{**kw, "steps": 2})
    assert vae.name == "vae8" and vae(train[:3]).shape == (3, 8)
    with pytest.raises(ValueError, match="divisible by 8"):
        AutoencoderFeatures(images(4, 1, 12), cache=False)
    with pytest.raises(ValueError, match="item shape"):
        ae(images(2, 1, 16))


def test_same_seed_same_autoencoder_without_cache_and_global_rng_untouched():
    train = images(32, 1, 8, seed=6)
    torch.manual_seed(123)
    want = torch.rand(3)
    torch.manual_seed(123)
    a = AutoencoderFeatures(train, latent_dim=4, steps=3, batch_size=8, width=4, cache=False)
    assert torch.equal(torch.rand(3), want)
    b = AutoencoderFeatures(train, latent_dim=4, steps=3, batch_size=8, width=4, cache=False)
    torch.testing.assert_close(a(train), b(train), rtol=0, atol=0)
    c = AutoencoderFeatures(train, latent_dim=4, steps=3, batch_size=8, width=4, cache=False, seed=1)
    assert not torch.equal(a(train), c(train))


def test_autoencoder_follows_its_device_with_the_same_batches_and_cache_entry(tmp_path, monkeypatch):
    train = images(32, 1, 8, seed=7)
    kw = dict(latent_dim=4, steps=4, batch_size=8, width=4, variational=True)
    ref = AutoencoderFeatures(train, cache=False, **kw)
    moved = []
    real_to = nn.Module.to

    def to(self, *args, **kwargs):  # record where the network is sent
        moved.append(torch.device(args[0]) if args else kwargs.get("device"))
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "to", to)
    ae = AutoencoderFeatures(train, cache=tmp_path, device=torch.device("cpu"), **kw)
    assert moved == [torch.device("cpu")] and ae.device == torch.device("cpu")
    np.testing.assert_array_equal(ae.losses, ref.losses)  # same minibatches and VAE noise, drawn on the CPU
    torch.testing.assert_close(ae(train), ref(train), rtol=0, atol=0)
    assert ae(train).device.type == "cpu"
    again = AutoencoderFeatures(train, cache=tmp_path, device="cpu", **kw)  # the device is not in the cache key
    assert again.from_cache and len(list(tmp_path.iterdir())) == 1
    blob = torch.load(next(tmp_path.iterdir()), weights_only=True)
    assert all(v.device.type == "cpu" for v in blob["state_dict"].values())
    if torch.cuda.is_available():
        gpu = AutoencoderFeatures(train, cache=False, device="cuda", **kw)
        assert next(gpu.net.parameters()).is_cuda and gpu(train).device.type == "cpu"
        np.testing.assert_allclose(gpu.losses, ref.losses, rtol=1e-3)


class TinyClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1))

    def features(self, x):
        return self.body(x)  # (N, 4, 1, 1): flattened by ClassifierFeatures


def test_classifier_features_batch_eval_mode_and_restore():
    torch.manual_seed(0)
    model = TinyClassifier().train()
    x = images(10, 1, 8, seed=7)
    f = ClassifierFeatures(model, batch_size=3)(x)
    assert f.shape == (10, 4) and model.training  # mode restored
    model.eval()
    with torch.no_grad():
        want = model.body(x).flatten(1)
    torch.testing.assert_close(f, want)  # dropout off during extraction
    with pytest.raises(ValueError, match="features"):
        ClassifierFeatures(nn.Linear(2, 2))


def test_registry():
    train = images(20, 1, 8)
    assert feature_space("pixels").name == "pixels"
    assert feature_space("pca", train=train, n_components=3)(train).shape == (20, 3)
    assert isinstance(feature_space("inception", value_range=(-0.5, 0.5)), InceptionFeatures)
    assert feature_space("classifier", model=TinyClassifier()).name == "classifier"
    with pytest.raises(ValueError, match="pass train"):
        feature_space("pca")
    with pytest.raises(ValueError, match="name must be one of"):
        feature_space("clip")
    with pytest.raises(ValueError, match="value_range"):
        InceptionFeatures(value_range=(1.0, 0.0))
