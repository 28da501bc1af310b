"""Cosmo stage-2 model: pretrained encoders followed by the quality-guided fusion classifier."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence

from torch import Tensor, nn

from fedhar.data.dataset import ModalitySpec
from fedhar.models.attention import build_fusion_classifier
from fedhar.models.config import ModelConfig
from fedhar.models.encoders import build_encoder, encoder_out_shape


class FusionClassifierModel(nn.Module):
    """Encoders + fusion classifier, split for Cosmo's iterative fusion learning.

    Cosmo (Ouyang et al., MobiCom 2022), Sec. 5.2: training alternates between the
    encoders (classifier frozen) and the classifier (encoders frozen); use
    :meth:`encoder_parameters` and :meth:`classifier_parameters` for the two phases.

    Parameters
    ----------
    encoders
        Modality -> encoder ``(B, *shape) -> (B, S, F)`` (e.g. a pretrained
        ``ContrastiveFusionModel.encoders``; pass a copy to keep the original intact).
    classifier
        ``classifier(features: Mapping[str, Tensor]) -> logits (B, K)``.

    Raises
    ------
    ValueError
        In ``forward``, if the batch holds a modality without an encoder or none at all.
    """

    def __init__(self, encoders: nn.ModuleDict, classifier: nn.Module) -> None:
        super().__init__()
        if len(encoders) == 0:
            raise ValueError("encoders is empty; give at least one modality encoder")
        self.encoders = encoders
        self.classifier = classifier

    def encode(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Sequence features ``(B, S, F_m)`` of the modalities present in ``batch``."""
        unknown = sorted(set(batch) - set(self.encoders))
        if unknown or not batch:
            raise ValueError(f"batch must hold some of {list(self.encoders)} and nothing else, got {sorted(batch)}")
        return {m: enc(batch[m]) for m, enc in self.encoders.items() if m in batch}

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits ``(B, K)`` of a batch (modality -> ``(B, *shape)``)."""
        return self.classifier(self.encode(batch))

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of all encoders."""
        return self.encoders.parameters()

    def classifier_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the fusion classifier."""
        return self.classifier.parameters()


def build_fusion_classifier_model(
    specs: Sequence[ModalitySpec],
    num_classes: int,
    cfg: ModelConfig,
    encoders: nn.ModuleDict | None = None,
    qom_prior: Mapping[str, float] | None = None,
) -> FusionClassifierModel:
    """Build the stage-2 model: fresh (or deep-copied pretrained) encoders + a new classifier.

    Parameters
    ----------
    specs
        The modalities.
    num_classes
        Number of classes ``K``.
    cfg
        Model settings (encoder settings are used only when ``encoders`` is None).
    encoders
        Pretrained encoders (deep-copied, so stage 1's model is untouched).
    qom_prior
        Modality -> QoM weight for the attention.
    """
    if encoders is None:
        encoders = nn.ModuleDict({s.name: build_encoder(s, cfg.encoder) for s in specs})
    else:
        missing = [s.name for s in specs if s.name not in encoders]
        if missing:
            raise ValueError(f"encoders lack modalities {missing}; they have {list(encoders)}")
        encoders = nn.ModuleDict({s.name: copy.deepcopy(encoders[s.name]) for s in specs})
    shapes = {name: encoder_out_shape(enc) for name, enc in encoders.items()}
    classifier = build_fusion_classifier(shapes, num_classes, cfg.classifier, qom_prior)
    return FusionClassifierModel(encoders, classifier)
