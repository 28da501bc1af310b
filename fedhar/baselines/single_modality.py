"""Single-modality supervised baseline: Cosmo's encoder and classifier on one modality."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from fedhar.baselines.blocks import check_batch
from fedhar.data.dataset import ModalitySpec
from fedhar.models import ClassifierConfig, EncoderConfig, FusionClassifierModel, build_encoder, build_fusion_classifier

__all__ = ["SingleModalityClassifier"]


class SingleModalityClassifier(FusionClassifierModel):
    """Cosmo's encoder for one modality followed by its stage-2 classifier ("IMU only" etc.).

    The single-modality baselines of Cosmo (Ouyang et al., MobiCom 2022, Fig. 10; public
    code ``supervised-baselines/single_model.py``) train one modality's encoder with a
    2-layer GRU and an MLP from scratch on the labeled data. Here the classifier is
    :class:`fedhar.models.AttentionFusionClassifier` over that one modality: with M = 1
    its attention weight is 1 and it reduces exactly to that GRU + MLP (its attention
    projection then receives no gradient). Being a :class:`FusionClassifierModel`, it has
    ``encoders`` (one entry) and ``classifier``, so every stage-2 loop can train it.

    Parameters
    ----------
    spec
        The modality, ``(T, C)`` or ``(T, J, 3)``.
    num_classes
        K, the number of classes (>= 2).
    encoder_cfg
        Encoder settings (configs/model/, Cosmo's reference encoder by default).
    classifier_cfg
        Classifier settings (configs/model/; ``lambda_`` and ``fusion`` are irrelevant here).
    encoder
        Optional (pretrained) encoder to use instead of a fresh one; it must expose
        ``out_shape`` (S, F). It is used as is, not copied.

    Raises
    ------
    ValueError
        For ``num_classes < 2``, an encoder without ``out_shape``, and in ``forward`` for
        a batch that does not hold exactly ``spec.name`` with its shape.

    Examples
    --------
    >>> model = SingleModalityClassifier(ModalitySpec("skeleton", (40, 20, 3), 30.0), num_classes=27)
    >>> model({"skeleton": torch.randn(4, 40, 20, 3)}).shape
    torch.Size([4, 27])
    """

    def __init__(
        self,
        spec: ModalitySpec,
        num_classes: int,
        encoder_cfg: EncoderConfig | None = None,
        classifier_cfg: ClassifierConfig | None = None,
        encoder: nn.Module | None = None,
    ) -> None:
        encoder = encoder if encoder is not None else build_encoder(spec, encoder_cfg or EncoderConfig())
        out_shape = getattr(encoder, "out_shape", None)
        if out_shape is None:
            raise ValueError(f"encoder {type(encoder).__name__} has no out_shape (S, F); build it with build_encoder")
        classifier = build_fusion_classifier(
            {spec.name: out_shape}, num_classes, classifier_cfg or ClassifierConfig(), {spec.name: 1.0}
        )
        super().__init__(nn.ModuleDict({spec.name: encoder}), classifier)
        self.spec = spec

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Map ``{spec.name: (B, *spec.shape)}`` to logits ``(B, K)``; ``ValueError`` on a wrong modality set."""
        check_batch(batch, (self.spec,))
        return super().forward(batch)
