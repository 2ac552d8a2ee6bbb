"""Chapter 1 study (``notebooks/01_kpe_2d.md``): kinetic path energy on four 2D sets.

* :mod:`.study`: train one MLP per set, sample, check the KPE identities (Mathematics §2), KPE statistics,
  noise-plane maps, decile split of the per-step energy, Spearman correlation with local support
  (Mathematics §5) and the summary table;
* :mod:`.kts_efm`: KTS against plain sampling (Mathematics §3) and the empirical closed form against an MLP
  fitted to the same points (Mathematics §4);
* :mod:`.figures`: the chapter's figure rows.

Example:
    >>> import torch
    >>> from kpe_lib.experiments.kpe_2d import noise_grid, straight_cost
    >>> noise_grid(2, 1.0).tolist()
    [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [1.0, 1.0]]
    >>> straight_cost(torch.tensor([[3.0, 4.0]]), torch.zeros(1, 2)).item()
    12.5
"""
from __future__ import annotations

from kpe_lib.experiments.kpe_2d.figures import *  # noqa: F401,F403
from kpe_lib.experiments.kpe_2d.figures import __all__ as _figures
from kpe_lib.experiments.kpe_2d.kts_efm import *  # noqa: F401,F403
from kpe_lib.experiments.kpe_2d.kts_efm import __all__ as _kts_efm
from kpe_lib.experiments.kpe_2d.study import *  # noqa: F401,F403
from kpe_lib.experiments.kpe_2d.study import __all__ as _study

__all__ = [*_study, *_kts_efm, *_figures]
