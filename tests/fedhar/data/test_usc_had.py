"""Tests of the USC-HAD reader against the real published files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.loading import load_dataset
from fedhar.data.usc_had import ACTIVITY_NAMES, START_INDEX, USCPreprocess, read_usc_had
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
WINDOW, STRIDE = 200, 100  # 2 s every 1 s at 100 Hz (configs/dataset/usc-had.yaml)


def _config(**override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / "usc-had.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


@pytest.fixture(scope="module")
def usc(data_dir: Path, cache_dir: Path) -> HARDataset:
    return load_dataset(_config(root=str(data_dir / "USC-HAD"), cache_dir=str(cache_dir)))


@pytest.fixture(scope="module")
def raw_lengths(data_dir: Path) -> dict[tuple[int, int, int], int]:
    """(subject, label, trial) -> number of samples, from the raw files."""
    out = {}
    for path in (data_dir / "USC-HAD").glob("Subject*/a*t*.mat"):
        subject = int(path.parent.name.removeprefix("Subject"))
        activity, trial = (int(g) for g in re.findall(r"\d+", path.name))
        readings = scipy.io.loadmat(path, variable_names=["sensor_readings"])["sensor_readings"]
        out[(subject, activity - 1, trial)] = len(readings)
    return out


def _trial_rows(ds: HARDataset, subject: int, label: int, trial: int) -> np.ndarray:
    return np.flatnonzero((ds.subjects == subject) & (ds.labels == label) & (ds.trials == trial))


@pytest.mark.realdata
class TestReadUscHad:
    def test_counts__840_trials_14_subjects_12_classes(self, usc: HARDataset) -> None:
        trials = set(zip(usc.subjects.tolist(), usc.labels.tolist(), usc.trials.tolist(), strict=True))
        assert len(trials) == 840
        assert usc.info.subjects == tuple(range(1, 15))
        assert usc.info.num_classes == 12 and np.array_equal(np.unique(usc.labels), np.arange(12))

    def test_arrays__window_shapes_float32_finite(self, usc: HARDataset) -> None:
        for name in ("acc", "gyro"):
            assert usc.data[name].shape == (len(usc), WINDOW, 3)
            assert usc.data[name].dtype == np.float32 and np.isfinite(usc.data[name]).all()
        assert usc.info.modality("acc").sample_rate_hz == 100.0
        assert usc.info.modality("gyro").channel_names == ("gyro_x", "gyro_y", "gyro_z")

    def test_windows__never_cross_trials(self, usc: HARDataset, raw_lengths: dict[tuple[int, int, int], int]) -> None:
        starts = usc.extra[START_INDEX]
        for key, length in raw_lengths.items():
            rows = _trial_rows(usc, *key)
            expected = np.arange(0, length - WINDOW + 1, STRIDE)
            np.testing.assert_array_equal(starts[rows], expected, err_msg=f"trial {key}")
        assert len(usc) == sum((n - WINDOW) // STRIDE + 1 for n in raw_lengths.values())

    @pytest.mark.parametrize(("subject", "activity", "trial", "k"), [(1, 1, 1, 0), (2, 5, 3, 3), (13, 11, 4, 2)])
    def test_window__equals_raw_slice(
        self, usc: HARDataset, data_dir: Path, subject: int, activity: int, trial: int, k: int
    ) -> None:
        raw = scipy.io.loadmat(data_dir / "USC-HAD" / f"Subject{subject}" / f"a{activity}t{trial}.mat")
        window = raw["sensor_readings"][k * STRIDE : k * STRIDE + WINDOW]
        row = _trial_rows(usc, subject, activity - 1, trial)[k]
        assert usc.extra[START_INDEX][row] == k * STRIDE
        np.testing.assert_array_equal(usc.data["acc"][row], window[:, :3].astype(np.float32))
        np.testing.assert_array_equal(usc.data["gyro"][row], window[:, 3:].astype(np.float32))

    def test_quirk__subject14_a3t2__label_from_file_name(self, usc: HARDataset, data_dir: Path) -> None:
        # Prepare: the file says activity 2 inside; its name says activity 3
        raw = scipy.io.loadmat(data_dir / "USC-HAD" / "Subject14" / "a3t2.mat")
        assert str(raw["activity_number"][0]) == "2"
        # Execute
        rows = _trial_rows(usc, 14, 2, 2)
        # Assert: label 2 (activity 3) holds that file's windows
        np.testing.assert_array_equal(usc.data["acc"][rows[0]], raw["sensor_readings"][:WINDOW, :3].astype(np.float32))

    def test_class_names__match_readme(self, usc: HARDataset, data_dir: Path) -> None:
        text = (data_dir / "USC-HAD" / "Readme.txt").read_text(errors="replace")
        section = text.split("Activities", 1)[1]
        listed = re.findall(r"^\s*(\d+)\.\s*(.+?)\s*$", section, flags=re.MULTILINE)
        assert [int(n) for n, _ in listed] == list(range(1, 13))
        assert tuple(name for _, name in listed) == ACTIVITY_NAMES == usc.info.class_names

    def test_short_trials__no_window_and_reported(
        self, data_dir: Path, raw_lengths: dict[tuple[int, int, int], int]
    ) -> None:
        # Prepare: 60 s windows are longer than some trials
        pre = USCPreprocess(window_s=60.0, stride_s=30.0)
        short = {k for k, n in raw_lengths.items() if n < 6000}
        assert 0 < len(short) < len(raw_lengths)
        # Execute
        ds, report = read_usc_had(data_dir / "USC-HAD", pre)
        # Assert
        assert len(report.too_short) == len(short) and report.num_skipped == 0
        present = set(zip(ds.subjects.tolist(), ds.labels.tolist(), ds.trials.tolist(), strict=True))
        assert present == set(raw_lengths) - short
        assert ds.data["acc"].shape[1:] == (6000, 3)


class TestUSCPreprocess:
    def test_defaults__equal_the_yaml(self) -> None:
        pre = USCPreprocess.from_mapping(_config().preprocess)
        assert pre == USCPreprocess() and (pre.window_samples, pre.stride_samples) == (WINDOW, STRIDE)

    @pytest.mark.parametrize(
        ("cfg", "culprit"),
        [
            ({"window_s": 0.005}, "dataset.preprocess.window_s"),  # half a sample
            ({"stride_s": 0}, "dataset.preprocess.stride_s"),
            ({"window": 2.0}, "dataset.preprocess"),  # unknown key
            ({"window_s": "long"}, "dataset.preprocess.window_s"),  # not a number
        ],
    )
    def test_from_mapping__raises__bad_setting(self, cfg: dict[str, Any], culprit: str) -> None:
        with pytest.raises(ConfigError) as err:
            USCPreprocess.from_mapping(cfg)
        assert err.value.culprit == culprit
