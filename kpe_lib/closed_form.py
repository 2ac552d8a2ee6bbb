"""The empirical flow matching (EFM) closed-form velocity (Mathematics §4).

For a finite training set ``{a_1, ..., a_n}`` and the linear path of Mathematics §1 the marginal velocity is

    v*(x, t) = sum_i w_i(x, t) (a_i - x) / (1 - t),
    w_i(x, t) = softmax_i(-||x - t a_i||^2 / (2 (1 - t)^2)).

It blows up like 1/(1 - t) near t = 1 unless x is already close to a training point, which is the terminal
energy spike that drives copying (memorisation).

``SmoothedEmpiricalVelocity`` is the same computation for the data distribution ``(1/n) sum_i N(a_i, sigma^2 I)``
(Mathematics §4.7): the variance ``(1 - t)^2`` of each atom's bridge becomes ``s_t^2 = (1 - t)^2 + t^2 sigma^2``,
the weights keep their softmax form and the field, finite on all of [0, 1], is

    v_sigma(x, t) = ((1 - t) m(x, t) + (t sigma^2 - (1 - t)) x) / s_t^2,   m = sum_i w_i a_i.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from kpe_lib._numbers import as_float

__all__ = ["EmpiricalVelocity", "SmoothedEmpiricalVelocity"]


@dataclass
class _Stream:
    """Streaming log-sum-exp state over chunks of training points."""

    max_logit: torch.Tensor  # (B,)
    sum_exp: torch.Tensor  # (B,), sum of exp(logit - max_logit)
    weighted: torch.Tensor | None  # (B, d), sum of exp(logit - max_logit) a_i


def _all_finite(x: torch.Tensor) -> bool:
    """Whether every entry is finite: one sum in the common case (any NaN or infinity makes the sum non-finite;
    a sum that overflows although every entry is finite falls back to the entrywise check)."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


