"""Tests of the UTD-MHAD reader against the real published files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.loading import load_dataset
from fedhar.data.preprocess import resample_linear
from fedhar.data.utd_mhad import ACTION_NAMES, JOINT_NAMES, KNOWN_MISSING_TRIALS, UTDPreprocess, read_utd_mhad
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
NUM_SEQUENCES = 861


def _config(**override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / "utd-mhad.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


@pytest.fixture(scope="module")
def utd(data_dir: Path, cache_dir: Path) -> HARDataset:
    return load_dataset(_config(root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir)))


def _row(ds: HARDataset, action: int, subject: int, trial: int) -> int:
    (rows,) = np.nonzero((ds.labels == action - 1) & (ds.subjects == subject) & (ds.trials == trial))
    assert len(rows) == 1
    return int(rows[0])


@pytest.mark.realdata
class TestReadUtdMhad:
    def test_counts__861_sequences_8_subjects_27_classes(self, utd: HARDataset) -> None:
        assert len(utd) == NUM_SEQUENCES
        assert utd.info.subjects == tuple(range(1, 9))
        assert utd.info.num_classes == 27 and np.array_equal(np.unique(utd.labels), np.arange(27))
        assert len({(a, s, t) for a, s, t in zip(utd.labels, utd.subjects, utd.trials, strict=True)}) == NUM_SEQUENCES

    def test_counts__per_subject_and_class(self, utd: HARDataset) -> None:
        # Prepare: 4 trials per (action, subject), one fewer where a known trial is missing
        expected = np.full((27, 8), 4)
        for a, s, _ in KNOWN_MISSING_TRIALS:
            expected[a - 1, s - 1] -= 1
        # Execute
        counts = np.zeros((27, 8), dtype=int)
        np.add.at(counts, (utd.labels, utd.subjects - 1), 1)
        # Assert
        np.testing.assert_array_equal(counts, expected)
        assert sorted(np.bincount(utd.subjects)[1:].tolist()) == [107, 107, 107, 108, 108, 108, 108, 108]

    def test_known_missing_trials__absent(self, utd: HARDataset) -> None:
        present = set(zip(utd.labels + 1, utd.subjects, utd.trials, strict=True))
        assert not present & KNOWN_MISSING_TRIALS

    def test_arrays__cosmo_shapes_float32_finite(self, utd: HARDataset) -> None:
        assert utd.data["inertial"].shape == (NUM_SEQUENCES, 120, 6)
        assert utd.data["skeleton"].shape == (NUM_SEQUENCES, 40, 20, 3)
        for arr in utd.data.values():
            assert arr.dtype == np.float32 and np.isfinite(arr).all()
        for arr in (utd.labels, utd.subjects, utd.trials):
            assert arr.dtype == np.int64

    def test_info__rates_channels_and_class_names(self, utd: HARDataset) -> None:
        inertial, skeleton = utd.info.modality("inertial"), utd.info.modality("skeleton")
        assert (inertial.sample_rate_hz, skeleton.sample_rate_hz) == (50.0, 30.0)
        assert inertial.channel_names == ("acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z")
        assert skeleton.channel_names == ("x", "y", "z")
        assert utd.info.class_names[0] == "right arm swipe to the left"
        assert utd.info.class_names[26] == "squat (two arms stretch out)"

    def test_joint_names__match_joint_order_file(self, data_dir: Path) -> None:
        text = (data_dir / "UTD-MHAD" / "Skeleton" / "Skeleton_joint_order.txt").read_text()
        listed = [line.split(".", 1)[1].strip(" ;") for line in text.splitlines() if line[:1].isdigit()]
        assert tuple(listed) == JOINT_NAMES

    @pytest.mark.parametrize(("action", "subject", "trial"), [(1, 1, 1), (2, 3, 1), (27, 8, 3)])
    def test_sample__equals_resampled_raw_files(
        self, utd: HARDataset, data_dir: Path, action: int, subject: int, trial: int
    ) -> None:
        stem = data_dir / "UTD-MHAD"
        name = f"a{action}_s{subject}_t{trial}"
        imu = scipy.io.loadmat(stem / "Inertial" / f"{name}_inertial.mat")["d_iner"]
        skel = scipy.io.loadmat(stem / "Skeleton" / f"{name}_skeleton.mat")["d_skel"]
        row = _row(utd, action, subject, trial)
        np.testing.assert_allclose(utd.data["inertial"][row], resample_linear(imu, 120), rtol=1e-6, atol=1e-6)
        expected_skel = resample_linear(skel.transpose(2, 0, 1), 40)  # (frames, joints, coords)
        np.testing.assert_allclose(utd.data["skeleton"][row], expected_skel, rtol=1e-6, atol=1e-6)
        # endpoints are kept exactly (up to float32)
        np.testing.assert_allclose(utd.data["skeleton"][row, 0], skel[:, :, 0], rtol=1e-6)


class TestUTDPreprocess:
    def test_defaults__equal_the_yaml(self) -> None:
        assert UTDPreprocess.from_mapping(_config().preprocess) == UTDPreprocess()

    def test_from_mapping__raises__unknown_key(self) -> None:
        with pytest.raises(ConfigError, match="imu_len"):
            UTDPreprocess.from_mapping({"imu_len": 120})

    @pytest.mark.parametrize("value", [1, 0, 2.5])
    def test_init__raises__bad_length(self, value: Any) -> None:
        with pytest.raises(ConfigError):
            UTDPreprocess(imu_length=value)

    @pytest.mark.realdata
    def test_read__custom_lengths(self, data_dir: Path) -> None:
        ds, report = read_utd_mhad(data_dir / "UTD-MHAD", UTDPreprocess(imu_length=60, skeleton_frames=25))
        assert ds.data["inertial"].shape == (NUM_SEQUENCES, 60, 6)
        assert ds.data["skeleton"].shape == (NUM_SEQUENCES, 25, 20, 3)
        assert ds.info.modality("skeleton").shape == (25, 20, 3)
        assert report.files_read == 2 * NUM_SEQUENCES and report.num_skipped == 0
        assert ACTION_NAMES == ds.info.class_names
