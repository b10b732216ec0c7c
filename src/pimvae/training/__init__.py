"""Training on Lightning: ``fit(model, objective, train, val, config, run_dir) -> FitResult``.

The core (model, objectives, data) never imports this package; it only optimises and logs. See
``docs/training.md`` for configs, the command line, checkpoints and multi-device runs.
"""

from ..config import TrainConfig
from .checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint, save_checkpoint
from .fit import FitResult, checkpoint_path, fit, fit_config
from .logs import read_metrics
from .module import (NonFiniteError, ShardedBatches, TrainingModule, WarmupCosine, clip_grad_norm, derive_seed,
                     kl_weight)

__all__ = ["fit", "fit_config", "FitResult", "TrainConfig", "TrainingModule", "NonFiniteError", "CheckpointError",
           "load_checkpoint", "save_checkpoint", "checkpoint_path", "read_metrics", "AtomicCheckpointIO",
           "ShardedBatches", "WarmupCosine", "clip_grad_norm", "derive_seed", "kl_weight"]
