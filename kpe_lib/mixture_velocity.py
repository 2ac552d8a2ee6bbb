"""A closed-form field that memorises part of the time: training atoms mixed with a Gaussian (Mathematics §4).

The empirical closed form (``EmpiricalVelocity``) copies a training item on every path, so it has no
"novel" samples to compare copies against. This module gives the exact flow-matching velocity of the data
distribution

    p_1 = (1 - rho) * (1/n) sum_i delta(a_i)  +  rho * N(mu, Sigma),

with ``mu`` and ``Sigma`` the training set's mean and covariance (eigenvalues floored at ``cov_floor``).
Paths whose posterior collapses onto an atom end on a training item (a copy); the others end on a fresh
draw of the Gaussian (novel, never a copy). It is a training-free stand-in for a model that memorises
some samples and generalises on others, used to test late KPE as a memorisation detector.

Under the linear path of Mathematics §1 (``x_t = t x1 + (1 - t) x0``, ``sigma = 1 - t``) each component is exact:

* atom i: ``x_t ~ N(t a_i, sigma^2 I)``, velocity ``(a_i - x) / sigma``;
* Gaussian: ``x_t ~ N(t mu, S)``, ``S = t^2 Sigma + sigma^2 I``; velocity
  ``E[x1 - x0 | x_t] = mu + (t Sigma - sigma I) S^{-1} (x - t mu)``;

and the field is the posterior-weighted sum of the component velocities.
"""
from __future__ import annotations

import math

import torch

__all__ = ["AtomGaussianVelocity"]


class AtomGaussianVelocity:
    """Exact velocity of "training atoms with weight 1 - rho, plus a fitted Gaussian with weight rho".

    Args:
        train: (n, ...) training items (flattened to (n, d), kept in float64).
        rho: weight of the Gaussian component, in (0, 1).
        cov_floor: smallest eigenvalue of Sigma (> 0): keeps the Gaussian's field finite at t -> 1 in
            directions the training set does not span.
        device: where to compute (default: ``train``'s device); the velocity is returned on ``x``'s device.

    Example:
        >>> field = AtomGaussianVelocity(torch.randn(50, 4), rho=0.5)
        >>> field(torch.randn(3, 4, dtype=torch.float64), torch.tensor(0.5)).shape
        torch.Size([3, 4])
    """

    def __init__(self, train: torch.Tensor, rho: float = 0.5, cov_floor: float = 1e-4,
                 device: torch.device | str | None = None) -> None:
        if not isinstance(train, torch.Tensor) or train.ndim < 2 or train.shape[0] < 2:
            raise ValueError("train must be a tensor of shape (n, ...) with n >= 2")
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not 0.0 < rho < 1.0:
            raise ValueError(f"rho must be a number in the open interval (0, 1), got {rho!r}")
        if isinstance(cov_floor, bool) or not isinstance(cov_floor, (int, float)) or not cov_floor > 0:
            raise ValueError(f"cov_floor must be a positive number, got {cov_floor!r}")
        self.item_shape = tuple(train.shape[1:])
        self.atoms = train.detach().reshape(train.shape[0], -1).to(device=device or train.device, dtype=torch.float64)
        if not bool(torch.isfinite(self.atoms).all()):
            raise ValueError("train contains NaN or infinite values")
        self.rho = float(rho)
        self.mu = self.atoms.mean(0)
        centred = self.atoms - self.mu
        cov = centred.T @ centred / (self.n - 1)
        lam, self.basis = torch.linalg.eigh(cov)
        self.lam = lam.clamp_min(float(cov_floor))  # (d,) eigenvalues of Sigma, basis (d, d) columns
        self.sq_norms = self.atoms.pow(2).sum(1)

    @property
    def n(self) -> int:
        return self.atoms.shape[0]

    @property
    def dim(self) -> int:
        return self.atoms.shape[1]

    def _time(self, t: float | torch.Tensor) -> float:
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        if tt.numel() < 1 or not bool((tt == tt[0]).all()):
            raise ValueError("t must be one time for the whole batch (a scalar or a constant (B,) tensor)")
        t0 = float(tt[0])
        if not 0.0 <= t0 < 1.0:
            raise ValueError(f"t must lie in [0, 1): the atoms make the field singular at t = 1, got {t0}")
        return t0

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.item_shape:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.item_shape))}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1).to(device=self.atoms.device, dtype=torch.float64)

    def _components(self, xf: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log joint of every component (B, n + 1) (last column: the Gaussian), its projections z and S."""
        s2 = (1.0 - t) ** 2
        sq_dist = (xf.pow(2).sum(1, keepdim=True) - 2.0 * t * (xf @ self.atoms.T) + t * t * self.sq_norms).clamp_min(0)
        log_atoms = (math.log((1.0 - self.rho) / self.n) - sq_dist / (2.0 * s2)
                     - 0.5 * self.dim * math.log(2.0 * math.pi * s2))
        z = (xf - t * self.mu) @ self.basis  # coordinates in Sigma's eigenbasis
        s = t * t * self.lam + s2
        log_gauss = math.log(self.rho) - 0.5 * (torch.log(2.0 * math.pi * s).sum() + (z * z / s).sum(1))
        return torch.cat([log_atoms, log_gauss[:, None]], 1), z, s

    def gaussian_weight(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Posterior probability (B,) that x_t came from the Gaussian component."""
        logits, _, _ = self._components(self._flat(x), self._time(t))
        return torch.softmax(logits, 1)[:, -1]

    def log_density(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """log p_t(x) of the mixture's bridge marginal, (B,)."""
        logits, _, _ = self._components(self._flat(x), self._time(t))
        return torch.logsumexp(logits, 1)

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The exact marginal velocity (B, ...) in ``x``'s dtype and device (module docstring)."""
        t0 = self._time(t)
        xf = self._flat(x)
        logits, z, s = self._components(xf, t0)
        w = torch.softmax(logits, 1)
        w_atoms, w_gauss = w[:, :-1], w[:, -1:]
        sigma = 1.0 - t0
        v_atoms = (w_atoms @ self.atoms - w_atoms.sum(1, keepdim=True) * xf) / sigma
        v_gauss = self.mu + (z * ((t0 * self.lam - sigma) / s)) @ self.basis.T
        out_dtype = x.dtype if x.is_floating_point() else torch.float64  # an integer x must not round it
        return (v_atoms + w_gauss * v_gauss).reshape(x.shape).to(device=x.device, dtype=out_dtype)
