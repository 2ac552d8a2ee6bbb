"""Metrics of Mathematics §5: memorisation (F_mem), local training support, FID and precision/recall (and the
sample-quality bundle of both), semantic strength, feature spaces, KPE groups, ROC analysis and
bootstrap uncertainty.

Example:
    >>> from kpe_lib.metrics import memorization_fraction, gap_ratio
    >>> res = memorization_fraction(samples, train)        # doctest: +SKIP
    >>> print(f"F_mem = {100 * res.value:.1f}% +- {100 * res.stderr:.1f}")   # doctest: +SKIP
"""
from kpe_lib.metrics.features import (FEATURE_SPACES, AutoencoderFeatures, ClassifierFeatures, FeatureSpace,
                                      HOGFeatures, InceptionFeatures, PCAFeatures, PixelFeatures, feature_space)
from kpe_lib.metrics.fid import (FeatureStats, FIDResult, FrechetReference, ReferenceStats, feature_statistics, fid,
                                 frechet_distance, inception_features, inception_path, inception_protocol,
                                 reference_statistics)
from kpe_lib.metrics.groups import GroupComparison, KPEGroups, compare_groups, kpe_groups
from kpe_lib.metrics.kid import KIDResult, kid, kid_with_ci
from kpe_lib.metrics.memorization import MemorizationResult, gap_ratio, memorization_fraction
from kpe_lib.metrics.neighbors import NeighborResult, nearest_neighbors, squared_distances
from kpe_lib.metrics.paired import PairedChange, paired_kid_change, paired_set_change
from kpe_lib.metrics.precision_recall import PRResult, precision_recall
from kpe_lib.metrics.quality import QualityResult, ReferenceSet, reference_set, sample_quality
from kpe_lib.metrics.roc import DetectorResult, detector_auroc, roc_auc
from kpe_lib.metrics.significance import McNemarResult, TwoSampleResult, holm, holm_reject, mann_whitney, mcnemar_exact, welch_test
from kpe_lib.metrics.semantic import ClipSemantics, SemanticResult, clip_scores_from_embeddings, semantic_scores
from kpe_lib.metrics.stats import BootstrapResult, SpearmanResult, bootstrap_ci, spearman_with_ci
from kpe_lib.metrics.support import SupportResult, kde_bandwidth, kde_support, knn_support

__all__ = [
    "AutoencoderFeatures", "BootstrapResult", "ClassifierFeatures", "FEATURE_SPACES", "FIDResult",
    "FeatureSpace", "FeatureStats", "FrechetReference", "HOGFeatures", "InceptionFeatures", "MemorizationResult", "NeighborResult",
    "PCAFeatures", "PRResult", "PixelFeatures", "ReferenceStats", "SemanticResult", "SpearmanResult", "SupportResult",
    "bootstrap_ci", "clip_scores_from_embeddings", "feature_space", "feature_statistics", "fid", "frechet_distance",
    "gap_ratio", "inception_features", "inception_path", "inception_protocol", "kde_bandwidth", "kde_support",
    "knn_support", "memorization_fraction", "nearest_neighbors", "precision_recall", "reference_statistics",
    "semantic_scores", "spearman_with_ci", "squared_distances",
    "ClipSemantics", "DetectorResult", "GroupComparison", "KPEGroups", "QualityResult", "ReferenceSet",
    "compare_groups", "detector_auroc", "kpe_groups", "reference_set", "roc_auc", "sample_quality",
    "KIDResult", "kid", "kid_with_ci", "PairedChange", "paired_kid_change", "paired_set_change", "McNemarResult",
    "TwoSampleResult", "holm", "holm_reject", "mann_whitney", "mcnemar_exact", "welch_test",
]
