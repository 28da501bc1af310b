"""The normalisation round's data: what one client reports, what the server merges, and the client's partition.

A deployed client holds only its own subject's files, so it cannot fit normalisation
statistics on the training subjects, nor draw the label split over them. Before stage 1
each client sends a :class:`DataSummary` of its own training rows: the sufficient
statistics of :class:`NormStats` (count, sum, sum of squares per channel, for the
modalities its device exposes) and its number of rows per class. The server validates and
merges them (:func:`merge_summaries`) into :class:`FederationData`, and sends each client
its :class:`ClientFederation` with every later message: the merged statistics and the
client's own share of the global label split (:meth:`FederationData.for_subject`). Each
client normalises with the merged statistics and picks its labeled rows
(:func:`build_client_partition`). With every training subject present this reproduces the
centralised experiment: the merged statistics equal a fit on the training subjects' rows
(to float round-off), and the split is the same rows.

The class counts reveal each subject's activity histogram to the server, which draws the
label split from them; no client receives another subject's counts (docs/privacy.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset
from fedhar.data.normalization import ChannelMoments, Normalizer, NormStats
from fedhar.data.partition import ClientPartition, validate_modality_subsets
from fedhar.data.splits import LabelShare, label_share, split_from_share
from fedhar.errors import ConfigError

__all__ = [
    "Census",
    "ClientFederation",
    "DataSummary",
    "FederationData",
    "build_client_partition",
    "merge_summaries",
    "subject_modalities",
    "summarize_subject",
    "validate_census",
    "validate_summary",
]


@dataclass(frozen=True)
class Census:
    """What a client reports in the clear when its moments go through secure aggregation.

    Parameters
    ----------
    subject
        The client's subject.
    class_counts
        ``(num_classes,)`` int64 rows of each class (the server draws the label split from them).
    counts
        Modality -> values per channel (rows x values per row), for the modalities its device exposes.
    """

    subject: int
    class_counts: np.ndarray
    counts: Mapping[str, int]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for an ArrayRecord: ``class-counts`` and ``<modality>.count``."""
        arrays = {keys.CLASS_COUNTS: np.asarray(self.class_counts, dtype=np.int64)}
        arrays.update({f"{name}{keys.COUNT_SUFFIX}": np.asarray([n], dtype=np.int64) for name, n in self.counts.items()})
        return arrays

    @classmethod
    def from_arrays(cls, subject: int, arrays: Mapping[str, np.ndarray]) -> Census:
        """Inverse of :meth:`to_arrays`.

        Raises
        ------
        ValueError
            If an array is missing, unexpected (a sum included), or of the wrong kind or shape.
        """
        counts = _class_counts(arrays)
        extra = sorted(k for k in arrays if k != keys.CLASS_COUNTS and not k.endswith(keys.COUNT_SUFFIX))
        if extra:
            raise ValueError(f"unexpected arrays {extra}: a census holds class counts and value counts only")
        per_modality = {}
        for key in sorted(set(arrays) - {keys.CLASS_COUNTS}):
            per_modality[key[: -len(keys.COUNT_SUFFIX)]] = _value_count(arrays, key)
        return cls(int(subject), counts.astype(np.int64), per_modality)


def _value_count(arrays: Mapping[str, np.ndarray], key: str) -> int:
    count = np.asarray(arrays[key])
    if count.shape != (1,) or count.dtype.kind not in "iu":
        raise ValueError(f"{key} must be one integer, got {count.dtype} {count.shape}")
    return int(count[0])


