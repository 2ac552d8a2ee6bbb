"""The book's figures, one package: the style and shared plots (:mod:`.common`), the closed-form chapter's
panels (:mod:`.efm`) and the trajectory-shaping chapter's panels (:mod:`.kts`).

``from kpe_lib.plotting import set_book_style, image_grid, ...`` reads the shared plots; the chapter panels
are imported from their modules (``from kpe_lib.plotting.kts import pareto_plot``).
"""
from kpe_lib.plotting.common import (BOOK_STYLE, GROUP_COLORS, energy_profile_plot, gain_plot, image_grid,
                                     kpe_distribution_plot, make_grid, noise_map_plot, save_figure,
                                     set_book_style, support_scatter, trajectory_plot)

__all__ = ["BOOK_STYLE", "GROUP_COLORS", "set_book_style", "trajectory_plot", "kpe_distribution_plot",
           "noise_map_plot", "energy_profile_plot", "gain_plot", "support_scatter", "make_grid",
           "image_grid", "save_figure"]
