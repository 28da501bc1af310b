"""configs/model/*.yaml mirror the ModelConfig dataclasses; from_mapping validates keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedhar.models import ModelConfig
from fedhar.models.config import ClassifierConfig, EncoderConfig, HeadConfig

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "model"


class TestModelConfig:
    @pytest.mark.parametrize(("name", "expected"), [
        ("reference", ModelConfig()),
        ("compact", ModelConfig(encoder=EncoderConfig(variant="compact"),
                                head=HeadConfig(variant="compact", hidden_dims=(256,), batch_norm=False),
                                classifier=ClassifierConfig(variant="compact", gru_hidden=32, mlp_hidden=(128,)))),
    ])
    def test_from_mapping__yaml_equals_dataclass(self, name: str, expected: ModelConfig) -> None:
        mapping = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert ModelConfig.from_mapping(mapping) == expected

    def test_from_mapping__variant_fills_presets(self) -> None:
        cfg = ModelConfig.from_mapping({"encoder": {"variant": "compact"}})
        assert cfg.encoder == EncoderConfig(variant="compact")

    def test_from_mapping__unknown_key_raises(self) -> None:
        with pytest.raises(ValueError, match="unknown keys"):
            ModelConfig.from_mapping({"head": {"hidden": [3]}})

    @pytest.mark.parametrize(
        ("factory", "kwargs", "match"),
        [
            (EncoderConfig, {"variant": "huge"}, "variant"),  # unknown variant
            (HeadConfig, {"out_dim": 0}, "positive"),  # empty projection
            (ClassifierConfig, {"lambda_": 1.5}, "lambda_"),  # prior weight above 1
            (ClassifierConfig, {"fusion": "max"}, "fusion"),  # unknown fusion
        ],
    )
    def test_init__bad_value_raises(self, factory: type, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            factory(**kwargs)
