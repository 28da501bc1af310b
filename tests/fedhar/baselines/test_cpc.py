"""Tests for CPC: model, loss, objective and fine-tuning classifier."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import USC_SPECS, UTD_SPECS, make_batch, supervised_loss, take_train_step
from torch import Tensor

from fedhar.baselines import CPCClassifier, CPCConfig, CPCLoss, CPCModel, cpc_objective
from fedhar.data.dataset import ModalitySpec

SMALL = CPCConfig(conv_channels=(8, 16), gru_hidden=16, gru_layers=1, prediction_steps=4, classifier_hidden=(16,))
# The IMU part of each dataset: UTD's 6-channel inertial stream, USC's acc + gyro.
IMU_CASES = {"utd": (UTD_SPECS[:1], 27), "usc": (USC_SPECS, 12)}


def _loop_reference(z: Tensor, predictions: Tensor) -> float:
    """Mean over k of the mean over (t, i) of -log softmax_j(z_{j,t+k} . W_k c_{i,t}) at j = i."""
    batch, length, steps, _ = predictions.shape
    per_k = []
    for k in range(1, steps + 1):
        terms = []
        for t in range(length - k):
            for i in range(batch):
                scores = [float(z[j, t + k].double() @ predictions[i, t, k - 1].double()) for j in range(batch)]
                top = max(scores)
                terms.append(-(scores[i] - top - math.log(sum(math.exp(s - top) for s in scores))))
        per_k.append(sum(terms) / len(terms))
    return sum(per_k) / len(per_k)


def _sine_batch(batch: int, length: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Sines of random frequency and phase on 3 channels: the future is predictable from the past."""
    t = torch.arange(length, dtype=torch.float32)
    freq = 0.05 + 0.25 * torch.rand(batch, 1, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, 1, 3, generator=generator)
    return {"acc": torch.sin(freq * t[None, :, None] + phase)}


class TestCPCLoss:
    @pytest.mark.parametrize("batch", [1, 3])
    def test_forward__matches_loop_reference(self, batch: int) -> None:
        gen = torch.Generator().manual_seed(0)
        z, predictions = torch.randn(batch, 7, 5, generator=gen), torch.randn(batch, 7, 3, 5, generator=gen)
        assert CPCLoss()(z, predictions).item() == pytest.approx(_loop_reference(z, predictions), abs=1e-4)

    def test_forward__is_log_batch_for_uninformative_predictions(self) -> None:
        z = torch.randn(4, 10, 8)
        assert CPCLoss()(z, torch.zeros(4, 10, 3, 8)).item() == pytest.approx(math.log(4), abs=1e-6)

    @pytest.mark.parametrize(
        ("z_shape", "pred_shape"),
        [
            ((2, 10, 8), (2, 10, 3, 4)),  # latent sizes differ
            ((2, 10, 8), (2, 9, 3, 8)),  # lengths differ
            ((2, 4, 8), (2, 4, 4, 8)),  # K >= T
            ((2, 10), (2, 10, 3, 8)),  # z lacks its feature axis
        ],
    )
    def test_forward__raises_on_bad_shapes(self, z_shape: tuple, pred_shape: tuple) -> None:
        with pytest.raises(ValueError, match=r"need z \(B, T, D\)"):
            CPCLoss()(torch.zeros(z_shape), torch.zeros(pred_shape))


