"""Baselines: those of the Cosmo paper (single-modality, DeepSense, AttnSense, CMC, CPC) and a classical one."""

from fedhar.baselines.attnsense import AttnSenseModel
from fedhar.baselines.classical import ClassicalModel, window_features
from fedhar.baselines.cmc import CMCLoss, cmc_objective, cmc_or_unimodal_objective
from fedhar.baselines.config import (
    AttnSenseConfig,
    BaselineConfig,
    ClassicalConfig,
    CMCConfig,
    CPCConfig,
    DeepSenseConfig,
    SingleModalityConfig,
    baseline_config_from_mapping,
)
from fedhar.baselines.cpc import CPCClassifier, CPCLoss, CPCModel, cpc_objective
from fedhar.baselines.deepsense import DeepSenseModel
from fedhar.baselines.single_modality import SingleModalityClassifier

__all__ = [
    "AttnSenseConfig",
    "AttnSenseModel",
    "BaselineConfig",
    "CMCConfig",
    "CMCLoss",
    "CPCClassifier",
    "CPCConfig",
    "CPCLoss",
    "CPCModel",
    "ClassicalConfig",
    "ClassicalModel",
    "DeepSenseConfig",
    "DeepSenseModel",
    "SingleModalityClassifier",
    "SingleModalityConfig",
    "baseline_config_from_mapping",
    "cmc_objective",
    "cmc_or_unimodal_objective",
    "cpc_objective",
    "window_features",
]