def _class_counts(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    if keys.CLASS_COUNTS not in arrays:
        raise ValueError(f"array {keys.CLASS_COUNTS!r} is missing")
    counts = np.asarray(arrays[keys.CLASS_COUNTS])
    if counts.ndim != 1 or counts.dtype.kind not in "iu":
        raise ValueError(f"{keys.CLASS_COUNTS!r} must be a 1-D integer array, got {counts.dtype} {counts.shape}")
    return counts


@dataclass(frozen=True)
class DataSummary:
    """One client's reply in the normalisation round.

    Parameters
    ----------
    subject
        The client's subject.
    stats
        Moments of the subject's training rows, one entry per modality its device exposes.
    class_counts
        ``(num_classes,)`` int64 rows of each class.
    """

    subject: int
    stats: NormStats
    class_counts: np.ndarray

    @property
    def census(self) -> Census:
        """The summary without its sums: what the server sees under secure aggregation."""
        return Census(self.subject, self.class_counts, {name: mom.count for name, mom in self.stats.moments.items()})

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays for an ArrayRecord: ``class-counts`` and ``<modality>.count|.sum|.sum-sq``."""
        arrays = self.census.to_arrays()
        for name, mom in self.stats.moments.items():
            arrays[f"{name}{keys.SUM_SUFFIX}"] = np.asarray(mom.sum, dtype=np.float64)
            arrays[f"{name}{keys.SUM_SQ_SUFFIX}"] = np.asarray(mom.sum_sq, dtype=np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, subject: int, arrays: Mapping[str, np.ndarray]) -> DataSummary:
        """Inverse of :meth:`to_arrays`.

        Raises
        ------
        ValueError
            If an array is missing, unexpected, of the wrong kind or shape (the message says which).
        """
        counts = _class_counts(arrays)
        suffixes = (keys.COUNT_SUFFIX, keys.SUM_SUFFIX, keys.SUM_SQ_SUFFIX)
        names = sorted({k[: -len(sfx)] for k in arrays for sfx in suffixes if k.endswith(sfx)})
        expected = {keys.CLASS_COUNTS} | {f"{n}{sfx}" for n in names for sfx in suffixes}
        extra, missing = sorted(set(arrays) - expected), sorted(expected - set(arrays))
        if extra or missing:
            raise ValueError(f"unexpected arrays {extra} / missing arrays {missing}")
        moments = {}
        for name in names:
            count = _value_count(arrays, f"{name}{keys.COUNT_SUFFIX}")
            total, squares = (np.asarray(arrays[f"{name}{sfx}"]) for sfx in suffixes[1:])
            if total.ndim != 1 or total.shape != squares.shape or total.dtype.kind != "f" or squares.dtype.kind != "f":
                raise ValueError(f"{name}: sum {total.dtype} {total.shape} and sum of squares {squares.dtype} "
                                 f"{squares.shape} must be float arrays of one shape (C,)")
            moments[name] = ChannelMoments(count, total.astype(np.float64), squares.astype(np.float64))
        return cls(int(subject), NormStats(moments), counts.astype(np.int64))


def summarize_subject(dataset: HARDataset, subject: int, modalities: Sequence[str],
                      bounds: Mapping[str, np.ndarray] | None = None) -> DataSummary:
    """The :class:`DataSummary` of ``subject``'s rows of ``dataset``, over ``modalities`` only.

    With ``bounds`` (modality -> ``(C,)`` largest absolute value per channel, for secure
    aggregation) every value is clipped to them first.

    Raises
    ------
    ConfigError
        If ``dataset`` holds no row of ``subject``.
    """
    rows = dataset.indices_of_subjects([subject])
    if rows.size == 0:
        raise ConfigError(f"no rows of subject {subject} in {dataset.info.name}; subjects present: "
                          f"{sorted(set(dataset.subjects.tolist()))}", f"subject {subject}")
    own = dataset.subset(rows).with_modalities(modalities)
    counts = np.bincount(own.labels, minlength=dataset.info.num_classes).astype(np.int64)
    if bounds is None:
        return DataSummary(int(subject), NormStats.from_dataset(own), counts)
    moments = {m: ChannelMoments.from_array(np.clip(x, -bounds[m], bounds[m])) for m, x in own.data.items()}
    return DataSummary(int(subject), NormStats(moments), counts)


def validate_census(census: Census, info: DatasetInfo, train_subjects: Iterable[int]) -> str | None:
    """Why a client's census cannot be merged, or ``None`` if it can.

    Checks: the subject is a training subject; one non-negative class count per class, at
    least one row; at least one modality, each known to ``info``, its count > 0 and equal
    to the rows in the class counts times the values per row.
    """
    if census.subject not in {int(s) for s in train_subjects}:
        return f"subject {census.subject} is not a training subject {sorted(train_subjects)}"
    counts = census.class_counts
    if counts.shape != (info.num_classes,):
        return f"{keys.CLASS_COUNTS} has shape {counts.shape}, expected ({info.num_classes},)"
    if np.any(counts < 0) or counts.sum() <= 0:
        return f"{keys.CLASS_COUNTS} must be >= 0 with at least one row, got {counts.tolist()}"
    if not census.counts:
        return "no modality in the statistics"
    for name, count in census.counts.items():
        if name not in info.modality_names:
            return f"unknown modality {name!r}; {info.name} has {list(info.modality_names)}"
        per_row = info.modality(name).values_per_channel
        if count <= 0:
            return f"{name}: count must be > 0, got {count}"
        if count != int(counts.sum()) * per_row:
            return f"{name}: count {count} != {int(counts.sum())} rows x {per_row} values per channel of each row"
    return None


def validate_summary(summary: DataSummary, info: DatasetInfo, train_subjects: Iterable[int]) -> str | None:
    """Why a client's summary cannot be merged, or ``None`` if it can.

    Checks :func:`validate_census`, then: one sum and sum of squares per channel of each
    modality, sums finite, sums of squares finite and >= 0.
    """
    reason = validate_census(summary.census, info, train_subjects)
    if reason is not None:
        return reason
    for name, mom in summary.stats.moments.items():
        channels = info.modality(name).shape[-1]
        if mom.sum.shape != (channels,) or mom.sum_sq.shape != (channels,):
            return f"{name}: moments of shape {mom.sum.shape}/{mom.sum_sq.shape}, expected ({channels},)"
        if not (np.all(np.isfinite(mom.sum)) and np.all(np.isfinite(mom.sum_sq))):
            return f"{name}: sums hold NaN or Inf"
        if np.any(mom.sum_sq < 0):
            return f"{name}: a sum of squares is negative"
    return None


@dataclass(frozen=True)
class FederationData:
    """What the server merged from the clients' summaries; sent back with every later message.

    Parameters
    ----------
    stats
        Pooled moments: per modality, over the subjects whose device exposes it.
    class_counts
        Subject -> ``(num_classes,)`` rows of each class, for every merged subject.
    """

    stats: NormStats
    class_counts: Mapping[int, np.ndarray]

    @property
    def subjects(self) -> tuple[int, ...]:
        """The subjects merged, ascending."""
        return tuple(sorted(self.class_counts))

    def for_subject(self, subject: int, cfg: DatasetConfig, label_rate: float, seed: int) -> ClientFederation:
        """What client ``subject`` receives: the merged statistics and its own share of the label split.

        Raises
        ------
        ConfigError
            If ``subject`` was not merged.
        """
        share = label_share(self.class_counts, subject, label_rate, seed, cfg.label_scheme, cfg.sequences_per_class)
        return ClientFederation(self.stats, share)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for results.json: subjects, statistics, class counts."""
        return {"subjects": list(self.subjects), "stats": self.stats.to_dict(),
                "class_counts": {str(s): np.asarray(c).tolist() for s, c in sorted(self.class_counts.items())}}


@dataclass(frozen=True)
class ClientFederation:
    """What one client receives after the normalisation round (ConfigRecord ``norm-stats``, ``label-share``).

    Parameters
    ----------
    stats
        The merged moments of every modality.
    share
        The client's own share of the global label split (nothing of other subjects').
    """

    stats: NormStats
    share: LabelShare

    def to_config(self) -> dict[str, str]:
        """The ConfigRecord entries (JSON; floats round-trip exactly)."""
        return {keys.NORM_STATS: json.dumps(self.stats.to_dict()), keys.LABEL_SHARE: json.dumps(self.share.to_dict())}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ClientFederation | None:
        """Inverse of :meth:`to_config`; ``None`` if the entries are absent (before the round).

        Raises
        ------
        ConfigError
            If only one entry is there or either is not valid JSON of the expected form.
        """
        present = [k for k in (keys.NORM_STATS, keys.LABEL_SHARE) if k in config]
        if not present:
            return None
        if len(present) == 1:
            raise ConfigError(f"the record has {present[0]!r} but not the other of {keys.NORM_STATS!r} / "
                              f"{keys.LABEL_SHARE!r}", present[0])
        try:
            stats = NormStats.from_dict(json.loads(str(config[keys.NORM_STATS])))
            share = LabelShare.from_dict(json.loads(str(config[keys.LABEL_SHARE])))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(f"malformed normalisation-round data: {err}", keys.NORM_STATS) from err
        return cls(stats, share)


def merge_summaries(summaries: Iterable[DataSummary]) -> FederationData:
    """Pool the clients' summaries (in ascending subject order, so the sums are reproducible).

    Raises
    ------
    ValueError
        If there is no summary, a subject appears twice, or the class counts disagree in length.
    """
    ordered = sorted(summaries, key=lambda s: s.subject)
    if not ordered:
        raise ValueError("no summary to merge")
    subjects = [s.subject for s in ordered]
    if len(set(subjects)) != len(subjects):
        raise ValueError(f"a subject appears twice among {subjects}")
    if len({s.class_counts.shape for s in ordered}) != 1:
        raise ValueError(f"class counts differ in length: {[s.class_counts.shape for s in ordered]}")
    stats = NormStats.merge(s.stats for s in ordered)
    return FederationData(stats, {s.subject: s.class_counts.copy() for s in ordered})


def subject_modalities(dataset: HARDataset, cfg: DatasetConfig, subject: int) -> tuple[str, ...]:
    """The modalities ``subject``'s device exposes (``cfg.modality_subsets``, else all), in the dataset's order.

    Raises
    ------
    ConfigError
        If the subject's entry names an unknown modality or none (see
        :func:`fedhar.data.partition.validate_modality_subsets`).
    """
    if subject not in cfg.modality_subsets:
        return dataset.modalities
    return validate_modality_subsets(dataset, {subject: cfg.modality_subsets[subject]})[subject]


def build_client_partition(
    dataset: HARDataset, cfg: DatasetConfig, subject: int, federation: ClientFederation
) -> ClientPartition:
    """A client's partition from its own rows, the merged statistics and its share of the label split.

    Parameters
    ----------
    dataset
        Un-normalised; holds ``subject``'s rows (a device's dataset holds only those).
    cfg
        Dataset settings (label scheme, modality subsets).
    subject
        The client's subject.
    federation
        What the server sent after the normalisation round.

    Returns
    -------
    ClientPartition
        The subject's labeled and unlabeled rows of the global split, its modalities only,
        normalised with the merged statistics.

    Raises
    ------
    ConfigError
        If the share is another subject's, its rows disagree with its reported counts, or
        the merged statistics lack one of its modalities.
    """
    modalities = subject_modalities(dataset, cfg, subject)
    missing = [m for m in modalities if m not in federation.stats.moments]
    if missing:
        raise ConfigError(f"the merged statistics lack modalities {missing} of subject {subject}", keys.NORM_STATS)
    if federation.share.subject != subject:
        raise ConfigError(f"the server sent the label share of subject {federation.share.subject} to subject "
                          f"{subject}", keys.LABEL_SHARE)
    split = split_from_share(dataset, federation.share)
    normalizer = Normalizer(federation.stats)
    return ClientPartition(
        subject=subject,
        modalities=modalities,
        labeled=normalizer.apply(dataset.subset(split.labeled).with_modalities(modalities)),
        unlabeled=normalizer.apply(dataset.subset(split.unlabeled).with_modalities(modalities)),
    )
