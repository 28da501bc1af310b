"""The model presets the tests build, read from configs/model/ as the CLIs read them.

tests/ is on ``sys.path`` (pytest puts the folder of the root conftest.py there), so any
test imports this as ``from model_presets import compact_model_config``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from fedhar.models import ModelConfig

MODEL_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"


def model_config(name: str) -> ModelConfig:
    """``ModelConfig`` of configs/model/<name>.yaml."""
    return ModelConfig.from_mapping(yaml.safe_load((MODEL_CONFIG_DIR / f"{name}.yaml").read_text()))


def compact_model_config() -> ModelConfig:
    """fedhar's compact model (configs/model/compact.yaml): small and fast enough for unit tests."""
    return model_config("compact")
