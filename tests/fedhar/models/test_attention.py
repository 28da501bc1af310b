"""Quality-guided attention, AttentionFusionClassifier and FusionClassifierModel."""

from __future__ import annotations

import pytest
import torch
from model_presets import compact_model_config

from fedhar.data.dataset import ModalitySpec
from fedhar.models import (
    AttentionFusionClassifier,
    ContrastiveFusionModel,
    FusionClassifierModel,
    QualityGuidedAttention,
    build_fusion_classifier_model,
)

SHAPES = {"inertial": (16, 12), "skeleton": (16, 8)}
SPECS = (ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0))


def _features(shapes: dict[str, tuple[int, int]], batch: int = 5) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(batch, *shape, generator=gen) for m, shape in shapes.items()}


def _small(shapes: dict[str, tuple[int, int]] = SHAPES, **kwargs: object) -> AttentionFusionClassifier:
    return AttentionFusionClassifier(shapes, num_classes=7, gru_hidden=6, mlp_hidden=(10,), **kwargs)  # type: ignore[arg-type]


class TestQualityGuidedAttention:
    def test_forward__rows_sum_to_one(self) -> None:
        beta = QualityGuidedAttention(SHAPES, lambda_=0.5)(_features(SHAPES))
        assert beta.shape == (5, 2)
        assert torch.allclose(beta.sum(1), torch.ones(5))

    def test_forward__lambda_one_equals_prior(self) -> None:
        attn = QualityGuidedAttention(SHAPES, {"inertial": 0.3, "skeleton": 0.7}, lambda_=1.0)
        beta = attn(_features(SHAPES))
        assert torch.equal(beta, torch.tensor([[0.3, 0.7]]).expand(5, 2))

    def test_forward__lambda_zero_is_attention_only(self) -> None:
        attn = QualityGuidedAttention(SHAPES, {"inertial": 0.01, "skeleton": 0.99}, lambda_=0.0)
        feats = _features(SHAPES)
        scores = torch.stack([(torch.tanh(attn.proj[m](z)) * z).mean(dim=(1, 2)) for m, z in feats.items()], 1)
        assert torch.allclose(attn(feats), scores.softmax(1))

    def test_set_qom_prior__normalises_and_is_not_persistent(self) -> None:
        attn = QualityGuidedAttention(SHAPES, lambda_=1.0)
        attn.set_qom_prior({"inertial": 2.0, "skeleton": 6.0})
        assert torch.allclose(attn.qom_prior, torch.tensor([0.25, 0.75]))
        assert "qom_prior" not in attn.state_dict()

    @pytest.mark.parametrize(
        "prior",
        [{"inertial": 1.0}, {"inertial": -1.0, "skeleton": 2.0}, {"inertial": 0.0, "skeleton": 0.0}],
        ids=["missing modality", "negative", "all zero"],
    )
    def test_set_qom_prior__bad_prior_raises(self, prior: dict[str, float]) -> None:
        with pytest.raises(ValueError, match="qom_prior"):
            QualityGuidedAttention(SHAPES).set_qom_prior(prior)


class TestAttentionFusionClassifier:
    @pytest.mark.parametrize("fusion", ["concat", "sum"])
    def test_forward__logits_shape(self, fusion: str) -> None:
        shapes = SHAPES if fusion == "concat" else {"acc": (16, 8), "gyro": (16, 8)}
        assert _small(shapes, fusion=fusion)(_features(shapes)).shape == (5, 7)

    def test_init__sum_with_unequal_shapes_raises(self) -> None:
        with pytest.raises(ValueError, match="equal feature shapes"):
            _small(fusion="sum")

    def test_init__unequal_steps_raises(self) -> None:
        with pytest.raises(ValueError, match="same S"):
            _small({"a": (16, 4), "b": (8, 4)})

    def test_forward__wrong_feature_shape_raises(self) -> None:
        feats = _features(SHAPES)
        feats["skeleton"] = torch.randn(5, 16, 9)
        with pytest.raises(ValueError, match=r"\(B, 16, 8\)"):
            _small()(feats)

    def test_forward__single_modality_has_weight_one(self) -> None:
        clf = _small({"acc": (16, 8)})
        assert clf(_features({"acc": (16, 8)})).shape == (5, 7)
        assert torch.equal(clf.last_beta, torch.ones(5, 1))

    def test_forward__missing_modality_gets_zero_weight(self) -> None:
        clf = _small()
        clf({"skeleton": _features(SHAPES)["skeleton"]})
        assert torch.equal(clf.last_beta, torch.tensor([[0.0, 1.0]]).expand(5, 2))

    def test_parameters__reference_mlp_sizes(self) -> None:
        clf = AttentionFusionClassifier({"inertial": (16, 472), "skeleton": (16, 168)}, num_classes=27)
        assert clf.gru.input_size == 640 and clf.gru.hidden_size == 120 and clf.gru.num_layers == 2
        assert clf.mlp[0].in_features == 1920 and clf.mlp[0].out_features == 1280
        assert clf.mlp[-1].out_features == 27


class TestFusionClassifierModel:
    def test_forward__logits_from_pretrained_encoders(self) -> None:
        torch.manual_seed(0)
        pretrained = ContrastiveFusionModel(SPECS, compact_model_config())
        model = build_fusion_classifier_model(SPECS, 27, compact_model_config(), encoders=pretrained.encoders)
        batch = {s.name: torch.randn(4, *s.shape) for s in SPECS}
        assert model(batch).shape == (4, 27)
        # deep copies: stage-1 weights stay untouched by stage 2
        assert model.encoders["inertial"] is not pretrained.encoders["inertial"]

    def test_parameters__split_covers_model(self) -> None:
        model = build_fusion_classifier_model(SPECS, 27, compact_model_config())
        enc, clf = list(model.encoder_parameters()), list(model.classifier_parameters())
        assert {id(p) for p in enc}.isdisjoint({id(p) for p in clf})
        assert len(enc) + len(clf) == len(list(model.parameters()))

    def test_forward__unknown_modality_raises(self) -> None:
        model = FusionClassifierModel(
            build_fusion_classifier_model(SPECS, 27, compact_model_config()).encoders, torch.nn.Identity()
        )
        with pytest.raises(ValueError, match="nothing else"):
            model({"depth": torch.randn(2, 4)})
