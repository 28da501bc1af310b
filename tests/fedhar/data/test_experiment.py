"""Tests of experiment preparation: split, train-only normalisation, client partitions."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.experiment import ExperimentData, partition_norm_stats, prepare_experiment
from fedhar.data.normalization import NormStats, fit_normalizer
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
HARMONY_USC = {**{s: ("acc", "gyro") for s in range(1, 5)}, **{s: ("acc",) for s in range(5, 9)},
               **{s: ("gyro",) for s in range(9, 15)}}


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _train_moments(exp: ExperimentData, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the normalised training rows (labeled + unlabeled)."""
    x = np.concatenate([exp.labeled.data[modality], exp.unlabeled.data[modality]]).astype(np.float64)
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(axis=0), flat.std(axis=0)


@pytest.fixture(scope="module")
def synthetic() -> tuple[DatasetConfig, HARDataset]:
    cfg = _config("synthetic")
    return cfg, make_synthetic(cfg)


class TestPrepareExperiment:
    def test_views__match_split(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        exp = prepare_experiment(ds, cfg, 20, seed=0)
        assert exp.info is ds.info and exp.protocol.test_subjects == (6,)
        for name in ("labeled", "unlabeled", "test"):
            view, rows = getattr(exp, name), getattr(exp.split, name)
            assert np.array_equal(view.labels, ds.labels[rows]) and np.array_equal(view.subjects, ds.subjects[rows])
            assert view.modalities == ds.modalities
        assert list(exp.partitions) == [1, 2, 3, 4, 5]

    def test_normalisation__train_rows_standardised(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        exp = prepare_experiment(ds, cfg, 20, seed=0)
        for m in ds.modalities:
            mean, std = _train_moments(exp, m)
            np.testing.assert_allclose(mean, 0.0, atol=1e-5)
            np.testing.assert_allclose(std, 1.0, atol=1e-4)
            assert exp.test.data[m].dtype == np.float32

    def test_normalisation__test_subjects_never_contribute(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        test = ds.subjects == 6
        data = {m: np.where(test[:, None, None], 100 * a + 7, a) for m, a in ds.data.items()}
        shifted = dataclasses.replace(ds, data=data)
        a, b = prepare_experiment(ds, cfg, 20, seed=0), prepare_experiment(shifted, cfg, 20, seed=0)
        for m in ds.modalities:
            np.testing.assert_array_equal(a.normalizer.stats.mean(m), b.normalizer.stats.mean(m))
            np.testing.assert_array_equal(a.labeled.data[m], b.labeled.data[m])

    def test_normalisation__equals_pooled_fit_without_subsets(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        exp = prepare_experiment(ds, cfg, 20, seed=0)
        pooled = fit_normalizer(ds, exp.protocol.train_subjects)
        for m in ds.modalities:
            np.testing.assert_allclose(exp.normalizer.stats.mean(m), pooled.stats.mean(m), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(exp.normalizer.stats.std(m), pooled.stats.std(m), rtol=1e-10)

    def test_normalisation__merge_of_client_stats_with_subsets(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        cfg = dataclasses.replace(cfg, modality_subsets={1: ("imu",), 2: ("noise",)})
        exp = prepare_experiment(ds, cfg, 20, seed=0)
        # "imu" statistics come from subjects 1, 3, 4, 5 only (subject 2 has no imu).
        assert exp.normalizer.stats.moments["imu"].count == 4 * 60 * 60  # subjects x rows x time steps
        expected = fit_normalizer(ds, [1, 3, 4, 5]).stats.mean("imu")
        np.testing.assert_allclose(exp.normalizer.stats.mean("imu"), expected, atol=1e-12)
        # Per-client stats of the (normalised) partitions merge to a standard normal.
        merged = NormStats.merge(partition_norm_stats(p) for p in exp.partitions.values())
        np.testing.assert_allclose(merged.mean("imu"), 0.0, atol=1e-5)

    def test_partitions__normalised_like_central_views(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        cfg = dataclasses.replace(cfg, modality_subsets={3: ("noise",)})
        exp = prepare_experiment(ds, cfg, 20, seed=0)
        part = exp.partitions[3]
        assert part.modalities == ("noise",) and part.unlabeled.modalities == ("noise",)
        mine = exp.labeled.subjects == 3
        np.testing.assert_array_equal(part.labeled.data["noise"], exp.labeled.data["noise"][mine])
        np.testing.assert_array_equal(part.labeled.labels, exp.labeled.labels[mine])

    def test_seed__same_seed_same_data(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        a, b = prepare_experiment(ds, cfg, 10, seed=4), prepare_experiment(ds, cfg, 10, seed=4)
        np.testing.assert_array_equal(a.labeled.data["imu"], b.labeled.data["imu"])
        c = prepare_experiment(ds, cfg, 10, seed=5)
        assert not np.array_equal(a.split.labeled, c.split.labeled)

    def test_raises__modality_no_training_subject_exposes(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        cfg = dataclasses.replace(cfg, modality_subsets={s: ("imu",) for s in range(1, 6)})
        with pytest.raises(ConfigError, match=r"no training subject exposes modalities \['noise'\]"):
            prepare_experiment(ds, cfg, 20, seed=0)

    def test_raises__bad_rate(self, synthetic: Any) -> None:
        cfg, ds = synthetic
        with pytest.raises(ConfigError, match="label_rate"):
            prepare_experiment(ds, cfg, 0, seed=0)


@pytest.mark.realdata
class TestRealExperiment:
    def test_utd__cosmo_5_percent(self, data_dir: Path, cache_dir: Path) -> None:
        from fedhar.data.loading import load_dataset  # written alongside; imported late on purpose

        cfg = _config("utd-mhad", root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir))
        exp = prepare_experiment(load_dataset(cfg), cfg, 5, seed=0)
        assert (len(exp.labeled), len(exp.unlabeled), len(exp.test)) == (27, 619, 215)
        assert list(exp.partitions) == [1, 2, 3, 4, 5, 6]
        for m in exp.info.modality_names:
            mean, std = _train_moments(exp, m)
            np.testing.assert_allclose(mean, 0.0, atol=1e-4)
            np.testing.assert_allclose(std, 1.0, atol=1e-3)

    def test_usc__harmony_subsets(self, data_dir: Path, cache_dir: Path) -> None:
        from fedhar.data.loading import load_dataset  # written alongside; imported late on purpose

        root, cache = str(data_dir / "USC-HAD"), str(cache_dir)
        cfg = _config("usc-had", root=root, cache_dir=cache, modality_subsets=HARMONY_USC)
        ds = load_dataset(cfg)
        exp = prepare_experiment(ds, cfg, 1, seed=0)
        assert {s: p.modalities for s, p in exp.partitions.items()} == {s: HARMONY_USC[s] for s in range(1, 13)}
        gyro_rows = ds.indices_of_subjects([1, 2, 3, 4, *range(9, 13)]).size
        assert exp.normalizer.stats.moments["gyro"].count == gyro_rows * ds.info.modality("gyro").shape[0]
        assert exp.test.modalities == ("acc", "gyro")
