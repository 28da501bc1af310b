"""Tests for the supervised fusion baselines DeepSense and AttnSense."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pytest
import torch
from baseline_helpers import USC_SPECS, UTD_SPECS, make_batch, supervised_loss, take_train_step
from torch import nn

from fedhar.baselines import AttnSenseConfig, AttnSenseModel, DeepSenseConfig, DeepSenseModel
from fedhar.data.dataset import ModalitySpec


class _FusionBaselineContract:
    """Behaviour every supervised fusion baseline shares; subclasses set ``model_cls`` and ``small_cfg``."""

    model_cls: ClassVar[Any]
    small_cfg: ClassVar[Any]

    def build(self, specs: Iterable[ModalitySpec], num_classes: int, small: bool = False) -> nn.Module:
        model: nn.Module = self.model_cls(specs, num_classes, self.small_cfg if small else None)
        return model

    @pytest.mark.parametrize("batch_size", [2, 5])
    def test_forward__gives_logits_of_shape_b_k(
        self, dataset_case: tuple[tuple[ModalitySpec, ...], int], batch_size: int
    ) -> None:
        # Prepare
        specs, num_classes = dataset_case
        model = self.build(specs, num_classes).eval()
        # Execute
        logits = model(make_batch(specs, batch_size))
        # Assert
        assert logits.shape == (batch_size, num_classes)
        assert torch.isfinite(logits).all()

    def test_train_step__updates_parameters_with_finite_loss(
        self, dataset_case: tuple[tuple[ModalitySpec, ...], int]
    ) -> None:
        specs, num_classes = dataset_case
        model = self.build(specs, num_classes)
        labels = torch.arange(4) % num_classes
        take_train_step(model, supervised_loss(make_batch(specs, 4), labels))

    def test_forward__ignores_key_order_of_batch(self) -> None:
        model = self.build(UTD_SPECS, 27, small=True).eval()
        batch = make_batch(UTD_SPECS, 3)
        reversed_batch = dict(reversed(list(batch.items())))
        torch.testing.assert_close(model(batch), model(reversed_batch))

    def test_forward__works_with_one_modality(self) -> None:
        model = self.build(USC_SPECS[:1], 12, small=True).eval()
        assert model(make_batch(USC_SPECS[:1], 2)).shape == (2, 12)

    def test_forward__raises_on_wrong_modality_set(self) -> None:
        model = self.build(UTD_SPECS, 27, small=True)
        with pytest.raises(ValueError, match=r"expected modalities \['inertial', 'skeleton'\], got \['inertial'\]"):
            model(make_batch(UTD_SPECS[:1], 2))

    def test_forward__raises_on_wrong_shape(self) -> None:
        model = self.build(USC_SPECS, 12, small=True)
        batch = make_batch(USC_SPECS, 2)
        batch["gyro"] = batch["gyro"][:, :100]
        with pytest.raises(ValueError, match=r"expected shape \(B, 200, 3\), got \(2, 100, 3\)"):
            model(batch)

    def test_init__raises_on_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="num_classes"):
            self.build(UTD_SPECS, 0)
        with pytest.raises(ValueError, match="distinct names"):
            self.build([UTD_SPECS[0], UTD_SPECS[0]], 27)
        with pytest.raises(ValueError, match="num_intervals=10 exceeds"):
            self.build([ModalitySpec("acc", (8, 3), 100.0)], 12)

    def test_forward__resamples_length_not_divisible_by_intervals(self) -> None:
        spec = ModalitySpec("acc", (37, 3), 100.0)
        model = self.build([spec], 5, small=True).eval()
        assert model(make_batch([spec], 2)).shape == (2, 5)


class TestDeepSenseModel(_FusionBaselineContract):
    model_cls = DeepSenseModel
    small_cfg = DeepSenseConfig(num_intervals=4, conv_channels=16, merge_kernel_sizes=(3, 3), gru_hidden=8)


class TestAttnSenseModel(_FusionBaselineContract):
    model_cls = AttnSenseModel
    small_cfg = AttnSenseConfig(num_intervals=4, conv_channels=16, attention_dim=8, gru_hidden=8)

    def test_forward_with_attention__weights_are_distributions(self) -> None:
        # Prepare
        model = AttnSenseModel(UTD_SPECS, 27, self.small_cfg).eval()
        # Execute
        logits, sensor_weights, time_weights = model.forward_with_attention(make_batch(UTD_SPECS, 3))
        # Assert: one weight per (interval, modality) and per interval, each summing to 1
        assert logits.shape == (3, 27)
        assert sensor_weights.shape == (3, 4, 2) and time_weights.shape == (3, 4)
        torch.testing.assert_close(sensor_weights.sum(-1), torch.ones(3, 4))
        torch.testing.assert_close(time_weights.sum(-1), torch.ones(3))
