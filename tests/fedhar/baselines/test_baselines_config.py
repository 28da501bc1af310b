"""Tests for the baseline config dataclasses and configs/baseline/*.yaml."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from fedhar.baselines import (
    AttnSenseConfig,
    ClassicalConfig,
    CMCConfig,
    CPCConfig,
    DeepSenseConfig,
)
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "baseline"
CLASSES: dict[str, Any] = {
    "deepsense": DeepSenseConfig,
    "attnsense": AttnSenseConfig,
    "cmc": CMCConfig,
    "cpc": CPCConfig,
    "classical": ClassicalConfig,
}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text(encoding="utf-8"))
    return data


class TestBaselineConfigs:
    def test_config_dir__has_one_yaml_per_baseline(self) -> None:
        assert sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")) == sorted(CLASSES)

    @pytest.mark.parametrize("name", sorted(CLASSES))
    def test_yaml__keys_and_values_equal_dataclass_defaults(self, name: str) -> None:
        # Prepare
        raw = _load(name)
        # Execute
        cfg = CLASSES[name].from_mapping(raw)
        # Assert: every field is spelled out and the YAML mirrors the defaults
        assert type(cfg) is CLASSES[name]
        assert set(raw) == set(asdict(cfg))
        assert cfg == CLASSES[name]()

    @pytest.mark.parametrize("name", sorted(CLASSES))
    def test_from_mapping__empty_mapping_gives_defaults(self, name: str) -> None:
        assert CLASSES[name].from_mapping({}) == CLASSES[name]()

    def test_from_mapping__turns_lists_into_tuples(self) -> None:
        cfg = CPCConfig.from_mapping({"conv_channels": [8, 16], "classifier_hidden": [4]})
        assert cfg.conv_channels == (8, 16) and cfg.classifier_hidden == (4,)

    @pytest.mark.parametrize(
        ("cls", "mapping", "match"),
        [
            (DeepSenseConfig, {"gru_size": 3}, r"baseline: unknown keys \['gru_size'\]"),  # typo
            (DeepSenseConfig, {"merge_kernel_sizes": [30, 30, 10]}, "shrink the width"),  # 67 >= 64
            (DeepSenseConfig, {"num_intervals": 0}, "num_intervals must be an integer >= 1"),
            (AttnSenseConfig, {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
            (CMCConfig, {"temperature": 0.0}, "temperature must be > 0"),
            (CPCConfig, {"kernel_size": 4}, "kernel_size must be odd"),
            (CPCConfig, {"pooling": "max"}, "pooling must be one of"),
            (CPCConfig, {"conv_channels": []}, "conv_channels must be a non-empty list"),
            (CPCConfig, {"name": "cmc"}, "CPCConfig.name must be 'cpc'"),
        ],
    )
    def test_from_mapping__raises_on_bad_values(self, cls: Any, mapping: dict[str, Any], match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            cls.from_mapping(mapping)

    def test_config_error__is_a_value_error(self) -> None:
        with pytest.raises(ValueError):
            CMCConfig(temperature=-1.0)
