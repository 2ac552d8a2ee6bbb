"""Analysis of the empirical flow matching (EFM) closed form: the terminal spike, posterior collapse,
KTS against memorisation, late energy as a detector, and the energy-density relation (Mathematics §2-5);
the study of ``notebooks/02_efm_memorization.md``.

Everything here follows from the closed form of Mathematics §4,
``v*(x, t) = sum_i w_i (a_i - x) / (1 - t)`` with posterior weights ``w_i``:

* **Speed envelope.** ``v*`` is a convex combination of ``(a_i - x) / (1 - t)``, so
  ``||v*|| <= max_i ||a_i - x|| / (1 - t)``: the 1/(1 - t) terminal spike any state suffers unless it is
  within O(1 - t) of the atom its weights collapse onto (the collapsed limit ``||a_k - x|| / (1 - t)``).
* **Collapsed paths under Euler and KTS.** Once ``w_k = 1`` the field is linear,
  ``v = (a_k - x) / (1 - t)``, and the shaped Euler step ``x <- x + eta dt v`` multiplies the displacement
  ``e = a_k - x`` by ``1 - eta(t_i) dt_i / (1 - t_i)`` exactly. With ``eta = 1`` the last factor is 0 (the
  last step lands on the atom: a copy); a soft landing leaves ``(1 - eta(t_{N-1}))`` of the displacement.
* **Posterior dominance.** With ``eps = (x - t a_k) / (1 - t)`` and ``C_t = log n + d/2 log(2 pi (1 - t)^2)``,
  exactly ``-log p_t(x) = C_t + ||eps||^2 / 2 + log w_k``, and when ``w_k -> 1``
  ``||v*||^2 -> ||a_k - eps||^2 = 2 (-log p_t(x)) - 2 C_t + ||a_k||^2 - 2 <a_k, eps>``:
  affine in ``-log p_t`` with slope 2; the atom term ``||a_k||^2 - 2 <a_k, eps>`` is the scatter.

Modules: :mod:`.analysis` (the formulas above along sampled paths), :mod:`.dominance` (the
energy-density check), :mod:`.study` (the chapter's stages: data, paths, KTS sweep, CIFAR-10),
:mod:`.detectors` (late energy against copies), :mod:`.figures`, :mod:`.results` (glue values, metrics
and protocol of the results file) and :mod:`.paired` (the paired tests behind the chapter's scoreboard
rows). Everything is re-exported here.

Example:
    >>> import torch
    >>> from kpe_lib import time_grid, KTS
    >>> f = displacement_factors(time_grid(4), KTS())   # eta = 1: the last Euler step lands on the atom
    >>> [round(float(v), 6) for v in f]
    [1.0, 0.75, 0.5, 0.25, 0.0]
"""
from kpe_lib.experiments.efm_memorization.analysis import (CollapsedPath, Gain, PathDiagnostics, StateRecorder,
                                                           collapsed_path, commit_time, displacement_factors,
                                                           path_diagnostics, predicted_memorized)
from kpe_lib.experiments.efm_memorization.dominance import (AffineFit, DominanceData, EnergyDensity,
                                                            density_display, dominance_data, dominance_fit,
                                                            energy_density_study, log_normalizer, shell_points)
from kpe_lib.experiments.efm_memorization.study import (ChapterData, CifarStudy, CollapseCheck, PathStudy,
                                                        RecordSteps, SweepResult, cifar_study, collapse_check,
                                                        dataset_row, kts_configs, kts_sweep, landing_form_scale,
                                                        load_data, record_steps, rms, run_paths, sweep_display)
from kpe_lib.experiments.efm_memorization.detectors import (SCORE_NAMES, detector_aurocs, detector_populations,
                                                            detector_table)
from kpe_lib.experiments.efm_memorization.figures import (copies_figure, density_figure, detector_figure,
                                                          path_figure, sweep_figure)
from kpe_lib.experiments.efm_memorization.paired import (fmem_change, fmem_changes, paper_landing_points,
                                                         verdict_glue)
from kpe_lib.experiments.efm_memorization.results import chapter_metrics, chapter_protocol, reading_values

__all__ = [
    # analysis
    "Gain", "displacement_factors", "CollapsedPath", "collapsed_path", "predicted_memorized", "PathDiagnostics",
    "path_diagnostics", "StateRecorder", "commit_time",
    # dominance
    "shell_points", "log_normalizer", "AffineFit", "DominanceData", "dominance_data", "dominance_fit",
    "EnergyDensity", "energy_density_study", "density_display",
    # study
    "rms", "ChapterData", "load_data", "RecordSteps", "record_steps", "PathStudy", "run_paths", "CollapseCheck",
    "collapse_check", "landing_form_scale", "kts_configs", "SweepResult", "kts_sweep", "sweep_display",
    "CifarStudy", "cifar_study", "dataset_row",
    # detectors
    "SCORE_NAMES", "detector_populations", "detector_aurocs", "detector_table",
    # figures and results
    "path_figure", "sweep_figure", "copies_figure", "detector_figure", "density_figure",
    "reading_values", "chapter_metrics", "chapter_protocol",
    # the tests behind the scoreboard rows
    "fmem_change", "fmem_changes", "paper_landing_points", "verdict_glue",
]
