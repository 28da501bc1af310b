"""Stage 1: self-supervised pretraining of a model with any objective(model, batch) -> loss."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from torch import nn

from fedhar.data.dataset import HARDataset
from fedhar.train.augment import build_augmenter
from fedhar.train.batches import TensorData, to_tensors
from fedhar.train.config import PretrainConfig
from fedhar.train.device import on_device
from fedhar.train.history import EpochRecord, History
from fedhar.train.loop import build_optimizer, build_scheduler, epoch_bar, finish_epoch, make_step, run_epoch
from fedhar.train.seeding import seed_everything

__all__ = ["Objective", "pretrain"]

Objective = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]
"""``objective(model, batch) -> scalar loss``; ``batch`` maps modality -> ``(B, *shape)``."""

STAGE = "pretrain"


def pretrain(
    model: nn.Module,
    objective: Objective,
    data: HARDataset | TensorData,
    cfg: PretrainConfig,
    seed: int,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> History:
    """Train ``model`` to minimise ``objective`` on unlabeled ``data`` (labels are never read).

    Cosmo's stage 1: SGD (lr 0.01, momentum 0.9, weight decay 1e-4), lr x0.9 at epochs
    100/200/300, batch 32, 300 epochs (the defaults of :class:`PretrainConfig`).

    Parameters
    ----------
    model
        Trained in place (every parameter with ``requires_grad``).
    objective
        ``objective(model, batch) -> loss`` (Cosmo fusion, CMC, CPC, ...).
    data
        Unlabeled samples; all modalities present are put in each batch.
    cfg
        Epochs, batch size, optimizer and schedule. ``cfg.drop_last`` drops the last
        incomplete batch (a contrastive batch of one sample has no negatives).
    seed
        Seeds weights-independent randomness (shuffling, dropout): same seed, same result.
    progress
        Show a tqdm bar (default: ``cfg.progress``).
    device
        Train on this device (:func:`fedhar.train.device.resolve_device`): the model and
        the data move there for the run and the model moves back afterwards, so a CPU
        model comes back on the CPU. ``None``: where the model is.

    Returns
    -------
    History
        One record per epoch (mean loss, lr, seconds).
    """
    seed_everything(seed)
    rng = np.random.default_rng(seed)
    augment = build_augmenter(cfg.augment)
    history = History(STAGE)
    with on_device(model, device) as target:
        tensors = to_tensors(data, device=target)
        optimizer = build_optimizer((p for p in model.parameters() if p.requires_grad), cfg.optim)
        scheduler = build_scheduler(optimizer, cfg.optim)
        bar = epoch_bar(cfg.epochs, STAGE, cfg.progress if progress is None else progress)

        step = make_step(optimizer, lambda inputs, _labels: objective(model, inputs))
        groups = None
        if cfg.batching == "subject":
            if not isinstance(data, HARDataset):
                raise ValueError("stage1.batching=subject needs the HARDataset (its subjects), not bare tensors")
            groups = np.asarray(data.subjects)

        model.train()
        for epoch in bar:
            started = time.perf_counter()
            lr = optimizer.param_groups[0]["lr"]
            loss = run_epoch(step, tensors, cfg.batch_size, rng, drop_last=cfg.drop_last, augment=augment,
                             groups=groups)
            scheduler.step()
            finish_epoch(history, EpochRecord(epoch + 1, STAGE, loss, lr, 0.0), started, bar, cfg.log_every)
    return history
