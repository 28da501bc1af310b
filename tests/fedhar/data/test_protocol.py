"""Tests of subject-wise evaluation protocols."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, ModalitySpec
from fedhar.data.protocol import Protocol, resolve_protocol
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"


def _yaml(name: str) -> dict[str, Any]:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


def _info(subjects: tuple[int, ...]) -> DatasetInfo:
    return DatasetInfo("toy", (ModalitySpec("imu", (4, 3), 50.0),), ("a", "b"), subjects)


class TestProtocol:
    def test_init__sorts_both_sides(self) -> None:
        p = Protocol(train_subjects=(3, 1, 2), test_subjects=(5, 4))
        assert p.train_subjects == (1, 2, 3) and p.test_subjects == (4, 5)
        assert p.subjects == (1, 2, 3, 4, 5)

    @pytest.mark.parametrize(
        ("train", "test", "match"),
        [
            ((), (1,), "train_subjects is empty"),
            ((1,), (), "test_subjects is empty"),
            ((1, 2), (2, 3), r"\[2\] are both"),  # overlap
            ((1, 1), (2,), "twice"),  # duplicate
        ],
    )
    def test_init__raises__bad_sides(self, train: tuple[int, ...], test: tuple[int, ...], match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            Protocol(train_subjects=train, test_subjects=test)

    def test_from_test_subjects__rest_train(self) -> None:
        p = Protocol.from_test_subjects(range(1, 9), [7, 8])
        assert p == Protocol((1, 2, 3, 4, 5, 6), (7, 8))

    def test_from_test_subjects__raises__unknown_subject(self) -> None:
        with pytest.raises(ConfigError, match=r"\[9\]"):
            Protocol.from_test_subjects(range(1, 9), [9])


class TestResolveProtocol:
    def test_resolve__synthetic_default(self) -> None:
        cfg = DatasetConfig.from_mapping(_yaml("synthetic"))
        assert resolve_protocol(cfg, _info((1, 2, 3, 4, 5, 6))) == Protocol((1, 2, 3, 4, 5), (6,))

    @pytest.mark.parametrize(
        ("preset", "train", "test"),
        [("cosmo", (1, 2, 3, 4, 5, 6), (7, 8)), ("odd-even", (1, 3, 5, 7), (2, 4, 6, 8))],
    )
    def test_resolve__utd_presets(self, preset: str, train: tuple[int, ...], test: tuple[int, ...]) -> None:
        cfg = DatasetConfig.from_mapping({**_yaml("utd-mhad"), "root": None, "protocol": preset})
        assert resolve_protocol(cfg, _info(tuple(range(1, 9)))) == Protocol(train, test)

    def test_resolve__usc_default(self) -> None:
        cfg = DatasetConfig.from_mapping({**_yaml("usc-had"), "root": None})
        p = resolve_protocol(cfg, _info(tuple(range(1, 15))))
        assert p.train_subjects == tuple(range(1, 13)) and p.test_subjects == (13, 14)

    @pytest.mark.parametrize(
        ("protocols", "match"),
        [
            ({}, "names no test subjects"),  # no preset at all
            ({"default": {"test_subjects": []}}, "names no test subjects"),
            ({"default": {"test_subjects": [7]}}, r"\[7\] are not subjects"),  # unknown subject
            ({"default": {"test_subjects": [1, 2, 3]}}, "train_subjects is empty"),  # all held out
            ({"default": {"test_subjects": [2, 2]}}, "twice"),
        ],
    )
    def test_resolve__raises__bad_preset(self, protocols: dict[str, Any], match: str) -> None:
        cfg = dataclasses.replace(DatasetConfig.from_mapping(_yaml("synthetic")), protocols=protocols)
        with pytest.raises(ConfigError, match=match) as err:
            resolve_protocol(cfg, _info((1, 2, 3)))
        assert err.value.culprit is not None and "test_subjects" in err.value.culprit
