"""ContrastiveFusionModel: per-modality encoders/heads, modality subsets, gradient flow."""

from __future__ import annotations

import pytest
import torch
from model_presets import compact_model_config

from fedhar import keys
from fedhar.data.dataset import ModalitySpec
from fedhar.losses import CosmoFusionLoss, cosmo_objective
from fedhar.models import ContrastiveFusionModel, ModelConfig

SPECS = (ModalitySpec("inertial", (120, 6), 50.0), ModalitySpec("skeleton", (40, 20, 3), 30.0))


def _batch(batch: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {s.name: torch.randn(batch, *s.shape, generator=gen) for s in SPECS}


@pytest.fixture(scope="module")
def compact_model() -> ContrastiveFusionModel:
    torch.manual_seed(0)
    return ContrastiveFusionModel(SPECS, compact_model_config())


class TestContrastiveFusionModel:
    def test_forward__normalised_projections_per_modality(self, compact_model: ContrastiveFusionModel) -> None:
        out = compact_model(_batch())
        assert set(out) == {"inertial", "skeleton"}
        for proj in out.values():
            assert proj.shape == (4, 128)
            assert torch.allclose(proj.norm(dim=1), torch.ones(4), atol=1e-5)

    def test_encode__sequence_features(self, compact_model: ContrastiveFusionModel) -> None:
        feats = compact_model.encode(_batch())
        assert {m: tuple(z.shape[1:]) for m, z in feats.items()} == compact_model.feature_shapes

    def test_forward__subset_of_modalities(self, compact_model: ContrastiveFusionModel) -> None:
        out = compact_model({"skeleton": _batch()["skeleton"]})
        assert list(out) == ["skeleton"]

    def test_forward__unknown_modality_raises(self, compact_model: ContrastiveFusionModel) -> None:
        with pytest.raises(ValueError, match="no encoder"):
            compact_model({"depth": torch.randn(2, 3)})

    def test_state_dict__keys_carry_modality_prefixes(self, compact_model: ContrastiveFusionModel) -> None:
        names = list(compact_model.state_dict())
        assert all(k.startswith((keys.ENCODER_PREFIX, keys.HEAD_PREFIX)) for k in names)
        assert any(k.startswith("encoders.skeleton.") for k in names)
        assert any(k.startswith("heads.inertial.") for k in names)

    def test_init__duplicate_modality_raises(self) -> None:
        with pytest.raises(ValueError, match="twice"):
            ContrastiveFusionModel([SPECS[0], SPECS[0]], compact_model_config())

    @pytest.mark.parametrize("cfg", [ModelConfig(), compact_model_config()], ids=["reference", "compact"])
    def test_backward__gradients_reach_both_encoders(self, cfg: ModelConfig) -> None:
        torch.manual_seed(0)
        model = ContrastiveFusionModel(SPECS, cfg)
        loss = cosmo_objective(CosmoFusionLoss())(model, _batch(batch=4))
        loss.backward()
        for name, encoder in model.encoders.items():
            grads = [p.grad for p in encoder.parameters()]
            assert all(g is not None for g in grads), name
            assert sum(g.abs().sum().item() for g in grads) > 0, name
