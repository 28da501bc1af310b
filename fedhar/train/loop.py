"""Pieces shared by the training loops: optimizers, lr schedule, one epoch, progress, evaluation."""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from fedhar.data.dataset import HARDataset
from fedhar.train.augment import Augmenter
from fedhar.train.batches import TensorData, iterate_batches
from fedhar.train.config import OptimConfig
from fedhar.train.evaluate import evaluate
from fedhar.train.history import EpochRecord, History

__all__ = [
    "TEST_ACCURACY",
    "TEST_MACRO_F1",
    "StepFn",
    "build_optimizer",
    "build_scheduler",
    "epoch_bar",
    "evaluate_into",
    "finish_epoch",
    "lr_at",
    "make_step",
    "run_epoch",
    "set_lr",
]

logger = logging.getLogger(__name__)

StepFn = Callable[[dict[str, torch.Tensor], torch.Tensor], float]
"""One optimisation step on a batch ``(inputs, labels)``; returns the batch loss."""

TEST_ACCURACY = "test_accuracy"
TEST_MACRO_F1 = "test_macro_f1"


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (weight decay) over ``params``, as ``cfg`` says."""
    params = list(params)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig) -> torch.optim.lr_scheduler.MultiStepLR:
    """Multiply the lr by ``cfg.gamma`` at each of ``cfg.milestones`` (stepped once per epoch)."""
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma)


def lr_at(cfg: OptimConfig, epoch: int) -> float:
    """Learning rate during 0-based ``epoch`` under the step schedule (same as MultiStepLR)."""
    return cfg.lr * cfg.gamma ** bisect.bisect_right(list(cfg.milestones), epoch)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_step(
    optimizer: torch.optim.Optimizer,
    loss_of: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor],
) -> StepFn:
    """The plain optimisation step: zero the gradients, backpropagate ``loss_of(inputs, labels)``, step."""
    def step(inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(inputs, labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def run_epoch(
    step: StepFn,
    data: TensorData,
    batch_size: int,
    rng: np.random.Generator,
    drop_last: bool = False,
    augment: Augmenter | None = None,
    groups: np.ndarray | None = None,
) -> float:
    """Run ``step`` on every shuffled batch of one epoch; return the sample-weighted mean loss.

    ``augment``: transform each batch's inputs first (:mod:`fedhar.train.augment`).
    ``groups``: draw every batch from one group (e.g. one subject's windows).

    A trailing batch of a single sample is skipped when the epoch has other batches
    (BatchNorm cannot normalise one sample); shuffling makes it a different sample each epoch.
    """
    total, count = 0.0, 0
    for inputs, labels in iterate_batches(data, batch_size, shuffle=True, rng=rng, drop_last=drop_last,
                                          groups=groups):
        size = int(labels.shape[0])
        if size == 1 and count > 0:
            continue
        if augment is not None:
            inputs = augment(inputs)
        total += step(inputs, labels) * size
        count += size
    return total / max(count, 1)


def epoch_bar(epochs: int, desc: str, progress: bool) -> tqdm:
    """A tqdm bar over epochs (disabled when ``progress`` is False)."""
    return tqdm(range(epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)


def evaluate_into(
    record: EpochRecord,
    model: nn.Module,
    eval_data: HARDataset | None,
    epoch: int,
    epochs: int,
    eval_every: int,
) -> None:
    """Evaluate on ``eval_data`` every ``eval_every`` epochs and at the last epoch; store in ``record``."""
    if eval_data is None or (epoch % eval_every and epoch != epochs):
        return
    result = evaluate(model, eval_data)
    record.metrics[TEST_ACCURACY] = result.accuracy
    record.metrics[TEST_MACRO_F1] = result.macro_f1


def finish_epoch(
    history: History,
    record: EpochRecord,
    started: float,
    bar: tqdm,
    log_every: int,
) -> None:
    """Stamp the wall time, append, update the bar and log the epoch."""
    record.seconds = time.perf_counter() - started
    history.append(record)
    bar.set_postfix(loss=f"{record.loss:.4f}", **{k: f"{v:.3f}" for k, v in record.metrics.items()})
    if record.epoch % log_every == 0 or record.metrics:
        extras = " ".join(f"{k}={v:.4f}" for k, v in record.metrics.items())
        logger.info("%s epoch %d (%s): loss %.4f lr %.2e %s", record.stage, record.epoch, record.phase,
                    record.loss, record.lr, extras)
