"""ExperimentConfig: one typed config built from a composed one, with one error type naming the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedhar.config import ExperimentConfig
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)  # type: ignore[return-value]


def test_from_composed_config__every_group_typed() -> None:
    exp = ExperimentConfig.from_mapping(_composed("dataset=usc-had", "label_rate=1", "seed=2", "budget=cpu-usc",
                                                  "method=cmc"), cache_dir="/cache")
    assert (exp.dataset.name, exp.label_rate, exp.seed) == ("usc-had", 1.0, 2)
    assert exp.method is not None and exp.method.name == "cmc"
    assert exp.stage1.epochs == 6 and exp.stage2.epochs == 60 and exp.stage2.optim.gamma == 0.1 and exp.stage2.encoder_mode == "frozen"
    assert exp.supervised is not None and exp.quality.criterion == "silhouette"
    assert str(exp.dataset.cache_dir) == "/cache"


def test_progress_override_and_quality_seed() -> None:
    exp = ExperimentConfig.from_mapping(_composed("budget=reference"), progress=False).with_quality_seed(7)
    assert not exp.stage1.progress and not exp.stage2.progress and exp.supervised is not None
    assert not exp.supervised.progress and exp.quality.seed == 7


@pytest.mark.parametrize(("override", "key"), [
    ({"label_rate": 0}, "label_rate"), ({"label_rate": 150}, "label_rate"), ({"seed": -1}, "seed"),
    ({"label_rate": "five"}, "label_rate"), ({"quality": {"k_mni": 2}}, "quality"), ({"model": 3}, "model"),
])
def test_bad_value__config_error_naming_the_key(override: dict[str, Any], key: str) -> None:
    cfg = {**_composed(), **override}
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_mapping(cfg)
    assert err.value.culprit == key


def test_missing_dataset__config_error() -> None:
    cfg = _composed()
    del cfg["dataset"]
    with pytest.raises(ConfigError, match="no 'dataset'"):
        ExperimentConfig.from_mapping(cfg)
