"""Training of the companion's networks: the CFM loss, the flow-matching loop with EMA and checkpoints,
a configuration-keyed model cache, and the image classifier used for semantic scores (Mathematics §1, §5)."""
from kpe_lib.training.cache import cache_key, cached_model, default_cache_dir
from kpe_lib.training.checkpoint import CheckpointError, data_fingerprint
from kpe_lib.training.classifier import ClassifierResult, ClassifierTrainConfig, train_classifier
from kpe_lib.training.config import TrainConfig, TrainResult
from kpe_lib.training.loop import train_flow_matching
from kpe_lib.training.loss import cfm_loss

__all__ = ["TrainConfig", "TrainResult", "train_flow_matching", "cfm_loss", "cached_model", "cache_key",
           "default_cache_dir", "CheckpointError", "data_fingerprint", "ClassifierTrainConfig",
           "ClassifierResult", "train_classifier"]
