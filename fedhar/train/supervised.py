"""End-to-end supervised training of a classifier ``model(batch) -> logits`` with cross-entropy."""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from fedhar.data.dataset import HARDataset
from fedhar.train.augment import build_augmenter
from fedhar.train.batches import to_tensors
from fedhar.train.config import SupervisedConfig
from fedhar.train.device import on_device
from fedhar.train.history import EpochRecord, History
from fedhar.train.loop import (
    build_optimizer,
    build_scheduler,
    epoch_bar,
    evaluate_into,
    finish_epoch,
    make_step,
    run_epoch,
)
from fedhar.train.seeding import seed_everything

__all__ = ["train_supervised"]

STAGE = "supervised"


def train_supervised(
    model: nn.Module,
    data: HARDataset,
    cfg: SupervisedConfig,
    seed: int,
    eval_data: HARDataset | None = None,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> History:
    """Train every parameter of ``model`` on labeled ``data`` (DeepSense, AttnSense, unimodal).

    Parameters
    ----------
    model
        Maps ``{modality: (B, *shape)}`` to logits ``(B, K)``; trained in place.
    data
        Labeled samples; the modalities present are the model's inputs.
    cfg
        Epochs, batch size, optimizer (Adam 1e-3 by default), schedule, ``eval_every``.
    seed
        Seeds shuffling and dropout.
    eval_data
        Evaluated every ``cfg.eval_every`` epochs and at the last epoch (``test_accuracy``,
        ``test_macro_f1`` in the records); never used for training or model selection.
    progress
        Show a tqdm bar (default: ``cfg.progress``).
    device
        Train (and evaluate) on this device; the model moves back afterwards (see
        :func:`fedhar.train.pretrain.pretrain`). ``None``: where the model is.

    Returns
    -------
    History
        One record per epoch.
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    augment = build_augmenter(cfg.augment)
    criterion = nn.CrossEntropyLoss()
    history = History(STAGE)
    with on_device(model, device) as target:
        tensors = to_tensors(data, device=target)
        optimizer = build_optimizer((p for p in model.parameters() if p.requires_grad), cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim)
        bar = epoch_bar(cfg.epochs, STAGE, cfg.progress if progress is None else progress)

        step = make_step(optimizer, lambda inputs, labels: criterion(model(inputs), labels))

        for epoch in bar:
            started = time.perf_counter()
            model.train()
            lr = optimizer.param_groups[0]["lr"]
            loss = run_epoch(step, tensors, cfg.batch_size, rng, augment=augment)
            scheduler.step()
            record = EpochRecord(epoch + 1, STAGE, loss, lr, 0.0)
            evaluate_into(record, model, eval_data, epoch + 1, cfg.epochs, cfg.eval_every)
            finish_epoch(history, record, started, bar, cfg.log_every)
    return history
