"""Reading one subject's files: what a deployed device holds (its own subject, maybe stray files of others)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import yaml

from fedhar.data.cache import compute_cache_key
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.loading import load_dataset, load_dataset_with_report
from fedhar.data.usc_had import read_usc_had
from fedhar.data.utd_mhad import read_utd_mhad
from fedhar.errors import ConfigError, DataFormatError, DatasetNotFoundError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _assert_same_rows(got: HARDataset, full: HARDataset, subject: int) -> None:
    rows = full.indices_of_subjects([subject])
    assert len(got) == rows.size > 0
    for name in full.modalities:
        np.testing.assert_array_equal(got.data[name], full.data[name][rows])
    for field in ("labels", "subjects", "trials"):
        np.testing.assert_array_equal(getattr(got, field), getattr(full, field)[rows])


@pytest.mark.realdata
class TestUtdSubjectFilter:
    def test_read__own_subject__equals_the_full_dataset_rows(self, utd_device: Path, data_dir: Path,
                                                             cache_dir: Path) -> None:
        ds, report = read_utd_mhad(utd_device, subjects=[1])
        full = load_dataset(_config("utd-mhad", root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir)))
        assert ds.info.subjects == (1,) and report.num_skipped == 0
        _assert_same_rows(ds, full, 1)

    def test_read__no_filter__fails_on_another_subjects_missing_trials(self, utd_device: Path) -> None:
        # Without the filter the device's folder looks like a damaged full dataset.
        with pytest.raises(DataFormatError, match="incomplete"):
            read_utd_mhad(utd_device)

    def test_read__requested_subject_incomplete__names_its_missing_trial(self, utd_device: Path) -> None:
        with pytest.raises(DataFormatError, match=r"a1_s2_t2 is incomplete") as err:
            read_utd_mhad(utd_device, subjects=[2])
        assert "_s2_" in str(err.value.culprit)

    def test_read__requested_subject_absent__names_folder_and_subject(self, utd_device: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match="no file of subject 3") as err:
            read_utd_mhad(utd_device, subjects=[3])
        assert err.value.culprit == str(utd_device / "Inertial")

    def test_read__subject_outside_the_dataset__raises(self, utd_device: Path) -> None:
        with pytest.raises(ConfigError, match=r"subjects 1..8; cannot read subjects \[9\]"):
            read_utd_mhad(utd_device, subjects=[9])

    def test_load__cache_entry_is_per_subject_filter(self, utd_device: Path, tmp_path: Path) -> None:
        cfg = _config("utd-mhad", root=str(utd_device), cache_dir=str(tmp_path / "cache"))
        first, report1 = load_dataset_with_report(cfg, progress=False, subjects=[1])
        again, report2 = load_dataset_with_report(cfg, progress=False, subjects=(1,))
        assert not report1.from_cache and report2.from_cache and report1.cache_path == report2.cache_path
        assert again.info.subjects == (1,) and np.array_equal(again.labels, first.labels)
        with pytest.raises(DataFormatError):  # subject 2 has its own key: no hit, its files are read and checked
            load_dataset_with_report(cfg, progress=False, subjects=[2])


@pytest.mark.realdata
class TestUscSubjectFilter:
    def test_read__own_subject__equals_the_full_dataset_rows(self, usc_device: Path, data_dir: Path,
                                                             cache_dir: Path) -> None:
        ds, _ = read_usc_had(usc_device, subjects=[1])
        full = load_dataset(_config("usc-had", root=str(data_dir / "USC-HAD"), cache_dir=str(cache_dir)))
        assert ds.info.subjects == (1,)
        _assert_same_rows(ds, full, 1)

    def test_read__no_filter__fails_on_another_subjects_missing_trials(self, usc_device: Path) -> None:
        with pytest.raises(DataFormatError, match="of subject 2 not found"):
            read_usc_had(usc_device)

    def test_read__requested_subject_incomplete__names_its_missing_trial(self, usc_device: Path) -> None:
        with pytest.raises(DataFormatError, match="trial 2 of activity 1 of subject 2 not found") as err:
            read_usc_had(usc_device, subjects=[2])
        assert err.value.culprit == str(usc_device / "Subject2" / "a1t2.mat")

    def test_read__requested_subject_absent__names_folder_and_subject(self, usc_device: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match="for subject 3") as err:
            read_usc_had(usc_device, subjects=[3])
        assert err.value.culprit == str(usc_device / "Subject3")

    def test_read__empty_filter__raises(self, usc_device: Path) -> None:
        with pytest.raises(ConfigError, match="filter is empty"):
            read_usc_had(usc_device, subjects=[])


class TestSyntheticSubjectFilter:
    def test_load__keeps_only_the_requested_subject(self) -> None:
        cfg = _config("synthetic")
        full, own = load_dataset(cfg), load_dataset(cfg, subjects=[2])
        assert own.info.subjects == (2,) and set(own.subjects.tolist()) == {2}
        _assert_same_rows(own, full, 2)

    def test_load__unknown_subject__raises(self) -> None:
        with pytest.raises(ConfigError, match="cannot read subjects"):
            load_dataset(_config("synthetic"), subjects=[99])


class TestCacheKey:
    BASE: ClassVar[dict[str, Any]] = {"dataset": "usc-had", "reader_version": 1, "preprocess": {"window_s": 2.0},
                            "skip_bad_files": False, "fingerprint": [("Subject1/a1t1.mat", 10, 5)]}

    def test_key__depends_on_the_subject_filter(self) -> None:
        keys = {compute_cache_key(**self.BASE, subjects=s) for s in (None, [1], [2], [1, 2])}
        assert len(keys) == 4
        assert compute_cache_key(**self.BASE, subjects=[2, 1]) == compute_cache_key(**self.BASE, subjects=(1, 2))

    def test_key__without_filter__unchanged(self) -> None:
        # Caches written before subject filters existed stay valid (value computed by the old code).
        assert compute_cache_key(**self.BASE) == compute_cache_key(**self.BASE, subjects=None)
        assert compute_cache_key(**self.BASE) == "16e91444d4c7cbb7158460d816a870524f72f6e4140836e27007cf7f741fd4bf"
