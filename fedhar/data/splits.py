"""Label-rate splits: which training rows are labeled, which unlabeled, which are test rows.

Two schemes (``DatasetConfig.label_scheme``):

- ``"per_class"`` (Cosmo on UTD-MHAD): rate r % of ``sequences_per_class`` reference
  sequences per class, i.e. ``n = round(r / 100 * sequences_per_class)`` labeled rows of
  every class (5 % of 20 -> 1 per class, 40 % -> 8), drawn among the training rows of
  that class.
- ``"fraction"`` (USC-HAD): a class-stratified fraction, ``n_k = max(1, round(r / 100 *
  N_k))`` labeled rows of class k, where ``N_k`` counts the training rows of class k. The
  counts depend on the data only, not on the seed, so every seed labels as many rows.

Rounding is half up on exact decimals (``Fraction``), so 2.5 % of 20 gives 1. The rows are
drawn with a seeded :class:`numpy.random.Generator`: same seed, same split, in any process.

The draw depends only on the number of training rows of each class: for class k it picks
positions among the class's training rows ordered by (subject, row). The server of a
federated run, which knows every subject's class counts (never their rows), can therefore
tell each client which of its own rows are labeled (:func:`label_share`, a
:class:`LabelShare`), and the client picks them (:func:`split_from_share`): the same rows as
the centralised split, while no client learns another subject's class counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from fedhar.data.config import DatasetConfig, LabelScheme
from fedhar.data.dataset import HARDataset
from fedhar.data.protocol import Protocol
from fedhar.errors import ConfigError

__all__ = [
    "LabelShare",
    "LabelSplit",
    "draw_labeled_positions",
    "label_share",
    "labeled_count_per_class",
    "make_label_split",
    "split_from_share",
    "split_sizes",
]

logger = logging.getLogger(__name__)

PERCENT = 100
MAX_LABEL_RATE = 100.0


@dataclass(frozen=True, eq=False)
class LabelSplit:
    """Row indices of one label-rate split; the three sets are disjoint and cover the dataset.

    Parameters
    ----------
    labeled
        ``(n_labeled,)`` sorted int64 indices of labeled training rows.
    unlabeled
        ``(n_unlabeled,)`` sorted int64 indices of the other training rows.
    test
        ``(n_test,)`` sorted int64 indices of the test subjects' rows.
    labeled_per_class
        ``(num_classes,)`` int64 number of labeled rows of each class.
    label_rate
        The label rate in percent the split was drawn at.
    seed
        The seed it was drawn with.
    """

    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray
    labeled_per_class: np.ndarray
    label_rate: float
    seed: int

    def __post_init__(self) -> None:
        for name in ("labeled", "unlabeled", "test", "labeled_per_class"):
            arr = np.array(getattr(self, name), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        for name in ("labeled", "unlabeled", "test"):
            arr = getattr(self, name)
            if arr.ndim != 1 or np.any(np.diff(arr) <= 0):
                raise ValueError(f"LabelSplit.{name} must be a 1-D strictly ascending index array")
        if np.intersect1d(self.labeled, self.unlabeled).size or np.intersect1d(self.train, self.test).size:
            raise ValueError("LabelSplit: labeled, unlabeled and test rows must be disjoint")
        if int(self.labeled_per_class.sum()) != self.num_labeled:
            raise ValueError(
                f"LabelSplit: labeled_per_class sums to {int(self.labeled_per_class.sum())}, "
                f"but {self.num_labeled} rows are labeled"
            )

    @property
    def train(self) -> np.ndarray:
        """All training rows (labeled and unlabeled), ascending."""
        return np.union1d(self.labeled, self.unlabeled)

    @property
    def num_labeled(self) -> int:
        """Number of labeled rows."""
        return int(self.labeled.size)

    @property
    def num_unlabeled(self) -> int:
        """Number of unlabeled training rows."""
        return int(self.unlabeled.size)

    @property
    def num_test(self) -> int:
        """Number of test rows."""
        return int(self.test.size)

    def counts(self) -> dict[str, Any]:
        """Sizes of the split: label rate, labeled, unlabeled, test, labeled per class min/max."""
        per_class = self.labeled_per_class
        return {
            "label_rate": self.label_rate,
            "labeled": self.num_labeled,
            "unlabeled": self.num_unlabeled,
            "test": self.num_test,
            "labeled_per_class_min": int(per_class.min()) if per_class.size else 0,
            "labeled_per_class_max": int(per_class.max()) if per_class.size else 0,
        }


def labeled_count_per_class(
    train_class_counts: np.ndarray,
    label_rate: float,
    scheme: LabelScheme,
    sequences_per_class: int | None = None,
) -> np.ndarray:
    """How many rows of each class a split labels, before any row is drawn.

    Parameters
    ----------
    train_class_counts
        ``(num_classes,)`` number of training rows of each class.
    label_rate
        Percent, in ``(0, 100]``.
    scheme
        ``"per_class"`` or ``"fraction"`` (see the module docstring).
    sequences_per_class
        Reference sequences per class; required for ``"per_class"``.

    Returns
    -------
    numpy.ndarray
        ``(num_classes,)`` int64 labeled rows per class.

    Raises
    ------
    ConfigError
        If the rate is out of range, gives 0 labeled rows per class, or asks for more rows
        of a class than its training subjects have.
    """
    counts = np.asarray(train_class_counts, dtype=np.int64)
    if not 0 < label_rate <= MAX_LABEL_RATE:
        raise ConfigError(f"label_rate must be in (0, {MAX_LABEL_RATE:g}] percent, got {label_rate}", "label_rate")
    rate = Fraction(str(label_rate)) / PERCENT
    if scheme == "per_class":
        if not sequences_per_class or sequences_per_class <= 0:
            raise ConfigError(
                f"scheme 'per_class' needs sequences_per_class > 0, got {sequences_per_class}",
                "dataset.sequences_per_class",
            )
        exact = rate * sequences_per_class
        n = _round_half_up(exact)
        if n == 0:
            smallest = float(Fraction(PERCENT, 2 * sequences_per_class))
            raise ConfigError(
                f"label_rate {label_rate}% of {sequences_per_class} sequences per class labels no sequence; "
                f"the smallest legal rate is {smallest:g}%",
                "label_rate",
            )
        if exact != n:
            logger.warning(
                "label_rate %s%% of %d sequences per class is %s; rounded to %d labeled per class",
                label_rate, sequences_per_class, float(exact), n,
            )
        short = [(k, int(c)) for k, c in enumerate(counts) if c < n]
        if short:
            raise ConfigError(
                f"label_rate {label_rate}% needs {n} labeled rows per class, but the training subjects "
                f"have fewer for (class, rows) {short}; lower the rate or change the protocol",
                "label_rate",
            )
        return np.full(counts.shape, n, dtype=np.int64)
    if scheme == "fraction":
        per_class = np.array([max(1, _round_half_up(rate * int(c))) if c > 0 else 0 for c in counts], dtype=np.int64)
        empty = np.flatnonzero(counts == 0).tolist()
        if empty:
            logger.warning("classes %s have no training rows; they get no labeled row", empty)
        return per_class
    raise ConfigError(f"scheme must be 'per_class' or 'fraction', got {scheme!r}", "dataset.label_scheme")


def make_label_split(
    dataset: HARDataset,
    protocol: Protocol,
    label_rate: float,
    seed: int,
    scheme: LabelScheme,
    sequences_per_class: int | None = None,
) -> LabelSplit:
    """Draw the labeled rows of a label-rate split among the training subjects' rows.

    Parameters
    ----------
    dataset
        The whole dataset (training and test subjects).
    protocol
        Which subjects train and which are held out.
    label_rate
        Percent, with the semantics of ``scheme`` (see the module docstring).
    seed
        Seed of the :class:`numpy.random.Generator` that draws the labeled rows.
    scheme
        ``"per_class"`` or ``"fraction"``.
    sequences_per_class
        Reference sequences per class; required for ``"per_class"``.

    Returns
    -------
    LabelSplit
        Labeled, unlabeled (the other training rows) and test rows (the test subjects').

    Raises
    ------
    ConfigError
        If a row's subject is in neither side of the protocol, a side has no rows, or the
        rate is illegal (see :func:`labeled_count_per_class`).
    """
    outside = sorted(set(np.unique(dataset.subjects).tolist()) - set(protocol.subjects))
    if outside:
        raise ConfigError(
            f"{dataset.info.name} has rows of subjects {outside}, which the protocol "
            f"{protocol} assigns to neither training nor test",
            "protocol",
        )
    train_rows = dataset.indices_of_subjects(protocol.train_subjects)
    test_rows = dataset.indices_of_subjects(protocol.test_subjects)
    for side, rows in (("training", train_rows), ("test", test_rows)):
        if rows.size == 0:
            raise ConfigError(f"{dataset.info.name} has no rows of the {side} subjects of {protocol}", "protocol")
    # Candidates of each class in (subject, row) order: what a client can rebuild from class counts.
    train_rows = train_rows[np.argsort(dataset.subjects[train_rows], kind="stable")]
    train_labels = dataset.labels[train_rows]
    num_classes = dataset.info.num_classes
    class_counts = np.bincount(train_labels, minlength=num_classes)
    per_class = labeled_count_per_class(class_counts, label_rate, scheme, sequences_per_class)
    positions = draw_labeled_positions(class_counts, per_class, seed)
    chosen = [train_rows[train_labels == k][pos] for k, pos in enumerate(positions)]
    labeled = np.sort(np.concatenate(chosen)).astype(np.int64)
    unlabeled = np.setdiff1d(train_rows, labeled)  # sorted
    split = LabelSplit(labeled, unlabeled, test_rows, per_class, float(label_rate), int(seed))
    logger.debug("%s label split at %s%% (seed %d): %s", dataset.info.name, label_rate, seed, split.counts())
    return split


def draw_labeled_positions(class_counts: np.ndarray, per_class: np.ndarray, seed: int) -> list[np.ndarray]:
    """Which of each class's training rows are labeled, as positions in the class's (subject, row) order.

    Parameters
    ----------
    class_counts
        ``(num_classes,)`` training rows of each class, over every training subject.
    per_class
        ``(num_classes,)`` rows to label per class (:func:`labeled_count_per_class`).
    seed
        Seed of the :class:`numpy.random.Generator`; classes draw in ascending order.

    Returns
    -------
    list[numpy.ndarray]
        For class k, ``per_class[k]`` distinct int64 positions in ``[0, class_counts[k])``
        (empty when nothing is labeled).
    """
    rng = np.random.default_rng(seed)
    return [
        rng.choice(int(total), size=int(n), replace=False).astype(np.int64) if n > 0 else np.empty(0, np.int64)
        for total, n in zip(class_counts, per_class, strict=True)
    ]


@dataclass(frozen=True, eq=False)
class LabelShare:
    """One subject's share of the global label split: which of its own rows of each class are labeled.

    This is all a federated client needs to draw its labeled rows; it carries the subject's
    own class counts (to check its data against what it reported) and nothing of anyone
    else's.

    Parameters
    ----------
    subject
        The subject.
    class_counts
        ``(num_classes,)`` the subject's own rows of each class, as it reported them.
    positions
        For class k, sorted int64 positions in ``[0, class_counts[k])`` among the subject's
        rows of class k (in row order) that are labeled.
    label_rate, seed
        Of the global split the share belongs to.
    """

    subject: int
    class_counts: np.ndarray
    positions: tuple[np.ndarray, ...]
    label_rate: float
    seed: int

    def __post_init__(self) -> None:
        counts = np.asarray(self.class_counts)
        if counts.ndim != 1 or len(self.positions) != counts.shape[0]:
            raise ConfigError(f"label share of subject {self.subject}: {len(self.positions)} position lists for "
                              f"class counts of shape {counts.shape}", "label share")
        for k, (pos, n) in enumerate(zip(self.positions, counts, strict=True)):
            pos = np.asarray(pos)
            if pos.ndim != 1 or (pos.size and (pos.min() < 0 or pos.max() >= n)) or np.unique(pos).size != pos.size:
                raise ConfigError(f"label share of subject {self.subject}: class {k} positions {pos.tolist()} are not "
                                  f"distinct positions among its {int(n)} rows", "label share")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (a ConfigRecord entry)."""
        return {"subject": int(self.subject), "class_counts": np.asarray(self.class_counts).tolist(),
                "positions": [np.asarray(p).tolist() for p in self.positions], "label_rate": float(self.label_rate),
                "seed": int(self.seed)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelShare:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ConfigError
            If an entry is missing or the positions do not fit the counts.
        """
        try:
            return cls(int(data["subject"]), np.asarray(data["class_counts"], dtype=np.int64),
                       tuple(np.asarray(p, dtype=np.int64).reshape(-1) for p in data["positions"]),
                       float(data["label_rate"]), int(data["seed"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"malformed label share: {err!r}", "label share") from err


def label_share(
    class_counts: Mapping[int, np.ndarray],
    subject: int,
    label_rate: float,
    seed: int,
    scheme: LabelScheme,
    sequences_per_class: int | None = None,
) -> LabelShare:
    """``subject``'s share of :func:`make_label_split`, from every training subject's class counts (server side).

    Parameters
    ----------
    class_counts
        Training subject -> ``(num_classes,)`` rows of each class, for every subject of the
        federation (``subject`` included).
    subject
        The subject whose share to compute.
    label_rate, seed, scheme, sequences_per_class
        As for :func:`make_label_split`.

    Raises
    ------
    ConfigError
        If ``subject`` is not in ``class_counts`` or the counts differ in length.
    """
    counts = {int(s): np.asarray(c, dtype=np.int64) for s, c in class_counts.items()}
    if subject not in counts:
        raise ConfigError(f"subject {subject} is not in the class counts of the federation {sorted(counts)}; "
                          "did its normalisation-round reply get rejected?", f"subject {subject}")
    shapes = {c.shape for c in counts.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ConfigError(f"class counts must be vectors of one length; got shapes {sorted(shapes)}", "class counts")
    own = counts[subject]
    totals = np.sum(list(counts.values()), axis=0)
    before = np.sum([c for s, c in counts.items() if s < subject] or [np.zeros_like(own)], axis=0)
    per_class = labeled_count_per_class(totals, label_rate, scheme, sequences_per_class)
    positions = draw_labeled_positions(totals, per_class, seed)
    mine = tuple(np.sort(pos[(pos >= before[k]) & (pos < before[k] + own[k])] - before[k])
                 for k, pos in enumerate(positions))
    return LabelShare(subject, own.copy(), mine, float(label_rate), int(seed))


def split_from_share(dataset: HARDataset, share: LabelShare) -> LabelSplit:
    """The labeled and unlabeled rows of ``share.subject`` in ``dataset`` (client side).

    Raises
    ------
    ConfigError
        If the share's class counts have the wrong length or the subject's rows do not
        match them (its data changed since it reported them).
    """
    num_classes = dataset.info.num_classes
    subject = share.subject
    if np.asarray(share.class_counts).shape != (num_classes,):
        raise ConfigError(f"class counts must have {num_classes} entries; got {np.asarray(share.class_counts).shape}",
                          "class counts")
    rows = dataset.indices_of_subjects([subject])
    labels = dataset.labels[rows]
    own = np.bincount(labels, minlength=num_classes)
    if not np.array_equal(own, share.class_counts):
        raise ConfigError(f"subject {subject} holds {own.tolist()} rows per class, but reported "
                          f"{np.asarray(share.class_counts).tolist()}; its data changed during the run",
                          f"subject {subject}")
    chosen = [rows[labels == k][pos] for k, pos in enumerate(share.positions)]
    labeled = np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.empty(0, np.int64)
    unlabeled = np.setdiff1d(rows, labeled)
    own_per_class = np.bincount(dataset.labels[labeled], minlength=num_classes)
    return LabelSplit(labeled, unlabeled, np.empty(0, np.int64), own_per_class, share.label_rate, share.seed)


def split_sizes(dataset: HARDataset, protocol: Protocol, cfg: DatasetConfig, seed: int) -> list[dict[str, Any]]:
    """Sizes of the split at every label rate of ``cfg`` (see :meth:`LabelSplit.counts`).

    Raises
    ------
    ConfigError
        If one of ``cfg.label_rates`` is illegal for this dataset and protocol.
    """
    return [
        make_label_split(dataset, protocol, rate, seed, cfg.label_scheme, cfg.sequences_per_class).counts()
        for rate in cfg.label_rates
    ]


def _round_half_up(value: Fraction) -> int:
    """Round an exact fraction to the nearest integer, halves up."""
    return math.floor(value + Fraction(1, 2))
