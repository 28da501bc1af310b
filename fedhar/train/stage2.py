"""Stage 2 on the few labels, by ``stage2.head``: Cosmo's iterative fusion training, or a closed-form LDA head.

``iterative`` trains the fusion classifier (and, per ``encoder_mode``, the encoders) with
:func:`fedhar.train.finetune.finetune_iterative`. ``lda`` keeps the stage-1 encoders frozen
and fits a linear discriminant head from the labeled rows' class statistics (clean rows plus
``lda_passes`` augmented copies; :mod:`fedhar.train.class_stats`): the same head the default
federated stage 2 fits from the clients' summed statistics, here from the pooled labels. No
epochs, no learning rate, no last-epoch lottery; the few labels decide only class means and
one shared covariance.
"""

from __future__ import annotations

import time

import torch

from fedhar.data.dataset import HARDataset
from fedhar.models.encoders import encoder_out_shape
from fedhar.models.fusion_classifier import FusionClassifierModel
from fedhar.train.class_stats import class_feature_stats, feature_layout, fit_lda_head
from fedhar.train.config import FinetuneConfig
from fedhar.train.finetune import STAGE, finetune_iterative
from fedhar.train.history import EpochRecord, History
from fedhar.train.loop import evaluate_into

__all__ = ["run_stage2"]


def run_stage2(
    model: FusionClassifierModel,
    data: HARDataset,
    cfg: FinetuneConfig,
    seed: int,
    eval_data: HARDataset | None = None,
    device: str | torch.device | None = None,
) -> tuple[FusionClassifierModel, History]:
    """Fit stage 2 as ``cfg.head`` says; return the final model and its history.

    With ``lda`` the history holds one record (epoch 1: the fitted head, evaluated on
    ``eval_data``), the returned model is ``model``'s encoders with the new head, and
    ``device`` is not used (the statistics are computed where the model is, on the CPU).
    """
    if cfg.head == "iterative":
        return model, finetune_iterative(model, data, cfg, seed, eval_data=eval_data, device=device)
    started = time.perf_counter()  # lda: a closed form on a few hundred rows, on the CPU where the model lives
    layout = feature_layout({m: encoder_out_shape(enc) for m, enc in model.encoders.items()})
    stats = class_feature_stats(model, data, layout, data.info.num_classes, cfg.lda_passes, cfg.augment, seed)
    fitted = FusionClassifierModel(model.encoders, fit_lda_head(stats, layout, cfg.lda_shrinkage))
    history = History(STAGE)
    record = EpochRecord(1, STAGE, float("nan"), 0.0, 0.0, phase="lda")
    evaluate_into(record, fitted, eval_data, 1, 1, 1)
    record.seconds = time.perf_counter() - started
    history.append(record)
    return fitted, history
