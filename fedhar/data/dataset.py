"""One in-memory representation for every HAR dataset: arrays per modality plus labels."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModalitySpec:
    """Name, per-sample shape and sampling rate of one modality.

    Parameters
    ----------
    name
        Modality name, e.g. ``"inertial"``, ``"skeleton"``, ``"acc"``, ``"gyro"``.
    shape
        Shape of one sample, time first: ``(T, C)`` for IMU, ``(T, J, 3)`` for skeleton.
    sample_rate_hz
        Sampling rate of the raw recording (before resampling).
    channel_names
        Names of the last axis (``("x", "y", "z")`` or ``("acc_x", …)``).
    """

    name: str
    shape: tuple[int, ...]
    sample_rate_hz: float
    channel_names: tuple[str, ...] = ()

    @property
    def values_per_channel(self) -> int:
        """Values of each channel in one sample: every axis but the last (time x joints ...)."""
        return math.prod(self.shape[:-1])


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a dataset: its modalities, classes and subjects."""

    name: str
    modalities: tuple[ModalitySpec, ...]
    class_names: tuple[str, ...]
    subjects: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def modality_names(self) -> tuple[str, ...]:
        """Names of the modalities, in order."""
        return tuple(m.name for m in self.modalities)

    def modality(self, name: str) -> ModalitySpec:
        """The spec of modality ``name``; ``KeyError`` naming the known ones otherwise."""
        for spec in self.modalities:
            if spec.name == name:
                return spec
        raise KeyError(f"unknown modality {name!r}; {self.name} has {self.modality_names}")


@dataclass(frozen=True)
class HARDataset:
    """Samples of a multimodal HAR dataset, aligned across modalities.

    Parameters
    ----------
    info
        Dataset metadata. ``info.modalities`` lists every modality of the dataset; a
        subset view (see :meth:`with_modalities`) may hold fewer in ``data``.
    data
        Modality name -> float32 array of shape ``(N, *spec.shape)``.
    labels
        ``(N,)`` int64 class indices in ``[0, num_classes)``.
    subjects
        ``(N,)`` int64 subject ids as published (1-based).
    trials
        ``(N,)`` int64 trial numbers as published (1-based). Windows cut from one trial
        share its number.
    """

    info: DatasetInfo
    data: Mapping[str, np.ndarray]
    labels: np.ndarray
    subjects: np.ndarray
    trials: np.ndarray
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        for name, arr in (("subjects", self.subjects), ("trials", self.trials), *self.extra.items()):
            if len(arr) != n:
                raise ValueError(f"{self.info.name}: {name} has {len(arr)} rows, labels {n}")
        for name, arr in self.data.items():
            spec = self.info.modality(name)
            if arr.shape != (n, *spec.shape):
                raise ValueError(
                    f"{self.info.name}: modality {name!r} has shape {arr.shape}, "
                    f"expected {(n, *spec.shape)}"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities present in this view, in the dataset's order."""
        return tuple(m for m in self.info.modality_names if m in self.data)

    def subset(self, indices: Sequence[int] | np.ndarray) -> HARDataset:
        """Rows ``indices`` (in that order) as a new dataset."""
        idx = np.asarray(indices, dtype=np.int64)
        return HARDataset(
            info=self.info,
            data={k: v[idx] for k, v in self.data.items()},
            labels=self.labels[idx],
            subjects=self.subjects[idx],
            trials=self.trials[idx],
            extra={k: v[idx] for k, v in self.extra.items()},
        )

    def with_modalities(self, names: Iterable[str]) -> HARDataset:
        """A view that holds only the modalities ``names`` (e.g. a device's sensors)."""
        wanted = tuple(names)
        missing = [m for m in wanted if m not in self.data]
        if missing:
            raise KeyError(f"modalities {missing} not in this dataset view {self.modalities}")
        return HARDataset(
            info=self.info,
            data={m: self.data[m] for m in self.modalities if m in wanted},
            labels=self.labels,
            subjects=self.subjects,
            trials=self.trials,
            extra=self.extra,
        )

    def indices_of_subjects(self, subjects: Iterable[int]) -> np.ndarray:
        """Row indices whose subject is in ``subjects``, ascending."""
        return np.flatnonzero(np.isin(self.subjects, np.asarray(list(subjects))))
