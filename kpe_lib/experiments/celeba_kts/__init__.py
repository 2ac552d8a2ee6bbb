"""The KTS benchmark on a trained image flow: sampler configurations, F_mem, KPE and FID (Mathematics §3, 5, 6).

The study of ``notebooks/04_celeba_kts.md``. One trained model, one fixed batch of noise, many sampler
configurations: plain flow matching (FM), the KTS variants of the paper's CelebA table and ablations
(Mathematics §6), and the energy-aware landing (``kpe_lib.energy_aware``). Because every configuration
starts from the *same* noise, differences between configurations are paired.

- :mod:`~kpe_lib.experiments.celeba_kts.configs`: one configuration (:class:`SamplerSpec`), its run and
  measurements (:func:`run_config`, :class:`ConfigEval`), paired changes of F_mem and FID;
- :mod:`~kpe_lib.experiments.celeba_kts.runs`: the memorising UNet and the sweeps (tau_split, forms,
  solver x NFE x grid, energy-aware landings);
- :mod:`~kpe_lib.experiments.celeba_kts.tables`: FIDs with their protocol, summary tables, the FID-F_mem
  plane, the metrics and protocol of the results file;
- :mod:`~kpe_lib.experiments.celeba_kts.readings`: the paired tests behind the scoreboard rows and what the
  budget controls say (shaping or stopping short);
- :mod:`~kpe_lib.experiments.celeba_kts.testbed`: the training-free smoothed-empirical testbed at the paper's
  size;
- :mod:`~kpe_lib.experiments.celeba_kts.figures`: the chapter's figures.

Example:
    >>> spec = SamplerSpec("balanced", KTS(alpha0=0.01, beta0=0.01))
    >>> ev = run_config(model, x0, spec, train)                     # doctest: +SKIP
    >>> ev.memorization.value, ev.kpe.mean()                         # doctest: +SKIP
"""
from kpe_lib.experiments.celeba_kts.configs import (ConfigEval, PairedFidChanges, SamplerSpec, fid_of_images,
                                                    paired_fid_change, paired_fmem_change, pareto_mask, run_config,
                                                    subset, summary_row, to_unit_range)
from kpe_lib.experiments.celeba_kts.figures import (budget_figure, energy_split_figure, fmem_over_training_figure,
                                                    forms_figure, gains_figure, late_power_figure, neighbors_figure,
                                                    plane_figure, regime_figure, solver_figure, tau_budget_figure,
                                                    testbed_figure, training_images_figure)
from kpe_lib.experiments.celeba_kts.runs import (EnergyAwareRuns, EnergySplit, SolverGrid, checkpoint_configs,
                                                 control_specs, energy_split, fmem_over_training, form_specs,
                                                 main_specs,
                                                 run_configs, run_energy_aware, run_solver_grid, sampling_velocity,
                                                 tau_specs, train_checkpoints, unet_config)
from kpe_lib.experiments.celeba_kts.readings import BudgetReading, budget_reading, chapter_tests
from kpe_lib.experiments.celeba_kts.tables import (CONFIG_KEYS, CONTROL_KEYS, EA_COLUMNS, FORM_COLUMNS,
                                                   MAIN_COLUMNS, SUBSET_COLUMNS, TAU_COLUMNS, FidBench, chapter_metrics,
                                                   chapter_protocol, config_metrics, damping_rows,
                                                   detector_record, kid_metrics,
                                                   plane_table, select_columns,
                                                   steps_table, summary_table)
from kpe_lib.experiments.celeba_kts.testbed import pick_sigma, sigma_sweep, testbed_velocity
from kpe_lib.shaping import KTS

__all__ = ["SamplerSpec", "ConfigEval", "run_config", "paired_fmem_change", "to_unit_range", "fid_of_images",
           "paired_fid_change", "PairedFidChanges", "pareto_mask", "summary_row", "subset",
           "unet_config", "checkpoint_configs", "train_checkpoints", "sampling_velocity", "fmem_over_training",
           "main_specs", "control_specs", "tau_specs", "form_specs", "run_configs", "SolverGrid", "run_solver_grid", "EnergyAwareRuns",
           "run_energy_aware", "EnergySplit", "energy_split",
           "FidBench", "summary_table", "select_columns", "MAIN_COLUMNS", "SUBSET_COLUMNS", "TAU_COLUMNS",
           "FORM_COLUMNS", "EA_COLUMNS", "steps_table", "damping_rows", "plane_table", "config_metrics",
           "chapter_metrics", "chapter_protocol", "kid_metrics", "chapter_tests", "CONFIG_KEYS", "CONTROL_KEYS",
           "detector_record", "BudgetReading", "budget_reading", "testbed_velocity", "sigma_sweep", "pick_sigma",
           "training_images_figure", "fmem_over_training_figure", "regime_figure", "budget_figure",
           "tau_budget_figure", "testbed_figure", "gains_figure", "neighbors_figure",
           "energy_split_figure", "forms_figure", "solver_figure", "late_power_figure", "plane_figure"]
