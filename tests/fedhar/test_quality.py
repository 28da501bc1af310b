"""QoM: Hopkins statistic, cluster-count selection and per-modality weights on known data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_presets import compact_model_config
from sklearn.datasets import make_blobs

from fedhar.data.dataset import ModalitySpec
from fedhar.models import ContrastiveFusionModel
from fedhar.quality import (
    QualityConfig,
    cluster_penalty,
    compute_client_qom,
    compute_hopkins,
    compute_qom,
    encode_for_quality,
    select_cluster_count,
)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quality" / "default.yaml"


def _blobs(n: int, centers: int, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = make_blobs(n, n_features=dim, centers=centers, cluster_std=0.5, center_box=(-20, 20), random_state=seed)
    return x, y


class TestComputeHopkins:
    @pytest.mark.parametrize("dim", [2, 5, 10])
    def test_hopkins__about_half_on_uniform(self, dim: int) -> None:
        x = np.random.default_rng(100 + dim).uniform(size=(600, dim))
        assert 0.4 < compute_hopkins(x, seed=7) < 0.6

    def test_hopkins__near_one_on_blobs(self) -> None:
        assert compute_hopkins(_blobs(500, 4)[0], seed=1) > 0.85

    def test_hopkins__constant_data_is_half(self) -> None:
        assert compute_hopkins(np.ones((10, 3))) == 0.5

    @pytest.mark.parametrize(
        ("x", "kwargs"),
        [(np.ones(5), {}), (np.ones((1, 3)), {}), (np.ones((5, 3)), {"sample_size": 5})],
        ids=["1-D", "one point", "sample_size >= N"],
    )
    def test_hopkins__bad_input_raises(self, x: np.ndarray, kwargs: dict) -> None:
        with pytest.raises(ValueError):
            compute_hopkins(x, **kwargs)


class TestSelectClusterCount:
    @pytest.mark.parametrize("centers", [4, 7])
    @pytest.mark.parametrize("criterion", ["silhouette", "calinski_harabasz"])
    def test_select__recovers_blob_count(self, centers: int, criterion: str) -> None:
        x, _ = _blobs(70 * centers, centers, seed=centers)
        assert select_cluster_count(x, range(2, 11), criterion=criterion) == centers

    def test_select__no_usable_k_raises(self) -> None:
        with pytest.raises(ValueError, match="no cluster count"):
            select_cluster_count(np.random.default_rng(0).normal(size=(5, 2)), range(6, 9))

    def test_select__unknown_criterion_raises(self) -> None:
        with pytest.raises(ValueError, match="criterion"):
            select_cluster_count(np.zeros((5, 2)), range(2, 4), criterion="gap")  # type: ignore[arg-type]


class TestComputeQoM:
    def test_qom__informative_modality_outweighs_noise(self) -> None:
        x, _ = _blobs(400, 6, dim=20, seed=3)
        noise = np.random.default_rng(3).normal(size=(400, 10, 2))
        result = compute_qom({"informative": x.reshape(400, 10, 2), "noise": noise}, num_classes=6)
        assert result.weights["informative"] > result.weights["noise"]
        assert sum(result.weights.values()) == pytest.approx(1.0)

    def test_qom__exact_cluster_match_uses_c_min_guard(self) -> None:
        x, _ = _blobs(300, 5, seed=4)
        cfg = QualityConfig(c_min=0.25)
        result = compute_qom({"imu": x}, num_classes=5, cfg=cfg)
        assert result.clusters["imu"] == 5
        assert result.scores["imu"] == pytest.approx(result.hopkins["imu"] / 0.25)
        assert result.weights == {"imu": 1.0}

    @pytest.mark.parametrize(
        ("penalty", "k_star", "expected"),
        [("absolute", 27, 0.5), ("absolute", 26, 1.0), ("absolute", 3, 24.0),
         ("relative", 27, 1.0), ("relative", 3, 1.0 + 24 / 27), ("relative", 41, 1.0 + 14 / 27)],
    )
    def test_cluster_penalty__known_values(self, penalty: str, k_star: int, expected: float) -> None:
        cfg = QualityConfig(cluster_penalty=penalty, c_min=0.5)  # type: ignore[arg-type]
        assert cluster_penalty(k_star, 27, cfg) == pytest.approx(expected)

    def test_qom__relative_penalty_divides_by_one_plus_relative_miss(self) -> None:
        x, _ = _blobs(300, 5, seed=4)
        result = compute_qom({"imu": x}, num_classes=8, cfg=QualityConfig(cluster_penalty="relative"))
        assert result.clusters["imu"] == 5
        assert result.scores["imu"] == pytest.approx(result.hopkins["imu"] / (1 + 3 / 8))

    def test_qom__relative_penalty_is_less_extreme_than_absolute(self) -> None:
        # Same Hopkins-like quality, one modality matches K = 5 clusters exactly, the other finds 2.
        data = {"match": _blobs(300, 5, seed=4)[0], "miss": _blobs(300, 2, seed=5)[0]}
        absolute = compute_qom(data, 5, QualityConfig(cluster_penalty="absolute"))
        relative = compute_qom(data, 5, QualityConfig(cluster_penalty="relative"))
        assert (absolute.clusters["match"], absolute.clusters["miss"]) == (5, 2)
        assert absolute.weights["match"] > 0.8  # 1 / 0.5 against 1 / 3: Cosmo's penalty
        assert 0.5 < relative.weights["match"] < 0.65  # 1 against 1 / 1.6

    @pytest.mark.parametrize("penalty", ["absolute", "relative"])
    def test_bounded_scores__in_unit_interval_and_scaled_by_max_score(self, penalty: str) -> None:
        cfg = QualityConfig(cluster_penalty=penalty, c_min=0.25)  # type: ignore[arg-type]
        result = compute_qom({"a": _blobs(200, 4, seed=2)[0], "b": np.random.default_rng(2).normal(size=(200, 8))},
                             num_classes=4, cfg=cfg)
        bounded = result.bounded_scores(cfg)
        assert all(0.0 <= v <= 1.0 for v in bounded.values())
        for m, q in result.scores.items():
            assert bounded[m] == pytest.approx(q / cfg.max_score)
        assert cfg.max_score == (4.0 if penalty == "absolute" else 1.0)

    def test_qom__subsample_is_seeded(self) -> None:
        data = {"a": _blobs(900, 3, seed=5)[0], "b": np.random.default_rng(5).normal(size=(900, 8))}
        cfg = QualityConfig(max_samples=200)
        assert compute_qom(data, 3, cfg) == compute_qom(data, 3, cfg)

    def test_qom__dead_sensor_gets_low_weight(self, caplog: pytest.LogCaptureFixture) -> None:
        x, _ = _blobs(80, 4, dim=12, seed=6)
        result = compute_qom({"dead": np.zeros((80, 4, 3)), "ok": x.reshape(80, 4, 3)}, num_classes=4)
        assert result.clusters["dead"] == 1 and result.hopkins["dead"] == 0.5
        assert 0 < result.weights["dead"] < result.weights["ok"]
        assert "no spread" in caplog.text

    @pytest.mark.parametrize(
        ("features", "num_classes", "match"),
        [
            ({}, 3, "empty"),
            ({"a": np.zeros((10, 2)), "b": np.zeros((9, 2))}, 3, "same number"),
            ({"a": np.zeros((2, 2))}, 3, "at least 3"),
            ({"a": np.zeros((10, 2))}, 1, "num_classes"),
        ],
        ids=["no modality", "unequal N", "too few samples", "one class"],
    )
    def test_qom__bad_input_raises(self, features: dict, num_classes: int, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            compute_qom(features, num_classes)

    def test_client_qom__features_source_encodes_first(self) -> None:
        torch.manual_seed(0)
        spec = ModalitySpec("acc", (200, 3), 100.0)
        model = ContrastiveFusionModel([spec], compact_model_config())
        data = {"acc": np.random.default_rng(0).normal(size=(40, 200, 3)).astype(np.float32)}
        cfg = QualityConfig(source="features")
        result = compute_client_qom(data, 4, cfg, model=model)
        # One modality always gets weight 1: what shows the encoding are H and k*, which must be
        # those of the encoder's features and not those of the raw windows.
        encoded = compute_qom(encode_for_quality(model, data), 4, cfg)
        raw = compute_qom(data, 4, cfg)
        assert result.weights == {"acc": 1.0} and model.training
        assert (result.hopkins, result.clusters) == (encoded.hopkins, encoded.clusters)
        assert result.hopkins != raw.hopkins
        with pytest.raises(ValueError, match="model"):
            compute_client_qom(data, 4, QualityConfig(source="features"))


class TestQualityConfig:
    def test_from_mapping__yaml_equals_defaults(self) -> None:
        assert QualityConfig.from_mapping(yaml.safe_load(CONFIG.read_text())) == QualityConfig()

    @pytest.mark.parametrize(
        "kwargs",
        [{"source": "logits"}, {"c_min": 0.0}, {"hopkins_fraction": 1.0}, {"k_min": 1}, {"max_samples": 2},
         {"cluster_penalty": "squared"}],
    )
    def test_init__bad_value_raises(self, kwargs: dict) -> None:
        with pytest.raises(ValueError):
            QualityConfig(**kwargs)
