"""The classical baseline: window statistics + a scikit-learn classifier."""

from __future__ import annotations

import numpy as np
import pytest

from fedhar.baselines.classical import ClassicalModel, window_features
from fedhar.baselines.config import ClassicalConfig
from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError
from fedhar.pipeline import MethodConfig, run_method

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def experiment() -> ExperimentData:
    cfg = DatasetConfig(name="synthetic", protocol="default", protocols={"default": {"test_subjects": [4]}},
                        label_scheme="fraction", preprocess={
        "num_subjects": 4, "num_classes": NUM_CLASSES, "samples_per_subject_class": 20,
        "modalities": {"signal": {"shape": [40, 3], "informativeness": 1.0},
                       "noise": {"shape": [40, 3], "informativeness": 0.0}},
        "subject_shift": 0.1, "noise_std": 0.5, "seed": 0})
    return prepare_experiment(make_synthetic(cfg), cfg, 50, seed=0)


def _accuracy(experiment: ExperimentData, classifier: str, modality: str | None) -> float:
    method = MethodConfig(name="classical", modality=modality, architecture={"classifier": classifier,
                                                                             "n_estimators": 100})
    results = run_method(method, experiment, None, None, None, None, seed=0)  # type: ignore[arg-type]
    return float(results["accuracy"])


@pytest.mark.parametrize("classifier", ["random_forest", "logistic_regression"])
def test_informative_modality__beats_chance_clearly(experiment: ExperimentData, classifier: str) -> None:
    assert _accuracy(experiment, classifier, "signal") > 2.5 / NUM_CLASSES


@pytest.mark.parametrize("classifier", ["random_forest", "logistic_regression"])
def test_noise_modality__near_chance(experiment: ExperimentData, classifier: str) -> None:
    assert _accuracy(experiment, classifier, "noise") < 1.8 / NUM_CLASSES


def test_results__same_keys_as_deep_methods_and_deterministic(experiment: ExperimentData) -> None:
    method = MethodConfig(name="classical", architecture={"n_estimators": 50})
    a, b = (run_method(method, experiment, None, None, None, None, seed=1) for _ in range(2))  # type: ignore[arg-type]
    assert a["confusion"] == b["confusion"] and a["accuracy"] == b["accuracy"]
    assert np.asarray(a["confusion"]).sum() == a["num_test"] == len(experiment.test)
    assert a["method"] == "classical" and a["modalities"] == ["signal", "noise"]
    assert a["parameters"]["features"] == 2 * (3 * 10 + 1 * 10)


def test_window_features__imu_channel_and_magnitude_statistics() -> None:
    x = np.zeros((2, 5, 3))
    x[0, :, 0] = [1, 2, 3, 4, 5]
    x[1, :, 1] = -2.0
    feats = window_features(x)
    assert feats.shape == (2, 40)
    # channel 0 of sample 0: mean 3, min 1, max 5, mean absolute difference 1
    assert feats[0, 0] == pytest.approx(3.0) and feats[0, 6] == pytest.approx(1.0)
    assert feats[0, 9] == pytest.approx(5.0) and feats[0, 27] == pytest.approx(1.0)
    # the magnitude of sample 1 is 2 everywhere, whatever axis it lies on
    assert feats[1, 30] == pytest.approx(2.0) and feats[1, 31] == pytest.approx(0.0)


def test_window_features__skeleton_relative_to_first_joint() -> None:
    x = np.random.default_rng(0).normal(size=(3, 6, 20, 3))
    shifted = x + np.array([5.0, -1.0, 2.0])
    assert np.allclose(window_features(x), window_features(shifted))
    assert window_features(x).shape == (3, 20 * 3 * 10 + 20 * 10)


def test_window_features__bad_rank_rejected() -> None:
    with pytest.raises(ValueError, match="skeleton"):
        window_features(np.zeros((2, 3)))


def test_config__unknown_classifier_rejected() -> None:
    with pytest.raises(ConfigError, match="classifier"):
        ClassicalConfig(classifier="svm")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown"):
        ClassicalConfig.from_mapping({"trees": 3})


def test_model__missing_modality_named(experiment: ExperimentData) -> None:
    model = ClassicalModel(("signal", "depth"), ClassicalConfig(n_estimators=5), seed=0)
    with pytest.raises(KeyError, match="depth"):
        model.fit(experiment.labeled)
