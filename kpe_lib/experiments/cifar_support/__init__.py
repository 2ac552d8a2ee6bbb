"""The study of ``notebooks/03_cifar_support.md``: kinetic path energy against local training support on
CIFAR-10 (Mathematics §2, §5, §6).

The paper's claim (Mathematics §6): at NFE 150, per-sample KPE is rank-correlated with the local density of
the training set around the generated sample (Spearman rho ~ -0.65 with kNN, -0.64 with a KDE). The package
holds the chapter's computations, in the order the chapter runs them:

* :mod:`~kpe_lib.experiments.cifar_support.correlations`: the KPE-vs-support table itself
  (:func:`support_correlations`), the partial rank correlation and the test records behind the
  scoreboard rows (:func:`support_tests`; the verdicts come from :mod:`kpe_lib.book.scoreboard`);
* :mod:`~kpe_lib.experiments.cifar_support.setup`: images, the flow model (shared with chapter 5), the main samples;
* :mod:`~kpe_lib.experiments.cifar_support.spaces`: the feature spaces and the features of samples and training images;
* :mod:`~kpe_lib.experiments.cifar_support.analysis`: partial correlations, FID / precision / recall, the NFE
  and k / bandwidth robustness, and the results record;
* :mod:`~kpe_lib.experiments.cifar_support.norm`: the norm controls of the claim and their reading;
* :mod:`~kpe_lib.experiments.cifar_support.readings`: the closing paragraph, with the model's regime check;
* :mod:`~kpe_lib.experiments.cifar_support.figures`: the chapter's figures.
"""
from kpe_lib.experiments.cifar_support.correlations import (BANDWIDTH_RULES, ESTIMATORS, SpaceFeatures,
                                                            SupportCorrelation, SupportStudy, partial_spearman,
                                                            support_correlations, support_tests)
from kpe_lib.experiments.cifar_support.norm import NormControl, norm_controls, norm_reading
from kpe_lib.experiments.cifar_support.setup import (CifarData, FlowModel, MainSamples, load_cifar_splits,
                                                     loss_window, sample_main, shared_model_name, to_unit,
                                                     train_flow_model, unet_config)
from kpe_lib.experiments.cifar_support.spaces import (FeatureSet, SpaceSettings, build_space, encode_spaces,
                                                      inception_reference)
from kpe_lib.experiments.cifar_support.analysis import (NFERobustness, PartialCorrelations, SampleQuality,
                                                        SupportSweep, chapter_metrics, chapter_protocol,
                                                        inception_quality, nfe_robustness, partial_correlations,
                                                        support_sweep)
from kpe_lib.experiments.cifar_support.readings import FID_RATIO_MAX, RECALL_MIN, reading
from kpe_lib.experiments.cifar_support.figures import (extremes_figure, kpe_figure, loss_figure, support_figure,
                                                       sweep_figure)

__all__ = ["BANDWIDTH_RULES", "ESTIMATORS", "SpaceFeatures", "SupportCorrelation", "SupportStudy",
           "NormControl", "norm_controls", "norm_reading", "partial_spearman", "support_correlations", "support_tests",
           "CifarData", "FeatureSet", "FlowModel", "MainSamples", "SpaceSettings", "build_space", "encode_spaces",
           "inception_reference", "load_cifar_splits", "loss_window", "sample_main", "shared_model_name", "to_unit",
           "train_flow_model", "unet_config",
           "NFERobustness", "PartialCorrelations", "SampleQuality", "SupportSweep", "chapter_metrics",
           "chapter_protocol", "inception_quality", "nfe_robustness", "partial_correlations", "reading",
           "support_sweep", "FID_RATIO_MAX", "RECALL_MIN",
           "extremes_figure", "kpe_figure", "loss_figure", "support_figure", "sweep_figure"]
