"""Per-epoch training records, JSON-serialisable, with last- and best-epoch summaries."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EpochRecord", "History"]


@dataclass
class EpochRecord:
    """What one epoch did.

    Parameters
    ----------
    epoch
        1-based epoch number within its stage.
    stage
        ``"pretrain"``, ``"finetune"`` or ``"supervised"``.
    loss
        Mean training loss over the epoch's batches.
    lr
        Learning rate used during the epoch.
    seconds
        Wall time of the epoch (training and evaluation).
    phase
        Which part was trained (``"encoders"``/``"classifier"`` in iterative fine-tuning).
    metrics
        Evaluation metrics (``test_accuracy``, ``test_macro_f1``) on evaluated epochs.
    """

    epoch: int
    stage: str
    loss: float
    lr: float
    seconds: float
    phase: str = "all"
    metrics: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A flat JSON-ready dict."""
        return {"epoch": self.epoch, "stage": self.stage, "phase": self.phase, "loss": self.loss,
                "lr": self.lr, "seconds": self.seconds, **self.metrics}


@dataclass
class History:
    """The records of one training stage, in order."""

    stage: str
    records: list[EpochRecord] = field(default_factory=list)

    def append(self, record: EpochRecord) -> None:
        """Add one epoch's record."""
        self.records.append(record)

    def __iter__(self) -> Iterator[EpochRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def losses(self) -> list[float]:
        """Training loss per epoch."""
        return [r.loss for r in self.records]

    def metric(self, name: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of every epoch that recorded metric ``name``."""
        return [(r.epoch, r.metrics[name]) for r in self.records if name in r.metrics]

    def last(self, name: str) -> float:
        """The metric's value at the last epoch that recorded it (NaN if none)."""
        values = self.metric(name)
        return values[-1][1] if values else math.nan

    def best(self, name: str) -> tuple[int, float]:
        """``(epoch, value)`` of the highest value of the metric (``(0, NaN)`` if none).

        This selects on whatever set the metric was computed on: label it accordingly.
        """
        values = self.metric(name)
        if not values:
            return 0, math.nan
        return max(values, key=lambda ev: (ev[1], -ev[0]))

    @property
    def total_seconds(self) -> float:
        """Sum of the epochs' wall times."""
        return float(sum(r.seconds for r in self.records))

    def to_list(self) -> list[dict[str, Any]]:
        """The records as JSON-ready dicts."""
        return [r.to_dict() for r in self.records]
