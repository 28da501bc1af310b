"""Training loops (pretraining, iterative fusion fine-tuning, supervised), evaluation, checkpoints."""

from fedhar.train.augment import AugmentConfig, build_augmenter
from fedhar.train.batches import Batch, TensorData, iterate_batches, to_tensors
from fedhar.train.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from fedhar.train.config import FinetuneConfig, OptimConfig, PretrainConfig, SupervisedConfig
from fedhar.train.device import device_name, model_device, on_device, resolve_device
from fedhar.train.evaluate import EvalResult, evaluate, predict, score_predictions
from fedhar.train.finetune import finetune_iterative, phase_of_epoch, set_phase
from fedhar.train.history import EpochRecord, History
from fedhar.train.modulation import modulation_coefficients
from fedhar.train.pretrain import Objective, pretrain
from fedhar.train.seeding import derive_seed, seed_everything
from fedhar.train.supervised import train_supervised

__all__ = [
    "AugmentConfig",
    "Batch",
    "Checkpoint",
    "CheckpointError",
    "EpochRecord",
    "EvalResult",
    "FinetuneConfig",
    "History",
    "Objective",
    "OptimConfig",
    "PretrainConfig",
    "SupervisedConfig",
    "TensorData",
    "build_augmenter",
    "derive_seed",
    "device_name",
    "evaluate",
    "finetune_iterative",
    "iterate_batches",
    "load_checkpoint",
    "model_device",
    "modulation_coefficients",
    "on_device",
    "phase_of_epoch",
    "predict",
    "pretrain",
    "resolve_device",
    "save_checkpoint",
    "score_predictions",
    "seed_everything",
    "set_phase",
    "to_tensors",
    "train_supervised",
]
