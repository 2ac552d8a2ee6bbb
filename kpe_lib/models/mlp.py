"""A time-conditioned MLP velocity field for the 2D chapters (Mathematics §1)."""
from __future__ import annotations

import torch
from torch import nn

from kpe_lib.models.common import Described, expand_time, sinusoidal_embedding

TIME_EMBEDS = ("sinusoidal", "linear")


class TimeMLP(Described):
    """``v_theta(x, t)`` for points in R^d: an MLP on ``[x, embed(t)]`` with SiLU activations.

    ``depth`` counts the linear layers (so ``depth - 1`` hidden layers of width ``hidden``). With the
    defaults (d = 2, hidden 256, depth 4, 32-wide sinusoidal embedding) it has 141,058 parameters.

    Args:
        dim: d, the data dimension.
        hidden: width of the hidden layers.
        depth: number of linear layers (>= 2).
        time_embed: ``"sinusoidal"`` (sin/cos of 1000 t at ``embed_dim / 2`` frequencies) or
            ``"linear"`` (t itself appended to x).
        embed_dim: width of the sinusoidal embedding (ignored for ``"linear"``).

    Example:
        >>> net = TimeMLP()
        >>> net(torch.zeros(5, 2), 0.3).shape
        torch.Size([5, 2])
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 4, time_embed: str = "sinusoidal",
                 embed_dim: int = 32) -> None:
        super().__init__()
        if dim < 1 or hidden < 1:
            raise ValueError(f"dim and hidden must be positive integers; got dim={dim}, hidden={hidden}")
        if depth < 2:
            raise ValueError(f"depth counts linear layers and must be >= 2; got {depth}")
        if time_embed not in TIME_EMBEDS:
            raise ValueError(f"time_embed must be one of {TIME_EMBEDS}; got {time_embed!r}")
        self.config = {"kind": "mlp", "dim": dim, "hidden": hidden, "depth": depth,
                       "time_embed": time_embed, "embed_dim": embed_dim}
        self.dim, self.time_embed, self.embed_dim = dim, time_embed, embed_dim
        t_width = embed_dim if time_embed == "sinusoidal" else 1
        widths = [dim + t_width] + [hidden] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(w_in, w_out))
            if i < depth - 1:
                layers.append(nn.SiLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """Velocity at ``x`` (B, d) and time ``t`` (scalar or (B,)); returns (B, d)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}); got {tuple(x.shape)}")
        tb = expand_time(t, x.shape[0], x.device)
        emb = sinusoidal_embedding(tb, self.embed_dim) if self.time_embed == "sinusoidal" else tb[:, None]
        return self.net(torch.cat([x, emb.to(x.dtype)], dim=1))
