"""Evaluation protocols: which subjects train and which are held out for testing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo
from fedhar.errors import ConfigError

__all__ = ["Protocol", "resolve_protocol"]


@dataclass(frozen=True)
class Protocol:
    """A subject-wise train/test split: no subject is in both.

    Parameters
    ----------
    train_subjects
        Subject ids whose data may be used for training (labeled or unlabeled), ascending.
    test_subjects
        Held-out subject ids, used for evaluation only, ascending.

    Raises
    ------
    ConfigError
        If either side is empty, lists a subject twice, or the two sides overlap.
    """

    train_subjects: tuple[int, ...]
    test_subjects: tuple[int, ...]

    def __post_init__(self) -> None:
        for side in ("train_subjects", "test_subjects"):
            subjects = tuple(int(s) for s in getattr(self, side))
            if not subjects:
                raise ConfigError(f"{side} is empty; a protocol needs at least one subject on each side", side)
            if len(set(subjects)) != len(subjects):
                raise ConfigError(f"{side} lists a subject twice: {subjects}", side)
            object.__setattr__(self, side, tuple(sorted(subjects)))
        overlap = sorted(set(self.train_subjects) & set(self.test_subjects))
        if overlap:
            raise ConfigError(
                f"subjects {overlap} are both training and test subjects; a subject must be on one side only",
                "test_subjects",
            )

    @property
    def subjects(self) -> tuple[int, ...]:
        """All subjects of the protocol, ascending."""
        return tuple(sorted(self.train_subjects + self.test_subjects))

    @classmethod
    def from_test_subjects(cls, all_subjects: Iterable[int], test_subjects: Iterable[int]) -> Protocol:
        """Hold out ``test_subjects``; every other subject of ``all_subjects`` trains.

        Raises
        ------
        ConfigError
            If a test subject is not in ``all_subjects``, or either side ends up empty.
        """
        everyone = sorted({int(s) for s in all_subjects})
        held_out = [int(s) for s in test_subjects]
        unknown = sorted(set(held_out) - set(everyone))
        if unknown:
            raise ConfigError(f"test subjects {unknown} are not subjects of the dataset {everyone}", "test_subjects")
        train = tuple(s for s in everyone if s not in held_out)
        return cls(train_subjects=train, test_subjects=tuple(held_out))


def resolve_protocol(cfg: DatasetConfig, info: DatasetInfo) -> Protocol:
    """The protocol preset ``cfg.protocol`` applied to the subjects of ``info``.

    Parameters
    ----------
    cfg
        Dataset settings; ``cfg.test_subjects`` are the held-out subjects of the chosen preset.
    info
        Metadata of the loaded dataset; ``info.subjects`` are all its subjects.

    Returns
    -------
    Protocol
        Test subjects from the preset, training subjects = all other subjects of ``info``.

    Raises
    ------
    ConfigError
        If the preset names no test subject or an unknown one, or holds every subject out.
    """
    culprit = f"dataset.protocols.{cfg.protocol}.test_subjects"
    if not cfg.test_subjects:
        raise ConfigError(
            f"protocol {cfg.protocol!r} of {cfg.name} names no test subjects; "
            "add test_subjects to the preset in configs/dataset",
            culprit,
        )
    try:
        return Protocol.from_test_subjects(info.subjects, cfg.test_subjects)
    except ConfigError as err:
        raise ConfigError(f"protocol {cfg.protocol!r} of {cfg.name}: {err.reason}", culprit) from err