class TestCPCModel:
    def test_forward__gives_latents_contexts_and_predictions(self) -> None:
        model = CPCModel(USC_SPECS, SMALL).eval()
        z, c = model(make_batch(USC_SPECS, 2))
        assert z.shape == (2, 200, 16) and c.shape == (2, 200, 16)
        assert model.predict(c).shape == (2, 200, 4, 16)

    def test_forward__context_is_causal(self) -> None:
        # Prepare: change only the second half of the window
        model = CPCModel(USC_SPECS, SMALL).eval()
        batch = make_batch(USC_SPECS, 2)
        changed = {m: x.clone() for m, x in batch.items()}
        changed["acc"][:, 150:] += 1.0
        # Execute
        _, c = model(batch)
        _, c_changed = model(changed)
        # Assert: contexts before the change (minus the conv receptive field) are identical
        torch.testing.assert_close(c[:, :140], c_changed[:, :140])

    @pytest.mark.parametrize("case", ["utd", "usc"])
    def test_objective__train_step_updates_parameters(self, case: str) -> None:
        specs, _ = IMU_CASES[case]
        batch = make_batch(specs, 4)
        take_train_step(CPCModel(specs, SMALL), lambda m: cpc_objective()(m, batch))

    def test_objective__decreases_on_predictable_sequences(self) -> None:
        # Prepare
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        spec = ModalitySpec("acc", (32, 3), 50.0)
        model = CPCModel(spec, CPCConfig(conv_channels=(16,), dropout=0.0, gru_hidden=32, gru_layers=1,
                                         prediction_steps=3))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        objective = cpc_objective()
        batch = _sine_batch(16, 32, gen)
        # Execute
        losses = []
        for _ in range(30):
            optimizer.zero_grad()
            loss = objective(model, batch)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        # Assert: starts near log(B) and clearly drops
        assert all(math.isfinite(v) for v in losses)
        assert losses[0] == pytest.approx(math.log(16), abs=0.5)
        assert losses[-1] < 0.5 * losses[0]

    def test_init__raises_on_bad_specs(self) -> None:
        with pytest.raises(ValueError, match=r"shape \(T, C\)"):
            CPCModel(UTD_SPECS)
        with pytest.raises(ValueError, match="share T"):
            CPCModel([USC_SPECS[0], ModalitySpec("gyro", (100, 3), 100.0)])
        with pytest.raises(ValueError, match="prediction_steps=28 must be < T=20"):
            CPCModel(ModalitySpec("acc", (20, 3), 100.0))

    def test_forward__raises_on_wrong_modality_set(self) -> None:
        model = CPCModel(USC_SPECS, SMALL)
        with pytest.raises(ValueError, match=r"expected modalities \['acc', 'gyro'\], got \['acc'\]"):
            model(make_batch(USC_SPECS[:1], 2))


class TestCPCClassifier:
    @pytest.mark.parametrize("case", ["utd", "usc"])
    def test_train_step__gives_logits_and_updates(self, case: str) -> None:
        specs, num_classes = IMU_CASES[case]
        model = CPCClassifier(CPCModel(specs, SMALL), num_classes)
        batch = make_batch(specs, 4)
        assert model.eval()(batch).shape == (4, num_classes)
        take_train_step(model, supervised_loss(batch, torch.arange(4)))

    def test_freeze_encoder__updates_only_the_classifier(self) -> None:
        # Prepare
        model = CPCClassifier(CPCModel(USC_SPECS, SMALL), 12)
        model.freeze_encoder()
        encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
        # Execute
        take_train_step(model, supervised_loss(make_batch(USC_SPECS, 4), torch.arange(4)))
        # Assert: encoder unchanged and kept in eval mode by train()
        for key, value in model.encoder.state_dict().items():
            torch.testing.assert_close(value, encoder_before[key])
        assert not model.encoder.training and model.classifier.training

    def test_forward__mean_pooling_gives_logits(self) -> None:
        model = CPCClassifier(CPCModel(USC_SPECS, SMALL), 12, CPCConfig(pooling="mean", classifier_hidden=(8,)))
        assert model.eval()(make_batch(USC_SPECS, 3)).shape == (3, 12)
        assert F.softmax(model(make_batch(USC_SPECS, 3)), dim=1).shape == (3, 12)

    def test_init__raises_on_bad_num_classes(self) -> None:
        with pytest.raises(ValueError, match="num_classes must be >= 1"):
            CPCClassifier(CPCModel(USC_SPECS, SMALL), 0)
