"""kpe_lib: kinetic path energy (KPE) and kinetic trajectory shaping (KTS) for flow matching.

Companion library to Li et al., "A Kinetic Energy Perspective of Flow Matching" (ICML 2026).
Section numbers such as "SPEC 2" refer to the project's specification of the paper's math.
"""
from kpe_lib.grids import time_grid
from kpe_lib.shaping import KTS
from kpe_lib.sampling import SampleResult, sample
from kpe_lib.closed_form import EmpiricalVelocity

__all__ = ["time_grid", "KTS", "sample", "SampleResult", "EmpiricalVelocity"]
__version__ = "0.1.0"
