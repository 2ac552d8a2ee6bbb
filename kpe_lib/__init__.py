"""kpe_lib: kinetic path energy (KPE) and kinetic trajectory shaping (KTS) for flow matching.

Companion library to Li et al., "A Kinetic Energy Perspective of Flow Matching" (ICML 2026). Section
numbers such as "Mathematics §2" refer to the book's page *The mathematics* (``book/mathematics.md``).

The package has four tiers, each importing only the ones before it:

1. the core, the modules at this level (grids, KTS gains and their time budget, solvers, the sampling loop and
   its path diagnostics, the empirical closed form and its smoothed version, the reference integrator, adapters,
   acceleration, the energy-aware landing): torch and tqdm only (pandas for the optional DataFrame export);
2. building blocks: :mod:`kpe_lib.data`, :mod:`kpe_lib.models`, :mod:`kpe_lib.training`,
   :mod:`kpe_lib.metrics`, :mod:`kpe_lib.plotting`, :mod:`kpe_lib.integrations` (torchcfm, diffusers);
3. chapter studies: :mod:`kpe_lib.experiments` (one module per chapter that needs one; not public API);
4. the book machinery: :mod:`kpe_lib.book` (scales, parameters, chapter context, results, scoreboard,
   generated pages, the runner and ``python -m kpe_lib``).

Importing ``kpe_lib`` changes no global state (no warning filters, no thread counts, no seeds).
"""
from kpe_lib.adapters import ReversedTime, TimeFirst
from kpe_lib.budget import (BudgetControls, ConstantGain, RenormalisedGain, budget_controls, budget_matched_constant,
                            discrete_time_budget, matched_forms, phase_budgets, time_budget)
from kpe_lib.closed_form import EmpiricalVelocity, SmoothedEmpiricalVelocity
from kpe_lib.grids import time_grid
from kpe_lib.sampling import NonFiniteError, SampleResult, sample
from kpe_lib.shaping import KTS

__all__ = ["time_grid", "KTS", "sample", "SampleResult", "NonFiniteError", "EmpiricalVelocity",
           "SmoothedEmpiricalVelocity", "TimeFirst", "ReversedTime", "time_budget", "discrete_time_budget",
           "ConstantGain", "RenormalisedGain", "BudgetControls", "budget_matched_constant", "budget_controls",
           "phase_budgets", "matched_forms"]
__version__ = "0.1.0"
