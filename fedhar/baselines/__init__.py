"""Baselines: those of the Cosmo paper (single-modality, DeepSense, AttnSense, CMC, CPC) and a classical one."""

from fedhar.baselines.attnsense import AttnSenseModel
from fedhar.baselines.classical import ClassicalModel, window_features
from fedhar.baselines.cmc import CMCLoss, cmc_objective, cmc_or_unimodal_objective
from fedhar.baselines.config import (
    AttnSenseConfig,
    ClassicalConfig,
    CMCConfig,
    CPCConfig,
    DeepSenseConfig,
)
from fedhar.baselines.cpc import CPCClassifier, CPCLoss, CPCModel, cpc_objective
from fedhar.baselines.deepsense import DeepSenseModel
from fedhar.baselines.single_modality import SingleModalityClassifier

__all__ = [
    "AttnSenseConfig",
    "AttnSenseModel",
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
    "cmc_objective",
    "cmc_or_unimodal_objective",
    "cpc_objective",
    "window_features",
]