class EmpiricalVelocity:
    """Closed-form EFM velocity of a finite training set (Mathematics §4).

    The logits use ``||x||^2 - 2 t <x, a_i> + t^2 ||a_i||^2`` (one matrix product per chunk); the softmax is
    computed as a streaming log-sum-exp over chunks of ``chunk_size`` training points, so memory stays
    ``O(B * chunk_size + B * d)`` whatever ``n`` is.

    Args:
        train: training set, shape (n, ...); it is flattened to (n, d) and stored in ``dtype``.
        dtype: compute dtype. float64 (default) keeps the logits accurate near t = 1 (float32 loses them:
            Mathematics §4); the velocity is returned in the input's dtype.
        chunk_size: number of training points per matrix product.
        device: where to keep the training set (default: ``train``'s device).
        fused: the fast path (off by default, which keeps the rounding earlier results were computed
            with): one fused softmax per chunk when the set fits one chunk, the ``- x / (1 - t)`` term folded
            into the second matrix product for a common t, in-place exponentials otherwise, and a transposed
            contiguous copy of each chunk for the logits product (twice the memory of the training set). Same
            mathematics, different last-bit rounding; it brings the two products close to a bare product's
            FLOP rate (``benchmarks/bench_paper_scale.py``).

    Example:
        >>> efm = EmpiricalVelocity(torch.tensor([[1.0, 2.0]]))
        >>> efm(torch.zeros(1, 2), torch.tensor(0.5))  # (a - x) / (1 - t)
        tensor([[2., 4.]])
    """

    def __init__(self, train: torch.Tensor, dtype: torch.dtype = torch.float64, chunk_size: int = 4096,
                 device: torch.device | str | None = None, fused: bool = False) -> None:
        if not isinstance(train, torch.Tensor) or train.ndim < 2 or train.shape[0] < 1:
            raise ValueError("train must be a tensor of shape (n, ...) with n >= 1")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        if not isinstance(fused, bool):
            raise ValueError(f"fused must be True or False, got {fused!r}")
        self.item_shape = tuple(train.shape[1:])
        self.sigma = 0.0  # width of each atom (SmoothedEmpiricalVelocity); 0 is the empirical closed form
        self.dtype = dtype
        self.fused = fused
        self.chunk_size = chunk_size
        self.train = train.detach().reshape(train.shape[0], -1).to(device=device or train.device, dtype=dtype)
        if not bool(torch.isfinite(self.train).all()):
            raise ValueError("train contains NaN or infinite values")
        self.train = self.train.contiguous()
        self.sq_norms = self.train.pow(2).sum(1)  # (n,)
        # fused: each chunk's (d, c) transpose, contiguous, so the logits product reads it row-major
        self._chunks_t = [self.train[lo:lo + chunk_size].T.contiguous() for lo in range(0, self.n, chunk_size)
                          ] if fused else None

    @property
    def n(self) -> int:
        return self.train.shape[0]

    @property
    def dim(self) -> int:
        return self.train.shape[1]

    def _var(self, t: float | torch.Tensor) -> float | torch.Tensor:
        """Variance of one atom's bridge at t: ``(1 - t)^2``, plus ``(t sigma)^2`` for smoothed atoms."""
        var = (1.0 - t) ** 2
        return var if self.sigma == 0 else var + (t * self.sigma) ** 2

    def _combine(self, mean: torch.Tensor, xf: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        """The velocity from the posterior mean of the atoms ``m`` (B, d): ``(m - x) / (1 - t)`` for point atoms,
        ``((1 - t) m + (t sigma^2 - (1 - t)) x) / s_t^2`` for smoothed ones (Mathematics §4.7)."""
        if self.sigma == 0:
            return (mean - xf) / (1.0 - tt)
        return ((1.0 - tt) * mean + (tt * self.sigma ** 2 - (1.0 - tt)) * xf) / self._var(tt)

    def _prepare(self, x: torch.Tensor, t: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten x to (B, d) in the compute dtype and t to (B, 1); reject t outside [0, 1) ([0, 1] if sigma > 0)."""
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.item_shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a tensor of shape (B, {', '.join(map(str, self.item_shape))}), got {got}")
        xf = x.reshape(x.shape[0], -1).to(device=self.train.device, dtype=self.dtype)
        if not _all_finite(xf):
            raise ValueError(f"x contains NaN or infinite values (in {self.dtype} as computed)")
        tt = torch.as_tensor(t, dtype=self.dtype, device=self.train.device)
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        if tt.shape != (x.shape[0],):
            raise ValueError(f"t must be a scalar or of shape ({x.shape[0]},), got {tuple(tt.shape)}")
        outside = ~((tt >= 0) & ((tt < 1) if self.sigma == 0 else (tt <= 1)))  # NaN is outside too
        if bool(outside.any()):
            allowed = "[0, 1) (the closed form is singular at t = 1)" if self.sigma == 0 else "[0, 1]"
            raise ValueError(f"t must lie in {allowed}, got {float(tt[outside][0])!r}")
        return xf, tt[:, None]

    def _finite(self, out: torch.Tensor, x: torch.Tensor, tt: torch.Tensor, what: str) -> torch.Tensor:
        """``out`` if finite; else a FloatingPointError naming the overflow (the input's size or the dtype)."""
        if _all_finite(out):
            return out
        where = f"at t = {float(tt.max()):.6g}"
        biggest = float(x.detach().abs().max().double()) if x.numel() else 0.0
        wider = "" if out.dtype == torch.float64 else " or pass x in a wider dtype (torch.float64)"
        raise FloatingPointError(
            f"the closed-form {what} is not finite {where} in {out.dtype} (|x| up to {biggest:.3g}): the values "
            f"overflow {out.dtype}; rescale the data{wider}")

    def _logits(self, xf: torch.Tensor, tt: torch.Tensor, lo: int, hi: int, common: float | None = None
                ) -> torch.Tensor:
        """Logits up to the per-row constant ``-||x||^2 / (2 s^2)``: (B, hi - lo), ``s^2 = self._var(t)``.

        ``(t / s^2) <x, a_i> - (t^2 / (2 s^2)) ||a_i||^2`` as one fused matrix product and add
        (with ``common``, the one t of every row, the bias is a single broadcast row: the fused path).
        """
        if common is not None:
            var = self._var(common)
            bias = (-(common ** 2) / (2.0 * var)) * self.sq_norms[lo:hi]  # (c,), broadcast over rows
            return torch.addmm(bias, xf, self._chunk_t(lo, hi), alpha=common / var)
        var = self._var(tt)
        bias = -(tt ** 2 / (2.0 * var)) * self.sq_norms[lo:hi]  # (B, c)
        return torch.addmm(bias, xf * (tt / var), self._chunk_t(lo, hi))

    def _chunk_t(self, lo: int, hi: int) -> torch.Tensor:
        """Training points lo..hi as a (d, c) matrix: the stored transpose on the fused path, else a view."""
        if self._chunks_t is not None and lo % self.chunk_size == 0 and hi == min(lo + self.chunk_size, self.n):
            return self._chunks_t[lo // self.chunk_size]
        return self.train[lo:hi].T

    def _stream(self, xf: torch.Tensor, tt: torch.Tensor, weighted: bool, common: float | None = None) -> _Stream:
        state = None
        for lo in range(0, self.n, self.chunk_size):
            hi = min(lo + self.chunk_size, self.n)
            p = self._logits(xf, tt, lo, hi, common)
            chunk_max = p.amax(1) if self.fused else p.max(1).values
            if state is None:
                state = _Stream(chunk_max, torch.zeros_like(chunk_max), None)
            else:
                new_max = torch.maximum(state.max_logit, chunk_max)
                rescale = torch.exp(state.max_logit - new_max)
                state.sum_exp = state.sum_exp * rescale
                if weighted:
                    state.weighted = state.weighted * rescale[:, None]
                state.max_logit = new_max
            p = p.sub_(state.max_logit[:, None]).exp_() if self.fused else torch.exp(p - state.max_logit[:, None])
            state.sum_exp = state.sum_exp + p.sum(1)
            if weighted:
                chunk = self.train[lo:hi]
                state.weighted = p @ chunk if state.weighted is None else torch.addmm(state.weighted, p, chunk)
        return state

    def denoise(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Posterior mean ``E[x1 | x_t = x]``, shape like ``x`` (compute dtype): ``m = sum_i w_i a_i``, and
        ``((1 - t)^2 m + t sigma^2 x) / s_t^2`` for smoothed atoms (Mathematics §4.7)."""
        xf, tt = self._prepare(x, t)
        s = self._stream(xf, tt, weighted=True)
        mean = s.weighted / s.sum_exp[:, None]
        if self.sigma != 0:
            mean = ((1.0 - tt) ** 2 * mean + tt * self.sigma ** 2 * xf) / self._var(tt)
        return self._finite(mean.reshape(x.shape), x, tt, "posterior mean")

    def __call__(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The closed-form velocity ``v*(x, t)`` (Mathematics §4).

        Args:
            x: states (B, ...) with the training items' shape.
            t: time, scalar or (B,), in [0, 1) ([0, 1] for smoothed atoms, sigma > 0).

        Returns:
            Velocity (B, ...) in ``x``'s dtype (the compute dtype for an integer ``x``).

        Raises:
            ValueError: ``x`` of another item shape or not finite, ``t`` outside [0, 1) (or [0, 1]) or NaN.
            FloatingPointError: the velocity overflows (huge ``x``, or float16 near t = 1).
        """
        xf, tt = self._prepare(x, t)
        out_dtype = x.dtype if x.is_floating_point() else self.dtype  # an integer x must not round the velocity
        if self.fused:
            out = self._fused_velocity(xf, tt, t)
        else:
            s = self._stream(xf, tt, weighted=True)
            out = self._combine(s.weighted / s.sum_exp[:, None], xf, tt)
        return self._finite(out.reshape(x.shape).to(out_dtype), x, tt, "velocity")

    def _fused_velocity(self, xf: torch.Tensor, tt: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """``v*`` (B, d) by the fused path: two matrix products and as few elementwise passes as possible."""
        common = float(t) if not isinstance(t, torch.Tensor) or t.ndim == 0 else None
        if self.n <= self.chunk_size:
            probs = torch.softmax(self._logits(xf, tt, 0, self.n, common), 1)
            if common is not None and self.sigma == 0:  # (probs A - x) / (1 - t) in one product
                k = 1.0 / (1.0 - common)
                return torch.addmm(xf, probs, self.train, beta=-k, alpha=k)
            if common is not None:  # ((1 - t) probs A + (t sigma^2 - (1 - t)) x) / s_t^2 in one product
                var = self._var(common)
                return torch.addmm(xf, probs, self.train, beta=(common * self.sigma ** 2 - (1.0 - common)) / var,
                                   alpha=(1.0 - common) / var)
            if self.sigma != 0:
                return self._combine(probs @ self.train, xf, tt)
            return (probs @ self.train).sub_(xf).div_(1.0 - tt)
        s = self._stream(xf, tt, weighted=True, common=common)
        if self.sigma != 0:
            return self._combine(s.weighted.div_(s.sum_exp[:, None]), xf, tt)
        return s.weighted.div_(s.sum_exp[:, None]).sub_(xf).div_(1.0 - tt)

    def weights(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Posterior weights ``w_i(x, t)`` over all training points: (B, n), rows sum to 1."""
        xf, tt = self._prepare(x, t)
        logits = torch.cat([self._logits(xf, tt, lo, min(lo + self.chunk_size, self.n))
                            for lo in range(0, self.n, self.chunk_size)], 1)
        return torch.softmax(logits, 1)

    def max_weight(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Largest posterior weight ``max_i w_i`` (B,), computed without materialising all weights."""
        xf, tt = self._prepare(x, t)
        s = self._stream(xf, tt, weighted=False)
        return 1.0 / s.sum_exp  # the top logit contributes exp(0) = 1 to sum_exp

    def log_density(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Log-density of the bridge marginal ``p_t = (1/n) sum_i N(t a_i, s_t^2 I)`` at x: (B,), with
        ``s_t^2 = (1 - t)^2`` (``+ t^2 sigma^2`` for smoothed atoms)."""
        xf, tt = self._prepare(x, t)
        s = self._stream(xf, tt, weighted=False)
        var = self._var(tt[:, 0])
        log_kernel = s.max_logit + torch.log(s.sum_exp) - xf.pow(2).sum(1) / (2.0 * var)
        return log_kernel - math.log(self.n) - 0.5 * self.dim * torch.log(2.0 * math.pi * var)


class SmoothedEmpiricalVelocity(EmpiricalVelocity):
    """Exact flow-matching velocity toward the Gaussian-smoothed training set (Mathematics §4.7).

    The data distribution is ``(1/n) sum_i N(a_i, sigma^2 I)``: every training item is an atom of width
    ``sigma``. Given atom i the path of Mathematics §1 has ``x_t ~ N(t a_i, s_t^2 I)`` with
    ``s_t^2 = (1 - t)^2 + t^2 sigma^2``, so the posterior weights are the closed form's softmax with
    ``(1 - t)^2`` replaced by ``s_t^2``, and

        v(x, t) = ((1 - t) m + (t sigma^2 - (1 - t)) x) / s_t^2,   m = sum_i w_i(x, t) a_i.

    ``sigma = 0`` is ``EmpiricalVelocity`` bit for bit; for ``sigma > 0`` the field is finite on all of
    [0, 1] (``v(x, 1) = x``), so every solver, Heun and RK4 included, may evaluate it at t = 1. The cost is
    the closed form's: two matrix products per call, float64 streaming log-sum-exp over chunks of atoms.

    Args:
        train: training set (n, ...), flattened to (n, d): the atoms' centres.
        sigma: width of each atom (>= 0), in the units of ``train``.
        dtype, chunk_size, device, fused: as for ``EmpiricalVelocity``.

    Raises:
        ValueError: ``sigma`` negative, not finite or not a number; or any ``EmpiricalVelocity`` argument error.

    Example:
        >>> field = SmoothedEmpiricalVelocity(torch.tensor([[1.0, 2.0]]), sigma=1.0)
        >>> field(torch.zeros(1, 2), torch.tensor(1.0))  # at t = 1 the field is x
        tensor([[0., 0.]])
    """

    def __init__(self, train: torch.Tensor, sigma: float, dtype: torch.dtype = torch.float64,
                 chunk_size: int = 4096, device: torch.device | str | None = None, fused: bool = False) -> None:
        sigma = as_float(sigma, "sigma", minimum=0.0)
        super().__init__(train, dtype=dtype, chunk_size=chunk_size, device=device, fused=fused)
        self.sigma = sigma
