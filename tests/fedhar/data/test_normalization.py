"""Tests of train-subject normalisation and its mergeable statistics."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.data.loading import load_dataset
from fedhar.data.normalization import ChannelMoments, Normalizer, NormStats, fit_normalizer

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"


def _config(**override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / "utd-mhad.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


@pytest.fixture(scope="module")
def utd(data_dir: Path, cache_dir: Path) -> tuple[DatasetConfig, HARDataset]:
    cfg = _config(root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir))
    return cfg, load_dataset(cfg)


def _toy(constant_channel: bool = False) -> HARDataset:
    """4 subjects x 5 rows; IMU (6, 3) and a skeleton-like (6, 2, 3) modality with offsets."""
    rng = np.random.default_rng(1)
    n = 20
    imu = rng.normal(loc=[1.0, -2.0, 50.0], scale=[0.5, 3.0, 10.0], size=(n, 6, 3))
    if constant_channel:
        imu[..., 1] = 7.0
    info = DatasetInfo(
        "toy",
        (ModalitySpec("imu", (6, 3), 50.0), ModalitySpec("skel", (6, 2, 3), 30.0)),
        ("a", "b"),
        (1, 2, 3, 4),
    )
    return HARDataset(
        info=info,
        data={"imu": imu.astype(np.float32), "skel": rng.normal(2.0, 0.2, size=(n, 6, 2, 3)).astype(np.float32)},
        labels=np.arange(n) % 2,
        subjects=np.repeat([1, 2, 3, 4], 5),
        trials=np.ones(n, dtype=np.int64),
    )


def _numpy_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.astype(np.float64).reshape(-1, x.shape[-1])
    return flat.mean(axis=0), flat.std(axis=0)


class TestNormStats:
    def test_stats__equal_numpy_over_all_rows(self) -> None:
        ds = _toy()
        stats = NormStats.from_dataset(ds)
        for name, arr in ds.data.items():
            mean, std = _numpy_stats(arr)
            np.testing.assert_allclose(stats.mean(name), mean, rtol=1e-10)
            np.testing.assert_allclose(stats.std(name), std, rtol=1e-8)
        assert stats.moments["skel"].count == 20 * 6 * 2

    def test_merge__equals_pooled_data(self) -> None:
        ds = _toy()
        parts = [NormStats.from_dataset(ds.subset(ds.indices_of_subjects([s]))) for s in (1, 2, 3, 4)]
        merged, pooled = NormStats.merge(parts), NormStats.from_dataset(ds)
        for name in ds.data:
            assert merged.moments[name].count == pooled.moments[name].count
            np.testing.assert_allclose(merged.mean(name), pooled.mean(name), rtol=1e-12)
            np.testing.assert_allclose(merged.std(name), pooled.std(name), rtol=1e-10)

    def test_merge__modality_missing_in_some_parts(self) -> None:
        ds = _toy()
        imu_only = NormStats.from_dataset(ds.subset(range(10)).with_modalities(["imu"]))
        both = NormStats.from_dataset(ds.subset(range(10, 20)))
        merged = NormStats.merge([imu_only, both])
        np.testing.assert_allclose(merged.mean("imu"), NormStats.from_dataset(ds).mean("imu"), rtol=1e-12)
        np.testing.assert_allclose(merged.mean("skel"), both.mean("skel"), rtol=1e-12)

    def test_merge__raises__empty_or_mismatched(self) -> None:
        with pytest.raises(ValueError, match="empty"):
            NormStats.merge([])
        a = ChannelMoments.from_array(np.ones((2, 3)))
        with pytest.raises(ValueError, match="channels"):
            _ = a + ChannelMoments.from_array(np.ones((2, 4)))

    def test_dict__roundtrip(self) -> None:
        stats = NormStats.from_dataset(_toy())
        back = NormStats.from_dict(stats.to_dict())
        for name in stats.moments:
            np.testing.assert_array_equal(back.mean(name), stats.mean(name))
            np.testing.assert_array_equal(back.std(name), stats.std(name))


class TestNormalizer:
    def test_apply__train_rows_standardised_float32_input_untouched(self) -> None:
        ds = _toy()
        before = {k: v.copy() for k, v in ds.data.items()}
        out = fit_normalizer(ds, [1, 2, 3]).apply(ds)
        train = ds.indices_of_subjects([1, 2, 3])
        for name, arr in out.data.items():
            assert arr.dtype == np.float32 and arr.shape == ds.data[name].shape
            mean, std = _numpy_stats(arr[train])
            np.testing.assert_allclose(mean, 0.0, atol=1e-5)
            np.testing.assert_allclose(std, 1.0, rtol=1e-5)
            np.testing.assert_array_equal(ds.data[name], before[name])
        assert out.labels is ds.labels and out.info == ds.info

    def test_apply__constant_channel__centred_not_divided(self) -> None:
        out = fit_normalizer(_toy(constant_channel=True), [1, 2, 3, 4]).apply(_toy(constant_channel=True))
        assert np.isfinite(out.data["imu"]).all()
        np.testing.assert_array_equal(out.data["imu"][..., 1], 0.0)

    def test_apply__raises__modality_without_stats(self) -> None:
        ds = _toy()
        norm = fit_normalizer(ds.with_modalities(["imu"]), [1])
        with pytest.raises(KeyError, match="skel"):
            norm.apply(ds)

    def test_fit__raises__no_train_rows(self) -> None:
        with pytest.raises(ValueError, match="no rows"):
            fit_normalizer(_toy(), [9])

    def test_save_load__roundtrip(self, tmp_path: Path) -> None:
        ds = _toy()
        norm = fit_normalizer(ds, [1, 2])
        norm.save(tmp_path / "norm.json")
        back = Normalizer.load(tmp_path / "norm.json")
        assert back.min_std == norm.min_std
        for name in ds.data:
            np.testing.assert_array_equal(back.apply(ds).data[name], norm.apply(ds).data[name])


@pytest.mark.realdata
class TestTrainSubjectsOnly:
    def test_stats__equal_numpy_over_train_subject_rows(self, utd: tuple[DatasetConfig, HARDataset]) -> None:
        cfg, ds = utd
        train_subjects = sorted(set(ds.info.subjects) - set(cfg.test_subjects))
        assert train_subjects == [1, 2, 3, 4, 5, 6]
        norm = fit_normalizer(ds, train_subjects)
        rows = np.isin(ds.subjects, train_subjects)
        for name, arr in ds.data.items():
            mean, std = _numpy_stats(arr[rows])
            np.testing.assert_allclose(norm.stats.mean(name), mean, rtol=1e-9)
            np.testing.assert_allclose(norm.stats.std(name), std, rtol=1e-9)

    def test_stats__unchanged__when_test_subject_data_changes(self, utd: tuple[DatasetConfig, HARDataset]) -> None:
        # Prepare: a copy whose test-subject rows are wildly different
        cfg, ds = utd
        test_rows = ds.indices_of_subjects(cfg.test_subjects)
        changed = {}
        for name, arr in ds.data.items():
            new = arr.copy()
            new[test_rows] = new[test_rows] * 1000.0 + 123.0
            changed[name] = new
        other = dataclasses.replace(ds, data=changed)
        train = sorted(set(ds.info.subjects) - set(cfg.test_subjects))
        # Execute
        a, b = fit_normalizer(ds, train), fit_normalizer(other, train)
        # Assert
        for name in ds.data:
            np.testing.assert_array_equal(a.stats.moments[name].sum, b.stats.moments[name].sum)
            np.testing.assert_array_equal(a.stats.moments[name].sum_sq, b.stats.moments[name].sum_sq)
        assert not np.array_equal(fit_normalizer(other, ds.info.subjects).stats.mean("inertial"),
                                  a.stats.mean("inertial"))  # fmt: skip
