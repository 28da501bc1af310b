"""Unimodal fallback: NT-Xent against a loop reference, augmentations, objectives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_presets import compact_model_config

from fedhar.data.dataset import ModalitySpec
from fedhar.losses import (
    AugmentationConfig,
    CosmoFusionLoss,
    UnimodalContrastiveLoss,
    augment_window,
    cosmo_or_unimodal_objective,
    nt_xent_loss,
    unimodal_objective,
)
from fedhar.models import ContrastiveFusionModel


def _loop_reference(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, b = len(z), len(z1)
    total = 0.0
    for i in range(n):
        j = (i + b) % n
        denom = sum(math.exp(float(z[i] @ z[k]) / temperature) for k in range(n) if k != i)
        total += -(float(z[i] @ z[j]) / temperature - math.log(denom))
    return total / n


class TestUnimodalContrastiveLoss:
    @pytest.mark.parametrize("batch", [1, 4, 9])
    @pytest.mark.parametrize("temperature", [0.1, 0.5])
    def test_forward__matches_loop_reference(self, batch: int, temperature: float) -> None:
        gen = torch.Generator().manual_seed(batch)
        z1, z2 = torch.randn(batch, 8, generator=gen).double(), torch.randn(batch, 8, generator=gen).double()
        loss = UnimodalContrastiveLoss(temperature)(z1, z2)
        assert loss.item() == pytest.approx(_loop_reference(z1, z2, temperature), rel=1e-9)

    def test_forward__mismatched_shapes_raise(self) -> None:
        with pytest.raises(ValueError, match="both be"):
            nt_xent_loss(torch.randn(3, 8), torch.randn(4, 8))

    def test_init__non_positive_temperature_raises(self) -> None:
        with pytest.raises(ValueError, match="temperature"):
            UnimodalContrastiveLoss(0.0)


class TestAugmentWindow:
    @pytest.mark.parametrize("shape", [(4, 120, 6), (4, 40, 20, 3)])
    def test_augment__same_shape_and_seeded(self, shape: tuple[int, ...]) -> None:
        x = torch.randn(shape)
        a = augment_window(x, torch.Generator().manual_seed(3))
        b = augment_window(x, torch.Generator().manual_seed(3))
        assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)

    def test_augment__masks_one_span_per_sample(self) -> None:
        cfg = AugmentationConfig(jitter_sigma=0.0, scale_sigma=0.0, mask_fraction=0.25)
        out = augment_window(torch.ones(3, 20, 2), torch.Generator().manual_seed(0), cfg)
        assert ((out == 0).all(dim=2).sum(dim=1) == 5).all()

    def test_config__bad_fraction_raises(self) -> None:
        with pytest.raises(ValueError, match="mask_fraction"):
            AugmentationConfig(mask_fraction=1.0)


class TestObjectives:
    def test_unimodal_objective__single_modality_model_trains(self) -> None:
        torch.manual_seed(0)
        spec = ModalitySpec("acc", (200, 3), 100.0)
        model = ContrastiveFusionModel([spec], compact_model_config())
        loss = unimodal_objective(torch.Generator().manual_seed(0))(model, {"acc": torch.randn(6, 200, 3)})
        loss.backward()
        assert loss.item() > 0
        assert all(p.grad is not None for p in model.encoders["acc"].parameters())

    def test_cosmo_or_unimodal__picks_by_modality_count(self) -> None:
        torch.manual_seed(0)
        specs = [ModalitySpec("acc", (200, 3), 100.0), ModalitySpec("gyro", (200, 3), 100.0)]
        model = ContrastiveFusionModel(specs, compact_model_config()).eval()  # no dropout: same input, same loss
        both = {"acc": torch.randn(4, 200, 3), "gyro": torch.randn(4, 200, 3)}
        gyro = {"gyro": both["gyro"]}

        def combined(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return cosmo_or_unimodal_objective(torch.Generator().manual_seed(0))(model, batch)

        def unimodal(batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return unimodal_objective(torch.Generator().manual_seed(0))(model, batch)

        # Two modalities: exactly Cosmo's fusion loss of the projections, not the unimodal loss.
        fused = CosmoFusionLoss()(model(both))
        assert combined(both).item() == pytest.approx(fused.item(), rel=1e-6)
        assert combined(both).item() != pytest.approx(unimodal(both).item(), rel=1e-3)
        # One modality: exactly the unimodal objective with the same augmentation seed.
        assert combined(gyro).item() == pytest.approx(unimodal(gyro).item(), rel=1e-6)
