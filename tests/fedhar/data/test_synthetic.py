"""Tests of the synthetic dataset generator."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from fedhar.data.config import DatasetConfig
from fedhar.data.synthetic import SyntheticSettings, make_synthetic
from fedhar.errors import ConfigError

CONFIG_PATH = Path(__file__).resolve().parents[3] / "configs" / "dataset" / "synthetic.yaml"


def _config(**preprocess: Any) -> DatasetConfig:
    """The shipped synthetic config, with ``preprocess`` keys replaced."""
    cfg = DatasetConfig.from_mapping(yaml.safe_load(CONFIG_PATH.read_text()))
    return dataclasses.replace(cfg, preprocess={**cfg.preprocess, **preprocess})


def _accuracy(cfg: DatasetConfig, modality: str) -> float:
    """Held-out-subject accuracy of a logistic regression on one flattened modality."""
    ds = make_synthetic(cfg)
    test = ds.subjects == ds.info.subjects[-1]
    x = ds.data[modality].reshape(len(ds), -1)
    clf = LogisticRegression(max_iter=1000).fit(x[~test], ds.labels[~test])
    return float(clf.score(x[test], ds.labels[test]))


class TestSyntheticSettings:
    def test_from_mapping__parses_shipped_config(self) -> None:
        settings = SyntheticSettings.from_mapping(_config().preprocess)
        assert settings.num_subjects == 6
        assert [m.name for m in settings.modalities] == ["imu", "noise"]
        assert settings.modalities[1].informativeness == 0.0

    @pytest.mark.parametrize(
        ("override", "match"),
        [
            ({"num_subjects": 0}, "num_subjects"),  # no subject
            ({"num_classes": -1}, "num_classes"),  # negative size
            ({"samples_per_subject_class": 1.5}, "integer"),  # fractional count
            ({"noise_std": -0.1}, "noise_std"),  # negative std
            ({"subject_shift": "big"}, "number"),  # not a number
            ({"modalities": {}}, "at least one modality"),
            ({"modalities": {"imu": {"shape": [0, 3], "informativeness": 1.0}}}, "positive"),
            ({"modalities": {"imu": {"shape": [], "informativeness": 1.0}}}, "non-empty"),
            ({"modalities": {"imu": {"shape": [10, 3], "informativeness": 1.5}}}, r"\[0, 1\]"),
            ({"modalities": {"imu": {"shape": [10, 3], "informativeness": -0.5}}}, r"\[0, 1\]"),
            ({"modalities": {"imu": {"shape": [10, 3]}}}, "informativeness"),  # missing key
            ({"window": 3}, "unknown keys"),  # unknown key
        ],
    )
    def test_make_synthetic__raises__bad_setting(self, override: dict[str, Any], match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            make_synthetic(_config(**override))

    def test_make_synthetic__raises__missing_setting(self) -> None:
        cfg = _config()
        preprocess = {k: v for k, v in cfg.preprocess.items() if k != "seed"}
        with pytest.raises(ConfigError, match="missing synthetic settings"):
            make_synthetic(dataclasses.replace(cfg, preprocess=preprocess))

    def test_make_synthetic__raises__other_dataset(self) -> None:
        with pytest.raises(ConfigError, match="synthetic"):
            make_synthetic(dataclasses.replace(_config(), name="usc-had"))


class TestMakeSynthetic:
    def test_layout__shapes_labels_subjects_trials(self) -> None:
        ds = make_synthetic(_config())
        n = 6 * 5 * 12
        assert len(ds) == n
        assert ds.data["imu"].shape == (n, 60, 6) and ds.data["imu"].dtype == np.float32
        assert ds.modalities == ("imu", "noise")
        assert ds.labels.dtype == np.int64 and set(ds.labels.tolist()) == set(range(5))
        assert ds.info.subjects == (1, 2, 3, 4, 5, 6) and set(ds.subjects.tolist()) == set(range(1, 7))
        assert set(ds.trials.tolist()) == set(range(1, 13))
        keys = set(zip(ds.subjects.tolist(), ds.labels.tolist(), ds.trials.tolist(), strict=True))
        assert len(keys) == n  # every (subject, class, trial) exactly once

    def test_layout__skeleton_like_shape(self) -> None:
        mods = {"skeleton": {"shape": [40, 20, 3], "informativeness": 0.5}}
        ds = make_synthetic(_config(modalities=mods))
        assert ds.data["skeleton"].shape == (len(ds), 40, 20, 3)
        assert ds.info.modality("skeleton").channel_names == ("c0", "c1", "c2")

    def test_determinism__same_seed_same_data(self) -> None:
        a, b = make_synthetic(_config()), make_synthetic(_config())
        for m in a.modalities:
            np.testing.assert_array_equal(a.data[m], b.data[m])
        np.testing.assert_array_equal(a.labels, b.labels)

    def test_determinism__other_seed_other_data(self) -> None:
        a, b = make_synthetic(_config(seed=0)), make_synthetic(_config(seed=1))
        assert not np.allclose(a.data["imu"], b.data["imu"])

    def test_determinism__adding_a_modality_keeps_earlier_ones(self) -> None:
        base = _config()
        extra = {**base.preprocess["modalities"], "extra": {"shape": [10, 2], "informativeness": 1.0}}
        a, b = make_synthetic(base), make_synthetic(_config(modalities=extra))
        np.testing.assert_array_equal(a.data["imu"], b.data["imu"])
        np.testing.assert_array_equal(a.data["noise"], b.data["noise"])

    def test_informativeness__informative_modality_well_above_chance(self) -> None:
        cfg = _config(samples_per_subject_class=30)
        assert _accuracy(cfg, "imu") > 0.9  # chance is 0.2

    def test_informativeness__noise_modality_near_chance(self) -> None:
        cfg = _config(samples_per_subject_class=30)
        assert _accuracy(cfg, "noise") < 0.3  # chance is 0.2; 150 test rows

    def test_subject_shift__separates_subject_means(self) -> None:
        def spread(shift: float) -> float:
            ds = make_synthetic(_config(subject_shift=shift))
            means = [ds.data["noise"][ds.subjects == s].mean() for s in ds.info.subjects]
            return float(np.std(means))

        assert spread(0.0) < 0.05 < spread(0.5)
