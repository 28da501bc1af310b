"""Per-modality, per-channel standardisation fitted on training subjects only.

The statistics are sufficient statistics (count, sum, sum of squares per channel), so
federated clients can compute them locally and a server can add them up (plainly or under
secure aggregation) without seeing raw data: ``NormStats.merge`` of the clients' stats
equals the stats of their pooled data. Moments are kept in float64; the variance
``sum_sq / n - mean**2`` is clipped at 0 against round-off.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedhar.data.dataset import HARDataset

#: Default floor below which a channel's std is treated as zero (the channel is only centred).
DEFAULT_MIN_STD = 1e-8


@dataclass(frozen=True)
class ChannelMoments:
    """Count, sum and sum of squares of each channel (last axis) of one modality.

    Parameters
    ----------
    count
        Number of values per channel (rows x time steps x joints ...).
    sum
        ``(C,)`` float64 sum per channel.
    sum_sq
        ``(C,)`` float64 sum of squares per channel.
    """

    count: int
    sum: np.ndarray
    sum_sq: np.ndarray

    @classmethod
    def from_array(cls, x: np.ndarray) -> ChannelMoments:
        """Moments over every axis of ``x`` but the last."""
        flat = np.asarray(x, dtype=np.float64).reshape(-1, x.shape[-1])  # (values, C)
        return cls(count=flat.shape[0], sum=flat.sum(axis=0), sum_sq=np.square(flat).sum(axis=0))

    def __add__(self, other: ChannelMoments) -> ChannelMoments:
        if self.sum.shape != other.sum.shape:
            raise ValueError(f"cannot merge moments of {self.sum.shape} and {other.sum.shape} channels")
        return ChannelMoments(self.count + other.count, self.sum + other.sum, self.sum_sq + other.sum_sq)

    @property
    def mean(self) -> np.ndarray:
        """``(C,)`` mean per channel."""
        return self.sum / self.count

    @property
    def std(self) -> np.ndarray:
        """``(C,)`` population standard deviation (``ddof=0``) per channel."""
        return np.sqrt(np.maximum(self.sum_sq / self.count - np.square(self.mean), 0.0))


@dataclass(frozen=True)
class NormStats:
    """Mergeable per-channel statistics of each modality.

    Parameters
    ----------
    moments
        Modality name -> its :class:`ChannelMoments`.
    """

    moments: Mapping[str, ChannelMoments]

    @classmethod
    def from_dataset(cls, dataset: HARDataset) -> NormStats:
        """Statistics of every row and modality of ``dataset``."""
        if len(dataset) == 0:
            raise ValueError(f"{dataset.info.name}: cannot compute statistics of an empty dataset")
        return cls({name: ChannelMoments.from_array(arr) for name, arr in dataset.data.items()})

    @classmethod
    def merge(cls, parts: Iterable[NormStats]) -> NormStats:
        """Statistics of the union of the data behind ``parts``; a modality may be absent from some."""
        merged: dict[str, ChannelMoments] = {}
        for part in parts:
            for name, mom in part.moments.items():
                merged[name] = merged[name] + mom if name in merged else mom
        if not merged:
            raise ValueError("cannot merge an empty list of statistics")
        return cls(merged)

    def mean(self, modality: str) -> np.ndarray:
        """``(C,)`` mean of ``modality``."""
        return self.moments[modality].mean

    def std(self, modality: str) -> np.ndarray:
        """``(C,)`` population standard deviation of ``modality``."""
        return self.moments[modality].std

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            name: {"count": m.count, "sum": m.sum.tolist(), "sum_sq": m.sum_sq.tolist()}
            for name, m in self.moments.items()
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`."""
        return cls({
            name: ChannelMoments(int(m["count"]), np.asarray(m["sum"], np.float64), np.asarray(m["sum_sq"], np.float64))
            for name, m in d.items()
        })  # fmt: skip


@dataclass(frozen=True)
class Normalizer:
    """Standardise each channel: ``(x - mean) / std``, with a near-zero std replaced by 1.

    Parameters
    ----------
    stats
        Statistics to normalise with (usually of the training subjects only).
    min_std
        A channel whose std is below this is only centred (divided by 1), so a constant
        channel never blows up.
    """

    stats: NormStats
    min_std: float = DEFAULT_MIN_STD
    _scale: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.min_std < 0:
            raise ValueError(f"min_std must be >= 0, got {self.min_std}")
        scale = {name: np.where(m.std > self.min_std, m.std, 1.0) for name, m in self.stats.moments.items()}
        object.__setattr__(self, "_scale", scale)

    def scale(self, modality: str) -> np.ndarray:
        """``(C,)`` divisor of ``modality``: its std, or 1 where the std is below ``min_std``."""
        return self._scale[modality]

    def apply(self, dataset: HARDataset) -> HARDataset:
        """A new dataset with every modality standardised (float32); labels etc. are shared.

        Raises
        ------
        KeyError
            If ``dataset`` holds a modality the statistics do not cover.
        """
        missing = [m for m in dataset.data if m not in self.stats.moments]
        if missing:
            raise KeyError(f"no normalisation statistics for modalities {missing}; have {sorted(self.stats.moments)}")
        data = {
            name: ((arr - self.stats.mean(name)) / self._scale[name]).astype(np.float32)
            for name, arr in dataset.data.items()
        }
        return HARDataset(dataset.info, data, dataset.labels, dataset.subjects, dataset.trials, dataset.extra)

    def save(self, path: Path) -> None:
        """Write the statistics and ``min_std`` as JSON, atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"min_std": self.min_std, "stats": self.stats.to_dict()}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Normalizer:
        """Read a normaliser written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        return cls(NormStats.from_dict(d["stats"]), min_std=float(d["min_std"]))


def fit_normalizer(dataset: HARDataset, train_subjects: Iterable[int], min_std: float = DEFAULT_MIN_STD) -> Normalizer:
    """A :class:`Normalizer` from the rows of ``train_subjects`` only: test subjects never contribute.

    Raises
    ------
    ValueError
        If no row of ``dataset`` belongs to ``train_subjects``.
    """
    subjects = sorted({int(s) for s in train_subjects})
    rows = dataset.indices_of_subjects(subjects)
    if len(rows) == 0:
        raise ValueError(
            f"{dataset.info.name}: no rows for train subjects {subjects}; present: {dataset.info.subjects}"
        )
    return Normalizer(NormStats.from_dataset(dataset.subset(rows)), min_std=min_std)
