"""kpe_lib: kinetic path energy (KPE) and kinetic trajectory shaping (KTS) for flow matching.

Companion library to Li et al., "A Kinetic Energy Perspective of Flow Matching" (ICML 2026).
Section numbers such as "SPEC 2" refer to the project's specification of the paper's math.
"""
import warnings

# tqdm.auto warns once per kernel that ipywidgets is missing; the library's bars are text bars (and off
# inside executed chapters), so the warning only clutters the book's first output cell.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

from kpe_lib.grids import time_grid  # noqa: E402
from kpe_lib.shaping import KTS  # noqa: E402
from kpe_lib.sampling import SampleResult, sample  # noqa: E402
from kpe_lib.closed_form import EmpiricalVelocity  # noqa: E402

__all__ = ["time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity"]
__version__ = "0.1.0"
