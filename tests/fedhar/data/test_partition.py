"""Tests of per-subject client partitions with per-subject modality subsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.partition import ClientPartition, partition_by_subject, partition_ids
from fedhar.data.protocol import resolve_protocol
from fedhar.data.splits import LabelSplit, make_label_split
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
# Harmony-style device mix for USC-HAD: subjects 1-4 wear both sensors, 5-8 an
# accelerometer only, 9-12 a gyroscope only (13-14 are test subjects).
HARMONY_USC = {**{s: ("acc", "gyro") for s in range(1, 5)}, **{s: ("acc",) for s in range(5, 9)},
               **{s: ("gyro",) for s in range(9, 15)}}


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _assert_rows_stay_with_subject(ds: HARDataset, split: LabelSplit, parts: dict[int, ClientPartition]) -> None:
    """Every training row is in its own subject's partition exactly once, with its label."""
    for side in ("labeled", "unlabeled"):
        rows: np.ndarray = getattr(split, side)
        for subject, part in parts.items():
            view: HARDataset = getattr(part, side)
            mine = rows[ds.subjects[rows] == subject]
            assert np.all(view.subjects == subject)
            assert np.array_equal(view.labels, ds.labels[mine]) and np.array_equal(view.trials, ds.trials[mine])
            for m in view.modalities:
                np.testing.assert_array_equal(view.data[m], ds.data[m][mine])
        assert sum(len(getattr(p, side)) for p in parts.values()) == rows.size


@pytest.fixture(scope="module")
def synthetic() -> tuple[HARDataset, LabelSplit]:
    cfg = _config("synthetic")
    ds = make_synthetic(cfg)
    return ds, make_label_split(ds, resolve_protocol(cfg, ds.info), 20, seed=0, scheme="fraction")


class TestPartitionBySubject:
    def test_partitions__one_per_train_subject_sorted(self, synthetic: Any) -> None:
        ds, split = synthetic
        parts = partition_by_subject(ds, split, {})
        assert list(parts) == [1, 2, 3, 4, 5]
        assert all(p.subject == s and p.modalities == ("imu", "noise") for s, p in parts.items())
        _assert_rows_stay_with_subject(ds, split, parts)

    def test_partitions__modality_subsets_respected(self, synthetic: Any) -> None:
        ds, split = synthetic
        parts = partition_by_subject(ds, split, {1: ["noise"], 2: ("noise", "imu"), 6: ("imu",)})
        assert parts[1].modalities == ("noise",) and parts[1].labeled.modalities == ("noise",)
        assert parts[1].unlabeled.modalities == ("noise",)
        assert parts[2].modalities == ("imu", "noise")  # dataset order, not listed order
        assert parts[3].modalities == ("imu", "noise")  # unlisted: all
        assert 6 not in parts  # test subject: validated, no partition
        _assert_rows_stay_with_subject(ds, split, parts)

    @pytest.mark.parametrize(
        ("subsets", "match", "culprit"),
        [
            ({1: ("acc",)}, r"unknown modalities \['acc'\]", "1"),  # not a modality of the data
            ({9: ("imu",)}, "subject 9 is not a subject", "9"),  # not a subject of the data
            ({2: ()}, "no modality", "2"),  # subject left without sensors
            ({3: ("imu", "imu")}, "twice", "3"),
            ({4: "imu"}, "not the string", "4"),  # a bare string, not a list
        ],
    )
    def test_raises__bad_modality_subsets(self, synthetic: Any, subsets: Any, match: str, culprit: str) -> None:
        ds, split = synthetic
        with pytest.raises(ConfigError, match=match) as err:
            partition_by_subject(ds, split, subsets)
        assert err.value.culprit == f"dataset.modality_subsets.{culprit}"

    def test_partition_ids__dense_and_sorted(self, synthetic: Any) -> None:
        ds, split = synthetic
        parts = partition_by_subject(ds, split, {})
        assert partition_ids(parts) == {0: 1, 1: 2, 2: 3, 3: 4, 4: 5}
        assert partition_ids([12, 3, 7]) == {0: 3, 1: 7, 2: 12}


@pytest.mark.realdata
class TestRealPartitions:
    def test_usc__harmony_modality_mix(self, data_dir: Path, cache_dir: Path) -> None:
        from fedhar.data.loading import load_dataset  # written alongside; imported late on purpose

        cfg = _config("usc-had", root=str(data_dir / "USC-HAD"), cache_dir=str(cache_dir))
        ds = load_dataset(cfg)
        split = make_label_split(ds, resolve_protocol(cfg, ds.info), 5, 0, cfg.label_scheme)
        parts = partition_by_subject(ds, split, HARMONY_USC)
        assert list(parts) == list(range(1, 13))
        for subject, part in parts.items():
            assert part.modalities == HARMONY_USC[subject]
            assert part.labeled.modalities == part.unlabeled.modalities == HARMONY_USC[subject]
            assert part.num_labeled > 0 and part.num_unlabeled > 0
        _assert_rows_stay_with_subject(ds, split, parts)

    def test_utd__cosmo_six_clients(self, data_dir: Path, cache_dir: Path) -> None:
        from fedhar.data.loading import load_dataset  # written alongside; imported late on purpose

        cfg = _config("utd-mhad", root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir))
        ds = load_dataset(cfg)
        split = make_label_split(ds, resolve_protocol(cfg, ds.info), 20, 0, cfg.label_scheme, cfg.sequences_per_class)
        parts = partition_by_subject(ds, split, {})
        assert list(parts) == [1, 2, 3, 4, 5, 6]
        assert sum(p.num_labeled for p in parts.values()) == 108
        assert all(p.modalities == ds.modalities for p in parts.values())
        _assert_rows_stay_with_subject(ds, split, parts)
