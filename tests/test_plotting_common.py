"""Figures that read: a log axis keeps labelled ticks however short its range (issue 20)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from kpe_lib.plotting.common import energy_profile_plot


def _labels(ax) -> list[str]:
    ax.figure.canvas.draw()
    ticks = ax.yaxis.get_majorticklabels() + ax.yaxis.get_minorticklabels()
    lo, hi = ax.get_ylim()
    return [t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[1] <= hi]


@pytest.mark.parametrize("lo, hi", [(1.2, 4.0), (30.0, 80.0), (1e-3, 1e2)])
def test_energy_profile_has_y_tick_labels(lo, hi):
    t = torch.linspace(0, 0.99, 50)
    energy = torch.from_numpy(np.geomspace(lo, hi, 50)[:, None] * np.ones((1, 8)))
    fig, ax = plt.subplots()
    energy_profile_plot(t, energy, ax=ax)
    labels = _labels(ax)
    plt.close(fig)
    assert len(labels) >= 2, f"range {lo}-{hi}: y labels {labels}"
