"""Experiment data: protocol, label split, train-only normalisation and client partitions in one call.

Normalisation statistics come from the training subjects only, and are computed the way a
federated run computes them: each training subject (client) sums its own rows over the
modalities its device exposes (:func:`partition_norm_stats`), and the sums are merged
(:meth:`NormStats.merge`). Test subjects never contribute. Without modality subsets this
equals fitting on all training rows at once; with them, a modality's statistics come
from the subjects that have it. Centralised and federated runs therefore see the same
normalised numbers. A federated server passes the statistics merged in its normalisation
round (``stats=``, see :mod:`fedhar.data.federation`) instead of fitting them itself.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset
from fedhar.data.normalization import Normalizer, NormStats
from fedhar.data.partition import ClientPartition, partition_by_subject
from fedhar.data.protocol import Protocol, resolve_protocol
from fedhar.data.splits import LabelSplit, make_label_split
from fedhar.errors import ConfigError

__all__ = ["ExperimentData", "partition_norm_stats", "prepare_experiment"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentData:
    """Everything a training run needs from the data layer, normalised with training statistics.

    Parameters
    ----------
    info
        Dataset metadata.
    protocol
        Training and test subjects.
    split
        Row indices (into the un-normalised dataset) of labeled, unlabeled and test rows.
    labeled, unlabeled, test
        The split's rows with every modality, normalised (centralised training and
        evaluation use these).
    normalizer
        The fitted normaliser (training subjects only; its statistics are mergeable).
    partitions
        Training subject -> its client data, restricted to the subject's modalities and
        normalised with the same statistics; ascending subject order.
    """

    info: DatasetInfo
    protocol: Protocol
    split: LabelSplit
    labeled: HARDataset
    unlabeled: HARDataset
    test: HARDataset
    normalizer: Normalizer
    partitions: dict[int, ClientPartition]


def partition_norm_stats(partition: ClientPartition) -> NormStats:
    """Normalisation statistics of one client's rows (labeled and unlabeled), its modalities only.

    This is what a federated client computes locally and sends for aggregation.

    Raises
    ------
    ConfigError
        If the partition holds no row at all.
    """
    parts = [NormStats.from_dataset(view) for view in (partition.labeled, partition.unlabeled) if len(view)]
    if not parts:
        raise ConfigError(
            "the partition holds no rows; nothing to compute statistics from", f"subject {partition.subject}"
        )
    return NormStats.merge(parts)


def prepare_experiment(
    dataset: HARDataset, cfg: DatasetConfig, label_rate: float, seed: int, stats: NormStats | None = None
) -> ExperimentData:
    """Resolve the protocol, draw the label split, fit train-only statistics, normalise, partition.

    Parameters
    ----------
    dataset
        The whole, un-normalised dataset (as returned by ``load_dataset``).
    cfg
        Its settings: protocol preset, label scheme, modality subsets.
    label_rate
        Percent, with the semantics of ``cfg.label_scheme``.
    seed
        Seed of the label split.
    stats
        Normalisation statistics to use instead of fitting them on the training subjects
        (a federated server's merged statistics); ``None`` fits them.

    Returns
    -------
    ExperimentData
        Normalised labeled, unlabeled and test views plus one partition per training subject.

    Raises
    ------
    ConfigError
        Bad protocol, label rate or modality subsets (see :func:`resolve_protocol`,
        :func:`make_label_split`, :func:`partition_by_subject`), or a modality of the
        dataset that no training subject exposes (its statistics would be unknown).
    """
    protocol = resolve_protocol(cfg, dataset.info)
    split = make_label_split(dataset, protocol, label_rate, seed, cfg.label_scheme, cfg.sequences_per_class)
    raw_partitions = partition_by_subject(dataset, split, cfg.modality_subsets)
    if stats is None:
        stats = NormStats.merge(partition_norm_stats(p) for p in raw_partitions.values())
    unseen = [m for m in dataset.modalities if m not in stats.moments]
    if unseen:
        raise ConfigError(
            f"no training subject exposes modalities {unseen} (or the given statistics lack them), so they "
            "cannot be normalised; give at least one training subject each modality",
            "dataset.modality_subsets",
        )
    normalizer = Normalizer(stats)
    partitions = {
        subject: dataclasses.replace(
            part, labeled=normalizer.apply(part.labeled), unlabeled=normalizer.apply(part.unlabeled)
        )
        for subject, part in raw_partitions.items()
    }
    data = ExperimentData(
        info=dataset.info,
        protocol=protocol,
        split=split,
        labeled=normalizer.apply(dataset.subset(split.labeled)),
        unlabeled=normalizer.apply(dataset.subset(split.unlabeled)),
        test=normalizer.apply(dataset.subset(split.test)),
        normalizer=normalizer,
        partitions=partitions,
    )
    logger.info(
        "%s, protocol %r, label rate %s%%, seed %d: %d labeled, %d unlabeled, %d test rows; %d clients",
        dataset.info.name, cfg.protocol, label_rate, seed,
        split.num_labeled, split.num_unlabeled, split.num_test, len(partitions),
    )
    return data
