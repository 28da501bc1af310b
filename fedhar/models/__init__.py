"""Models: per-modality encoders, projection heads, Cosmo's stage-1 model and stage-2 classifier."""

from fedhar.models.attention import AttentionFusionClassifier, QualityGuidedAttention, build_fusion_classifier
from fedhar.models.config import ClassifierConfig, ConvStackConfig, EncoderConfig, HeadConfig, ModelConfig
from fedhar.models.contrastive import ContrastiveFusionModel
from fedhar.models.encoders import ConvEncoder, ImuEncoder, SkeletonEncoder, build_encoder
from fedhar.models.fusion_classifier import FusionClassifierModel, build_fusion_classifier_model
from fedhar.models.heads import CompactProjectionHead, CosmoProjectionHead, ProjectionHead, build_head

__all__ = [
    "AttentionFusionClassifier",
    "ClassifierConfig",
    "CompactProjectionHead",
    "ContrastiveFusionModel",
    "ConvEncoder",
    "ConvStackConfig",
    "CosmoProjectionHead",
    "EncoderConfig",
    "FusionClassifierModel",
    "HeadConfig",
    "ImuEncoder",
    "ModelConfig",
    "ProjectionHead",
    "QualityGuidedAttention",
    "SkeletonEncoder",
    "build_encoder",
    "build_fusion_classifier",
    "build_fusion_classifier_model",
    "build_head",
]
