"""Set statistics on a torch device: the paired FID bootstrap and feature statistics (Mathematics §5, §5.7).

The numpy paths of :mod:`kpe_lib.metrics.fid` and :mod:`kpe_lib.metrics.paired` stay the default on the CPU.
At the paper scale (10,000 samples, 2048-d features, 1,000 resamples, a few dozen configuration pairs) they
take about a day; these functions do the same arithmetic in float64 torch on any device, in batches of
replicates, with the **same resampling indices**: they are drawn with ``numpy.random.default_rng(seed)``
exactly as the numpy path draws them (``rng.integers(0, n, size=n)`` per replicate) and moved to the device,
so the two paths agree to float64 rounding (about 1e-8 relative: a centred set has zero eigenvalues
whose rounding enters the trace term through a square root).

Example:
    >>> import numpy as np
    >>> from kpe_lib.metrics.fid import FrechetReference, feature_statistics
    >>> g = torch.Generator().manual_seed(0)
    >>> ref = FrechetReference.from_stats(feature_statistics(torch.randn(300, 8, generator=g)))
    >>> a = torch.randn(100, 8, generator=g)
    >>> fast = paired_fid_change_device(ref, a, a + 0.3, n_boot=20, device="cpu")
    >>> slow = ref.paired_change(a, a + 0.3, n_boot=20)
    >>> bool(np.isclose(fast.change, slow.change) and np.allclose(fast.ci, slow.ci))
    True
"""
from __future__ import annotations

import math

import numpy as np
import torch

from kpe_lib.metrics._checks import as_matrix, check_level, check_positive_int
from kpe_lib.metrics.fid import FeatureStats, FrechetReference
from kpe_lib.metrics.paired import PairedChange, _summarise_change

__all__ = ["paired_fid_change_device", "feature_statistics_device", "resample_indices", "stats_device"]

_MEMORY = 2**30  # bytes of resampled features held at once per batch of replicates


def stats_device(device: str | torch.device | None) -> str | None:
    """The device for set statistics given a chapter's ``device``: None (the numpy / CPU paths, bit for bit
    what they always computed) for the CPU or None, else the device itself as a string (``"cuda"``)."""
    if device is None or torch.device(device).type == "cpu":
        return None
    return str(device)


def resample_indices(n: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n) int64 indices, row r = ``rng.integers(0, n, size=n)`` of the r-th replicate, in the order
    :func:`kpe_lib.metrics.paired.paired_set_change` draws them (``rng = numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n, size=n) for _ in range(n_boot)])


def feature_statistics_device(features: torch.Tensor | np.ndarray, device: str | torch.device = "cpu"
                              ) -> FeatureStats:
    """:func:`kpe_lib.metrics.fid.feature_statistics` computed in float64 torch on ``device``.

    Args:
        features: (N, D) features, N >= 2.
        device: where the (D, D) product runs.

    Returns:
        FeatureStats with numpy mean (D,) and unbiased covariance (D, D), equal to ``numpy.cov`` to rounding.
    """
    f = as_matrix(features, "features").to(device=device, dtype=torch.float64)
    if f.shape[0] < 2:
        raise ValueError(f"features need at least 2 rows for a covariance, got {f.shape[0]}")
    mu = f.mean(0)
    fc = f - mu
    sigma = fc.T @ fc / (f.shape[0] - 1)
    return FeatureStats(mu=mu.cpu().numpy(), sigma=sigma.cpu().numpy(), n=int(f.shape[0]))


class _DeviceFrechet:
    """A FrechetReference's constants and one projected feature set on ``device`` (float64)."""

    def __init__(self, reference: FrechetReference, device: torch.device) -> None:
        self.device = device
        self.mu = torch.as_tensor(np.asarray(reference.stats.mu, np.float64), device=device)
        self.trace_ref = float(np.trace(reference.stats.sigma))
        self.root = torch.as_tensor(np.asarray(reference.root, np.float64), device=device)

    def project(self, features: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        f = f.to(device=self.device, dtype=torch.float64)
        dim = self.mu.shape[0]
        if f.ndim != 2 or f.shape[0] < 2 or f.shape[1] != dim:
            raise ValueError(f"features must be (m, {dim}) with m >= 2 (the reference's feature network), "
                             f"got {tuple(f.shape)}")
        return f, f @ self.root

    def fid(self, f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """FIDs of a batch of resampled sets: f (R, m, D), g = f S_r^(1/2) (R, m, D) -> (R,)."""
        m = f.shape[1]
        mu2 = f.mean(1)  # (R, D)
        gc = (g - g.mean(1, keepdim=True)) / math.sqrt(m - 1)
        gram = gc @ gc.transpose(1, 2) if m <= gc.shape[2] else gc.transpose(1, 2) @ gc
        lam = torch.linalg.eigvalsh(gram)
        tr_covmean = lam.clamp_min(0.0).sqrt().sum(1)
        tr_s2 = (f - mu2[:, None]).pow(2).sum((1, 2)) / (m - 1)
        diff = self.mu - mu2
        return (diff * diff).sum(1) + self.trace_ref + tr_s2 - 2.0 * tr_covmean


def paired_fid_change_device(reference: FrechetReference, base: torch.Tensor | np.ndarray,
                             other: torch.Tensor | np.ndarray, n_boot: int = 200, seed: int = 0,
                             level: float = 0.95, device: str | torch.device = "cuda",
                             rep_batch: int | None = None) -> PairedChange:
    """:meth:`FrechetReference.paired_change` (FID(other) - FID(base), paired bootstrap) on ``device``.

    Same resampling indices as the numpy path (:func:`resample_indices`), the same trace formula
    (Mathematics §5.7), float64 throughout; the replicates run ``rep_batch`` at a time.

    Args:
        reference: the reference Gaussian with its square root.
        base: (m, D) features of sampler A; other: (m, D) features of sampler B on the same noise.
        n_boot: resamples (integer >= 1).
        seed: resampling seed (numpy, as the CPU path).
        level: interval coverage in (0, 1).
        device: where to compute (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
        rep_batch: replicates per batch (None: as many as fit in about 1 GiB of resampled features).

    Returns:
        PairedChange(value_a, value_b, change, ci, level, n_boot, pvalue, n, stderr, bias).
    """
    check_positive_int(n_boot, "n_boot")
    level = check_level(level)
    dev = _DeviceFrechet(reference, torch.device(device))
    (fa, ga), (fb, gb) = dev.project(base), dev.project(other)
    if fa.shape != fb.shape:
        raise ValueError(f"base and other must be paired feature sets of the same shape, got {tuple(fa.shape)}, "
                         f"{tuple(fb.shape)}")
    m, dim = fa.shape
    value_a, value_b = float(dev.fid(fa[None], ga[None])[0]), float(dev.fid(fb[None], gb[None])[0])
    if rep_batch is None:
        rep_batch = max(1, _MEMORY // (4 * m * dim * 8))
    check_positive_int(rep_batch, "rep_batch")
    idx_all = torch.from_numpy(resample_indices(m, n_boot, seed))
    changes = []
    for s in range(0, n_boot, rep_batch):
        idx = idx_all[s:s + rep_batch].to(dev.device)
        fid_a = dev.fid(fa[idx], ga[idx])
        fid_b = dev.fid(fb[idx], gb[idx])
        changes.append((fid_b - fid_a).cpu())
    reps = torch.cat(changes).numpy()
    return _summarise_change(value_a, value_b, reps, n_boot, level, m)
