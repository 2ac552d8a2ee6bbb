"""Study code of the page "Bring your own model" (``notebooks/06_bring_your_own_model.md``): torchcfm's own 2D
example trained with two of its matchers, for the straightness comparison of the page (Mathematics §2).

torchcfm's tutorial transports its 8-Gaussians source onto its two-moons target with ``MLP(dim=2,
time_varying=True)``; independent coupling (I-CFM) crosses conditional paths, so the learned flow curves, while
minibatch optimal transport (OT-CFM) pairs nearby points and its flow is nearly straight. Straightness
``KPE / (1/2 |x_1 - x_0|^2)`` (1 = straight at constant speed) measures the difference per sample.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

__all__ = ["MATCHERS", "TrainedCFM", "train_torchcfm_2d", "source_samples"]

#: page name -> torchcfm matcher class name
MATCHERS = {"I-CFM": "ConditionalFlowMatcher", "OT-CFM": "ExactOptimalTransportConditionalFlowMatcher"}


@dataclasses.dataclass
class TrainedCFM:
    """A torchcfm MLP trained on the 2D example. ``losses``: (steps,) training losses."""

    name: str
    model: torch.nn.Module
    losses: np.ndarray


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # torchcfm's samplers and POT draw from the global generators


def source_samples(n: int, seed: int) -> torch.Tensor:
    """(n, 2) draws of torchcfm's 8-Gaussians source (``torchcfm.utils.sample_8gaussians``), seeded."""
    from torchcfm.utils import sample_8gaussians

    _seed(seed)
    return sample_8gaussians(n)


def train_torchcfm_2d(name: str, *, steps: int, batch_size: int = 256, width: int = 64, lr: float = 1e-3,
                      sigma: float = 0.1, seed: int = 0) -> TrainedCFM:
    """Train torchcfm's ``MLP(dim=2, time_varying=True)`` with the matcher ``name`` (``"I-CFM"`` or ``"OT-CFM"``)
    exactly as torchcfm's 2D tutorial does: 8 Gaussians -> moons, Adam, loss ``mean((v(x_t, t) - u_t)^2)``.

    Seeds torch's and numpy's global generators with ``seed`` (torchcfm draws from them).
    """
    import torchcfm
    from torchcfm.models import MLP
    from torchcfm.utils import sample_8gaussians, sample_moons

    if name not in MATCHERS:
        raise ValueError(f"name must be one of {sorted(MATCHERS)}, got {name!r}")
    _seed(seed)
    matcher = getattr(torchcfm, MATCHERS[name])(sigma=sigma)
    model = MLP(dim=2, w=width, time_varying=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = np.empty(steps)
    for k in range(steps):
        optimizer.zero_grad()
        x0, x1 = sample_8gaussians(batch_size), sample_moons(batch_size)
        t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1)
        loss = torch.mean((model(torch.cat([xt, t[:, None]], dim=-1)) - ut) ** 2)
        loss.backward()
        optimizer.step()
        losses[k] = loss.item()
    return TrainedCFM(name, model.eval(), losses)
