"""Tests of fedhar.pipeline.run_method on small synthetic data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from model_presets import compact_model_config

from fedhar.data.config import DatasetConfig
from fedhar.data.experiment import ExperimentData, prepare_experiment
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError
from fedhar.pipeline import MethodConfig, run_method
from fedhar.quality import QualityConfig, cluster_penalty
from fedhar.train.augment import AugmentConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig

NUM_CLASSES = 4
TINY1 = PretrainConfig(epochs=1, batch_size=16, progress=False)
TINY2 = FinetuneConfig(epochs=2, batch_size=8, t_iter=1, eval_every=1, progress=False)


def _experiment(modalities: dict[str, tuple[list[int], float]], label_rate: float = 25) -> ExperimentData:
    cfg = DatasetConfig(name="synthetic", protocol="default", protocols={"default": {"test_subjects": [4]}},
                        label_scheme="fraction", preprocess={
        "num_subjects": 4, "num_classes": NUM_CLASSES, "samples_per_subject_class": 10,
        "modalities": {m: {"shape": shape, "informativeness": info} for m, (shape, info) in modalities.items()},
        "subject_shift": 0.1, "noise_std": 0.5, "seed": 0})
    return prepare_experiment(make_synthetic(cfg), cfg, label_rate, seed=0)


@pytest.fixture(scope="module")
def imu_pair() -> ExperimentData:
    return _experiment({"acc": ([40, 3], 1.0), "gyro": ([40, 3], 0.3)})


@pytest.fixture(scope="module")
def mixed() -> ExperimentData:
    return _experiment({"inertial": ([40, 6], 1.0), "skeleton": ([40, 20, 3], 0.5)})


def _run(method: MethodConfig, exp: ExperimentData, seed: int = 0, stage2: FinetuneConfig = TINY2) -> dict:
    return run_method(method, exp, compact_model_config(), TINY1, stage2, QualityConfig(max_samples=200), seed)


class TestRunMethod:
    def test_cosmo__beats_chance_clearly(self, imu_pair: ExperimentData) -> None:
        stage2 = FinetuneConfig(epochs=12, batch_size=8, t_iter=3, eval_every=12, progress=False)
        results = run_method(MethodConfig(name="cosmo"), imu_pair, compact_model_config(), TINY1, stage2,
                             QualityConfig(max_samples=100), seed=0)
        assert results["accuracy"] > 2.0 / NUM_CLASSES
        # The prior is the normalised QoM scores q_j = H_j / c_j of the run's own Hopkins and cluster counts.
        qom, cfg = results["qom"], QualityConfig(max_samples=100)
        weights, scores = qom["weights"], qom["scores"]
        assert set(weights) == set(scores) == {"acc", "gyro"}
        assert sum(weights.values()) == pytest.approx(1.0) and all(0.0 < w < 1.0 for w in weights.values())
        for m in weights:
            assert scores[m] == pytest.approx(qom["hopkins"][m] / cluster_penalty(qom["clusters"][m], NUM_CLASSES, cfg))
            assert weights[m] == pytest.approx(scores[m] / sum(scores.values()))

    def test_cosmo_lda_head__beats_chance_with_one_stage2_record(self, mixed: ExperimentData) -> None:
        results = _run(MethodConfig(name="cosmo"), mixed, stage2=FinetuneConfig(head="lda", lda_passes=2))
        assert results["accuracy"] > 2.0 / NUM_CLASSES
        assert [r["phase"] for r in results["history"]["finetune"]] == ["lda"]
        assert results["best_epoch"] == 1 and results["best_epoch_accuracy"] == results["accuracy"]

    def test_results__keys_and_json(self, mixed: ExperimentData) -> None:
        results = _run(MethodConfig(name="cosmo"), mixed)
        for key in ("accuracy", "macro_f1", "best_epoch_accuracy", "best_epoch", "confusion", "wall_time_s",
                    "parameters", "history", "num_test"):
            assert key in results
        assert np.asarray(results["confusion"]).shape == (NUM_CLASSES, NUM_CLASSES)
        assert results["accuracy"] == pytest.approx(results["history"]["finetune"][-1]["test_accuracy"])
        assert [r["phase"] for r in results["history"]["finetune"]] == ["encoders", "classifier"]
        json.dumps(results)

    def test_seed__same_seed_same_results_other_seed_differs(self, imu_pair: ExperimentData) -> None:
        a, b, c = (_run(MethodConfig(name="cmc"), imu_pair, seed=s) for s in (0, 0, 1))
        assert a["history"]["finetune"][-1]["loss"] == b["history"]["finetune"][-1]["loss"]
        assert a["confusion"] == b["confusion"]
        assert a["history"]["finetune"][-1]["loss"] != c["history"]["finetune"][-1]["loss"]

    @pytest.mark.parametrize("method", [
        MethodConfig(name="cmc", use_qom=False, loss={"name": "cmc", "temperature": 0.07}),
        MethodConfig(name="deepsense"),
        MethodConfig(name="attnsense"),
        MethodConfig(name="supervised", modality="skeleton"),
    ])
    def test_methods__run_on_mixed_modalities(self, mixed: ExperimentData, method: MethodConfig) -> None:
        results = _run(method, mixed)
        assert 0.0 <= results["accuracy"] <= 1.0 and results["num_test"] == len(mixed.test)

    def test_two_views__cosmo_pretrains_on_stacked_copies_and_cmc_refuses(self, imu_pair: ExperimentData) -> None:
        two = PretrainConfig(epochs=1, batch_size=16, progress=False,
                             augment=AugmentConfig(rotation_deg=90.0, jitter=0.05, views=2))
        one = PretrainConfig(epochs=1, batch_size=16, progress=False, augment=AugmentConfig(rotation_deg=90.0, jitter=0.05))
        runs = [run_method(MethodConfig(name="cosmo"), imu_pair, compact_model_config(), stage1, TINY2,
                           QualityConfig(max_samples=100), seed=0) for stage1 in (two, one)]
        losses = [r["history"]["pretrain"][0]["loss"] for r in runs]
        assert all(np.isfinite(losses)) and losses[0] != losses[1]
        with pytest.raises(ConfigError, match="method=cosmo only"):
            run_method(MethodConfig(name="cmc"), imu_pair, compact_model_config(), two, TINY2, None, seed=0)

    def test_cpc__runs_on_imu_data(self, imu_pair: ExperimentData) -> None:
        method = MethodConfig(name="cpc", architecture={"prediction_steps": 4, "gru_hidden": 16,
                                                        "conv_channels": [8, 8], "classifier_hidden": [16]})
        results = _run(method, imu_pair)
        assert set(results["history"]) == {"pretrain", "supervised"}

    def test_cpc__rejects_skeleton_data(self, mixed: ExperimentData) -> None:
        with pytest.raises(ConfigError, match="IMU"):
            _run(MethodConfig(name="cpc"), mixed)

    def test_supervised__unknown_modality_raises(self, mixed: ExperimentData) -> None:
        with pytest.raises(ConfigError, match="unknown modality"):
            _run(MethodConfig(name="supervised", modality="depth"), mixed)


class TestMethodConfig:
    def test_supervised__needs_modality(self) -> None:
        with pytest.raises(ConfigError, match="modality"):
            MethodConfig(name="supervised")

    def test_from_mapping__unknown_key_raises(self) -> None:
        with pytest.raises(ConfigError, match=r"method: unknown keys"):
            MethodConfig.from_mapping({"name": "cosmo", "lr": 1})

    def test_label__names_the_modality(self) -> None:
        assert MethodConfig(name="supervised", modality="gyro").label == "supervised-gyro"
