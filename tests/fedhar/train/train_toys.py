"""Toy multimodal models and a small synthetic dataset shared by the training tests."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.synthetic import make_synthetic

SHAPE = (24, 3)
NUM_CLASSES = 4
FEATURES = 8


def make_dataset(informative: float = 1.0, subjects: int = 3, per_class: int = 8) -> HARDataset:
    """A two-modality synthetic dataset (``imu`` informative, ``noise`` not)."""
    return make_synthetic(DatasetConfig(name="synthetic", preprocess={
        "num_subjects": subjects, "num_classes": NUM_CLASSES, "samples_per_subject_class": per_class,
        "modalities": {"imu": {"shape": list(SHAPE), "informativeness": informative},
                       "noise": {"shape": list(SHAPE), "informativeness": 0.0}},
        "subject_shift": 0.1, "noise_std": 0.5, "seed": 0,
    }))


class ToyEncoder(nn.Module):
    """(B, T, C) -> (B, S=4, F): conv + BatchNorm + dropout, so buffers and randomness exist."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(SHAPE[1], 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.Dropout(0.2),
                                 nn.AdaptiveAvgPool1d(FEATURES))
        self.out_shape = (4, FEATURES)  # as fedhar's encoders report it (fedhar.models.encoders.encoder_out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.transpose(1, 2))


class ToyClassifier(nn.Module):
    """Concatenate flattened features -> BatchNorm -> dropout -> linear."""

    def __init__(self, modalities: tuple[str, ...]) -> None:
        super().__init__()
        width = 4 * FEATURES * len(modalities)
        self.net = nn.Sequential(nn.BatchNorm1d(width), nn.Dropout(0.2), nn.Linear(width, NUM_CLASSES))
        self.modalities = modalities

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat([features[m].flatten(1) for m in self.modalities], dim=1))


class ToyFusion(nn.Module):
    """``encoders`` + ``classifier``, as fedhar.models.FusionClassifierModel."""

    def __init__(self, modalities: tuple[str, ...] = ("imu", "noise")) -> None:
        super().__init__()
        self.encoders = nn.ModuleDict({m: ToyEncoder() for m in modalities})
        self.classifier = ToyClassifier(modalities)
        self.heads = nn.ModuleDict({m: nn.Linear(4 * FEATURES, 8) for m in modalities})

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.classifier({m: enc(batch[m]) for m, enc in self.encoders.items()})


class ToyFusionNoHeads(ToyFusion):
    """ToyFusion without projection heads (every parameter in encoders or classifier)."""

    def __init__(self, modalities: tuple[str, ...] = ("imu", "noise")) -> None:
        super().__init__(modalities)
        del self.heads


def toy_objective(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A simple contrastive-ish objective: align the two modalities' projected features."""
    z = {m: nn.functional.normalize(model.heads[m](model.encoders[m](x).flatten(1)), dim=1) for m, x in batch.items()}
    a, b = z["imu"], z["noise"]
    logits = a @ b.T / 0.1
    return nn.functional.cross_entropy(logits, torch.arange(len(a), device=logits.device))

