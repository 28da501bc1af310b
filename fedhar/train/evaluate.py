"""Evaluation: accuracy, macro-F1 and the full confusion matrix of a classifier on a dataset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from torch import nn

from fedhar.data.dataset import HARDataset
from fedhar.train.batches import TensorData, iterate_batches, to_tensors
from fedhar.train.device import on_device

__all__ = ["DEFAULT_EVAL_BATCH_SIZE", "EvalResult", "eval_mode", "evaluate", "predict", "score_predictions"]

DEFAULT_EVAL_BATCH_SIZE = 128


@dataclass(frozen=True)
class EvalResult:
    """Classification metrics on one dataset.

    Parameters
    ----------
    accuracy
        Fraction of correct predictions, in [0, 1].
    macro_f1
        Unweighted mean of the per-class F1 over all ``num_classes`` classes (a class that
        is absent from both labels and predictions counts as 0, as in scikit-learn).
    confusion
        ``(K, K)`` int64 counts, rows = true class, columns = predicted class.
    num_samples
        Number of evaluated samples.
    """

    accuracy: float
    macro_f1: float
    confusion: np.ndarray
    num_samples: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the confusion matrix as nested lists)."""
        return {"accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "confusion": self.confusion.tolist(), "num_samples": self.num_samples}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode and restore each one's own mode afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, mode in modes.items():
            module.train(mode)


@torch.no_grad()
def predict(
    model: nn.Module,
    data: HARDataset | TensorData,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Predicted class per sample, ``(N,)`` int64 on the CPU, in dataset order (eval mode, no grad).

    ``device``: run the model there (it moves back afterwards); ``None``: where the model is.
    """
    preds = []
    with on_device(model, device) as target, eval_mode(model):
        tensors = to_tensors(data, device=target)
        for inputs, _ in iterate_batches(tensors, batch_size, shuffle=False):
            preds.append(model(inputs).argmax(dim=1))
    return torch.cat(preds).cpu().numpy().astype(np.int64) if preds else np.zeros(0, dtype=np.int64)


def score_predictions(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> EvalResult:
    """Accuracy, macro-F1 and confusion matrix over the class labels ``0..num_classes-1``.

    Raises
    ------
    ValueError
        If the arrays differ in length or are empty.
    """
    if len(labels) != len(preds) or len(labels) == 0:
        raise ValueError(f"need equally long non-empty label and prediction arrays, got {len(labels)}, {len(preds)}")
    classes = np.arange(num_classes)
    return EvalResult(
        accuracy=float(accuracy_score(labels, preds)),
        macro_f1=float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        confusion=confusion_matrix(labels, preds, labels=classes).astype(np.int64),
        num_samples=len(labels),
    )


def evaluate(
    model: nn.Module,
    data: HARDataset,
    batch_size: int = DEFAULT_EVAL_BATCH_SIZE,
    num_classes: int | None = None,
    device: str | torch.device | None = None,
) -> EvalResult:
    """Evaluate a classifier ``model(batch) -> logits`` on ``data``.

    Parameters
    ----------
    model
        Any module mapping ``{modality: (B, *shape)}`` to logits ``(B, K)``.
    data
        The evaluation set (all its modalities are passed to the model).
    batch_size
        Evaluation batch size (does not change the result).
    num_classes
        Number of classes ``K`` (default: ``data.info.num_classes``).
    device
        Run the model on this device (it moves back afterwards); ``None``: where it is.

    Returns
    -------
    EvalResult
        The metrics; the model's train/eval modes are left as they were.
    """
    k = data.info.num_classes if num_classes is None else num_classes
    return score_predictions(np.asarray(data.labels), predict(model, data, batch_size, device), k)
