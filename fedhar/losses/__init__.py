"""Pretraining losses and objectives: Cosmo's contrastive fusion loss and a unimodal fallback."""

from fedhar.losses.fusion import (
    DEFAULT_FUSION_WEIGHTS,
    CosmoFusionLoss,
    Objective,
    build_fusion_views,
    cosmo_objective,
    fusion_contrastive_loss,
    fusion_weight_matrix,
)
from fedhar.losses.unimodal import (
    AugmentationConfig,
    UnimodalContrastiveLoss,
    augment_window,
    cosmo_or_unimodal_objective,
    nt_xent_loss,
    unimodal_objective,
)

__all__ = [
    "DEFAULT_FUSION_WEIGHTS",
    "AugmentationConfig",
    "CosmoFusionLoss",
    "Objective",
    "UnimodalContrastiveLoss",
    "augment_window",
    "build_fusion_views",
    "cosmo_objective",
    "cosmo_or_unimodal_objective",
    "fusion_contrastive_loss",
    "fusion_weight_matrix",
    "nt_xent_loss",
    "unimodal_objective",
]
