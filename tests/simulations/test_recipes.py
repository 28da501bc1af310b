"""The learning recipes (configs/recipe/) compose with every dataset, budget and entry point."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from fedhar.data.config import DatasetConfig
from fedhar.models.config import ModelConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig
from simulations.centralized import CONFIG_DIR

RECIPES = sorted(p.stem for p in (Path(CONFIG_DIR) / "recipe").glob("*.yaml"))


def _compose(name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _lambda(cfg: DictConfig) -> float:
    return float(cfg.model.classifier.lambda_)


def _typed(cfg: DictConfig) -> tuple[DatasetConfig, PretrainConfig, FinetuneConfig]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return (DatasetConfig.from_mapping(plain["dataset"]), PretrainConfig.from_mapping(plain["stage1"]),
            FinetuneConfig.from_mapping(plain["stage2"]))


def test_recipes__paper_and_fedhar_exist() -> None:
    assert RECIPES == ["fedhar", "paper"]


@pytest.mark.parametrize("entry", ["config", "federated"])
@pytest.mark.parametrize("dataset", ["utd-mhad", "usc-had", "synthetic"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe__composes_into_typed_configs(entry: str, dataset: str, recipe: str) -> None:
    cfg = _compose(entry, [f"dataset={dataset}", f"recipe={recipe}"])
    data, stage1, stage2 = _typed(cfg)
    if recipe == "paper":
        assert not stage1.augment.enabled and not stage2.augment.enabled and stage2.encoder_mode == "train"
        assert stage2.optim.gamma == 0.9 and _lambda(cfg) == 0.8  # Cosmo's lr x0.9 per milestone, QoM prior 0.8
    else:
        assert stage2.encoder_mode == "frozen" and stage2.optim.gamma == 0.1 and _lambda(cfg) == 0.0
        assert stage1.augment == stage2.augment
        assert stage1.augment.rotation_deg == data.orientation_spread_deg > 0
        assert stage1.augment.scale > 0 and stage1.augment.jitter > 0


@pytest.mark.parametrize("model", ["compact", "reference"])
@pytest.mark.parametrize(("dataset", "layout"), [("usc-had", "temporal"), ("utd-mhad", "grid"), ("synthetic", "grid")])
def test_recipe__imu_encoder_follows_the_dataset_and_paper_keeps_cosmos(dataset: str, layout: str, model: str) -> None:
    for recipe, expected in (("fedhar", layout), ("paper", "grid")):
        cfg = _compose("config", [f"dataset={dataset}", f"model={model}", f"recipe={recipe}"])
        plain = OmegaConf.to_container(cfg.model, resolve=True)
        assert isinstance(plain, dict)
        encoder = ModelConfig.from_mapping(plain).encoder
        assert encoder.imu_layout == expected
        assert encoder.imu_stack.layout == expected


@pytest.mark.parametrize("budget", ["cpu-utd", "cpu-usc", "tiny", "reference", "gpu-usc"])
def test_recipe__default_is_fedhar_and_budgets_keep_their_epochs(budget: str) -> None:
    cfg = _compose("config", [f"budget={budget}"])
    paper = _compose("config", [f"budget={budget}", "recipe=paper"])
    assert cfg.stage2.encoder_mode == "frozen" and paper.stage2.encoder_mode == "train"
    assert (cfg.stage1.epochs, cfg.stage2.epochs) == (paper.stage1.epochs, paper.stage2.epochs)


def test_usc_rotates_further_than_utd() -> None:
    utd, _, _ = _typed(_compose("config", ["dataset=utd-mhad"]))
    usc, _, _ = _typed(_compose("config", ["dataset=usc-had"]))
    assert usc.orientation_spread_deg > utd.orientation_spread_deg
