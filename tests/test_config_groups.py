"""Every option of every config group composes into the typed objects the code runs on.

As lightning-hydra-template does: a config option that names a key the code no longer
has, or lacks one it needs, fails here rather than in the middle of a run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fedhar.aggregation import InfluenceBounds
from fedhar.config import ExperimentConfig
from fedhar.data.config import DatasetConfig
from fedhar.models import ModelConfig
from fedhar.pipeline import MethodConfig
from fedhar.privacy import DPConfig
from fedhar.quality import QualityConfig
from fedhar.train.class_stats import ClassStatsConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig, SupervisedConfig
from strategies.qom_fedavg import influence_bounds
from strategies.server_app import check_federation

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Groups composed by both entry points, by the centralised one only, by the federated one only.
SHARED = ("dataset", "model", "quality", "stage1", "stage2", "budget", "recipe")
CENTRALISED = ("method", "supervised")
FEDERATED = ("strategy", "federation", "privacy")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_context() -> Iterator[None]:
    """One Hydra initialisation for every composition of this module (each new one costs ~1 s)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}  # type: ignore[return-value]


def _typed(cfg: DictConfig) -> list[object]:
    """The typed objects an entry point builds from ``cfg`` (each raises on a bad or unknown key)."""
    exp = ExperimentConfig.from_mapping(_plain(cfg))
    objects: list[object] = [exp.dataset, exp.model, exp.quality, exp.stage1, exp.stage2]
    if "method" in cfg:
        assert isinstance(exp.method, MethodConfig)
        objects.append(exp.method)
    if "supervised" in cfg:
        assert isinstance(exp.supervised, SupervisedConfig)
        objects.append(exp.supervised)
    if "federation" in cfg:
        check_federation(cfg.federation)
        objects += [influence_bounds(cfg.strategy), ClassStatsConfig.from_mapping(_plain(cfg.federation.class_stats)),
                    DPConfig.from_mapping(_plain(cfg.privacy.dp))]
    return objects


# The shared groups through the federated entry (which builds more typed objects); the
# centralised entry with its own groups (its defaults compose the shared ones once more).
CASES = ([("config", g, o) for g in CENTRALISED for o in _options(g)]
         + [("federated", g, o) for g in (*SHARED, *FEDERATED) for o in _options(g)])


@pytest.mark.parametrize(("entry", "group", "option"), CASES, ids=[f"{e}:{g}={o}" for e, g, o in CASES])
def test_every_option_composes_into_typed_configs(entry: str, group: str, option: str, hydra_context: None) -> None:
    objects = _typed(compose(config_name=entry, overrides=[f"{group}={option}"]))
    assert isinstance(objects[0], DatasetConfig) and isinstance(objects[1], ModelConfig)
    assert isinstance(objects[2], QualityConfig) and isinstance(objects[3], PretrainConfig)
    assert isinstance(objects[4], FinetuneConfig)
    if entry == "federated":
        assert isinstance(objects[-3], InfluenceBounds) and isinstance(objects[-1], DPConfig)


def test_every_group_is_covered() -> None:
    """A new config group must be added to the lists above (or to the ones that hold no typed object)."""
    untyped = {"paths", "baseline", "compare_budget", "experiment", "reference_results"}  # experiment: test_compare.py
    groups = {p.name for p in CONFIG_DIR.iterdir() if p.is_dir()}
    assert groups == set(SHARED) | set(CENTRALISED) | set(FEDERATED) | untyped
