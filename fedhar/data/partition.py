"""Subject partitions: one federated client per training subject, with that subject's sensors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from fedhar.data.dataset import HARDataset
from fedhar.data.splits import LabelSplit
from fedhar.errors import ConfigError

__all__ = ["ClientPartition", "partition_by_subject", "partition_ids", "validate_modality_subsets"]

logger = logging.getLogger(__name__)

_CULPRIT = "dataset.modality_subsets"


@dataclass(frozen=True)
class ClientPartition:
    """The data one client (one training subject) holds.

    Parameters
    ----------
    subject
        The subject id (as published).
    modalities
        The modalities the subject's device exposes, in the dataset's order.
    labeled
        The subject's labeled rows, restricted to ``modalities``.
    unlabeled
        The subject's unlabeled rows, restricted to ``modalities``.
    """

    subject: int
    modalities: tuple[str, ...]
    labeled: HARDataset
    unlabeled: HARDataset

    @property
    def num_labeled(self) -> int:
        """Number of labeled rows."""
        return len(self.labeled)

    @property
    def num_unlabeled(self) -> int:
        """Number of unlabeled rows."""
        return len(self.unlabeled)


def validate_modality_subsets(
    dataset: HARDataset, modality_subsets: Mapping[int, Iterable[str]]
) -> dict[int, tuple[str, ...]]:
    """Check a subject -> modalities mapping against ``dataset``; return it in the dataset's order.

    Parameters
    ----------
    dataset
        The dataset (or modality view) the subsets select from.
    modality_subsets
        Subject id -> names of the modalities that subject exposes.

    Returns
    -------
    dict[int, tuple[str, ...]]
        Subject -> its modalities, ordered as in ``dataset.modalities``.

    Raises
    ------
    ConfigError
        If a subject is not a subject of the dataset, a modality is unknown or listed twice,
        or a subject is given no modality.
    """
    known_subjects = set(dataset.info.subjects)
    available = dataset.modalities
    resolved: dict[int, tuple[str, ...]] = {}
    for subject, names in sorted(modality_subsets.items()):
        where = f"{_CULPRIT}.{subject}"
        if int(subject) not in known_subjects:
            raise ConfigError(
                f"subject {subject} is not a subject of {dataset.info.name} {sorted(known_subjects)}", where
            )
        if isinstance(names, str):
            raise ConfigError(f"subject {subject}: give a list of modalities, not the string {names!r}", where)
        wanted = tuple(names)
        if not wanted:
            raise ConfigError(f"subject {subject} is given no modality; list at least one of {available}", where)
        unknown = [m for m in wanted if m not in available]
        if unknown:
            raise ConfigError(f"unknown modalities {unknown} for subject {subject}; known: {available}", where)
        if len(set(wanted)) != len(wanted):
            raise ConfigError(f"subject {subject} lists a modality twice: {wanted}", where)
        resolved[int(subject)] = tuple(m for m in available if m in wanted)
    return resolved


def partition_by_subject(
    dataset: HARDataset,
    split: LabelSplit,
    modality_subsets: Mapping[int, Iterable[str]],
) -> dict[int, ClientPartition]:
    """One partition per training subject: its labeled and unlabeled rows, its modalities only.

    Parameters
    ----------
    dataset
        The dataset the split indexes into.
    split
        The label split; its labeled and unlabeled rows are the training rows.
    modality_subsets
        Subject id -> modalities that subject exposes; unlisted subjects have all of
        ``dataset.modalities``. Entries for test subjects are validated but unused here.

    Returns
    -------
    dict[int, ClientPartition]
        Training subject -> partition, in ascending subject order. Every labeled and
        unlabeled row lands in the partition of its own subject, exactly once.

    Raises
    ------
    ConfigError
        See :func:`validate_modality_subsets`.
    """
    subsets = validate_modality_subsets(dataset, modality_subsets)
    train_subjects = np.unique(dataset.subjects[split.train]).tolist()
    partitions: dict[int, ClientPartition] = {}
    for subject in train_subjects:
        modalities = subsets.get(subject, dataset.modalities)
        labeled = split.labeled[dataset.subjects[split.labeled] == subject]
        unlabeled = split.unlabeled[dataset.subjects[split.unlabeled] == subject]
        partitions[subject] = ClientPartition(
            subject=subject,
            modalities=modalities,
            labeled=dataset.subset(labeled).with_modalities(modalities),
            unlabeled=dataset.subset(unlabeled).with_modalities(modalities),
        )
        logger.debug(
            "partition of subject %d: %d labeled, %d unlabeled, modalities %s",
            subject, labeled.size, unlabeled.size, modalities,
        )
    return partitions


def partition_ids(subjects: Iterable[int]) -> dict[int, int]:
    """Map Flower's ``partition-id`` 0..N-1 to subjects in ascending order.

    ``subjects`` may be the partitions returned by :func:`partition_by_subject` (a mapping
    iterates over its subjects).
    """
    return dict(enumerate(sorted(int(s) for s in subjects)))
