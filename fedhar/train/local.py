"""One client's local training step in a federated round: the policy a Flower handler only wraps.

A federated client receives the global weights, trains on its own partition and replies its
weights and metrics. What it must decide along the way lives here, not in the Flower
adapter (clients/client_app.py): which global arrays its (possibly smaller) model takes,
how stage 2's encoder/classifier alternation continues across rounds, when a BatchNorm
classifier cannot train on too few labels, and which metrics the server expects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from fedhar import keys
from fedhar.data.partition import ClientPartition
from fedhar.errors import ConfigError
from fedhar.federated import build_finetune_model, build_pretrain_model
from fedhar.losses import CosmoFusionLoss, cosmo_or_unimodal_objective
from fedhar.models import ModelConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig
from fedhar.train.evaluate import evaluate
from fedhar.train.finetune import finetune_iterative, phase_of_epoch
from fedhar.train.pretrain import pretrain

__all__ = ["LocalResult", "can_finetune", "load_global", "local_finetune", "local_pretrain", "round_schedule"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalResult:
    """A client's trained model and the metrics its reply carries (``num-examples``, ``subject-id``, ...)."""

    model: torch.nn.Module
    metrics: dict[str, float | int]


def load_global(model: torch.nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Load the global arrays this (possibly smaller) model has; every one of its keys must be there.

    Raises
    ------
    ConfigError
        If the global arrays lack one of the model's keys (client and server model configs differ).
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(arrays))
    if missing:
        raise ConfigError(f"global model lacks {missing[:3]}; client and server model configs differ", "model")
    model.load_state_dict({k: torch.from_numpy(np.array(arrays[k])) for k in own}, strict=True)


def round_schedule(cfg: FinetuneConfig, freeze_encoders: bool, server_round: int, num_labeled: int) -> FinetuneConfig:
    """Continue the global encoder/classifier alternation across rounds (exact when local epochs % t_iter == 0).

    Also avoids a last batch of one sample (BatchNorm cannot train on it): with a few
    labels per client that happens often, e.g. 17 labels at batch 16.
    """
    if num_labeled > 1 and num_labeled % cfg.batch_size == 1:
        cfg = replace(cfg, batch_size=cfg.batch_size + 1)
    if freeze_encoders:  # one classifier phase over all local epochs
        return replace(cfg, t_iter=max(cfg.epochs, 1), first_phase="classifier")
    if cfg.epochs % cfg.t_iter:
        logger.warning("stage 2: %d local epochs is not a multiple of t_iter %d; phases restart each round",
                       cfg.epochs, cfg.t_iter)
    offset = max(server_round - 1, 0) * cfg.epochs
    return replace(cfg, first_phase=phase_of_epoch(offset, cfg.t_iter, cfg.first_phase))


def can_finetune(model: torch.nn.Module, num_labeled: int) -> bool:
    """Whether local fine-tuning is possible: at least one labeled row, two if a BatchNorm1d must train on them."""
    has_bn1d = any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    return num_labeled >= (2 if has_bn1d else 1)


def local_pretrain(part: ClientPartition, global_arrays: Mapping[str, np.ndarray], model_cfg: ModelConfig,
                   cfg: PretrainConfig, seed: int, device: torch.device | None = None,
                   fusion_loss: Mapping[str, Any] | None = None) -> LocalResult:
    """Stage 1 on one client: contrastive fusion (unimodal SimCLR with one modality) on its unlabeled rows.

    ``fusion_loss`` holds :class:`CosmoFusionLoss` keyword arguments (the method group's ``loss``).
    """
    model = build_pretrain_model(part.unlabeled.info, part.modalities, model_cfg)
    load_global(model, global_arrays)
    objective = cosmo_or_unimodal_objective(torch.Generator().manual_seed(seed),
                                            CosmoFusionLoss(**(fusion_loss or {}), copies=cfg.augment.views))
    history = pretrain(model, objective, part.unlabeled, cfg, seed=seed, progress=False, device=device)
    return LocalResult(model, {keys.NUM_EXAMPLES: part.num_unlabeled, keys.SUBJECT: part.subject,
                               keys.TRAIN_LOSS: float(history.records[-1].loss)})


def local_finetune(part: ClientPartition, global_arrays: Mapping[str, np.ndarray], model_cfg: ModelConfig,
                   cfg: FinetuneConfig, prior: Mapping[str, float], freeze_encoders: bool, server_round: int,
                   seed: int, device: torch.device | None = None) -> LocalResult:
    """Stage 2 on one client: iterative fusion fine-tuning on its labeled rows, then accuracy on its other rows.

    A client whose labels cannot train the classifier (one row and a BatchNorm) replies the
    global weights, its honest example count and no loss, with a warning.
    """
    model = build_finetune_model(part.labeled.info, part.modalities, model_cfg, dict(prior))
    load_global(model, global_arrays)
    metrics: dict[str, float | int] = {keys.NUM_EXAMPLES: part.num_labeled, keys.SUBJECT: part.subject}
    if can_finetune(model, part.num_labeled):
        history = finetune_iterative(model, part.labeled, round_schedule(cfg, freeze_encoders, server_round,
                                                                         part.num_labeled),
                                     seed=seed, progress=False, device=device)
        metrics[keys.TRAIN_LOSS] = float(history.records[-1].loss)
    else:
        logger.warning("subject %d: %d labeled row(s) cannot train a classifier with BatchNorm (batch statistics of "
                       "one sample); skipping this round's fine-tuning and returning the global weights (set "
                       "model.classifier.batch_norm=false to let it train)", part.subject, part.num_labeled)
    if len(part.unlabeled):
        own = evaluate(model, part.unlabeled, device=device)
        metrics[keys.ACCURACY] = float(own.accuracy)
        metrics[keys.MACRO_F1] = float(own.macro_f1)
    return LocalResult(model, metrics)
