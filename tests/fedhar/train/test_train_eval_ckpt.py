"""Tests of evaluation metrics, checkpoints, configs, gradient modulation and history."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score
from torch import nn
from train_toys import NUM_CLASSES, ToyFusionNoHeads, make_dataset

from fedhar.errors import ConfigError
from fedhar.train import (
    CheckpointError,
    EpochRecord,
    FinetuneConfig,
    History,
    OptimConfig,
    PretrainConfig,
    evaluate,
    load_checkpoint,
    modulation_coefficients,
    save_checkpoint,
    score_predictions,
)
from fedhar.train.loop import build_optimizer, lr_at


class _Fixed(nn.Module):
    """Predicts a fixed class per sample index (stored in the input)."""

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        preds = batch["imu"][:, 0, 0].long()
        return nn.functional.one_hot(preds, NUM_CLASSES).float()


class TestEvaluate:
    def test_score_predictions__hand_example(self) -> None:
        # Prepare: 6 samples, 3 classes, class 2 never predicted
        labels = np.array([0, 0, 1, 1, 2, 2])
        preds = np.array([0, 1, 1, 1, 0, 0])
        # Execute
        result = score_predictions(labels, preds, num_classes=3)
        # Assert: accuracy 3/6; F1 per class: 2/5, 4/5, 0 -> mean 2/5
        assert result.accuracy == pytest.approx(0.5)
        assert result.macro_f1 == pytest.approx((2 / 5 + 4 / 5 + 0) / 3)
        assert result.macro_f1 == pytest.approx(f1_score(labels, preds, average="macro"))
        np.testing.assert_array_equal(result.confusion, [[1, 1, 0], [0, 2, 0], [2, 0, 0]])

    def test_score_predictions__absent_class_keeps_full_confusion(self) -> None:
        result = score_predictions(np.array([0, 1]), np.array([0, 1]), num_classes=4)
        assert result.confusion.shape == (4, 4) and result.accuracy == 1.0

    def test_evaluate__matches_sklearn(self) -> None:
        data = make_dataset(per_class=2)
        rng = np.random.default_rng(0)
        preds = rng.integers(0, NUM_CLASSES, len(data))
        data.data["imu"][:, 0, 0] = preds
        result = evaluate(_Fixed(), data, batch_size=5)
        assert result.accuracy == pytest.approx(accuracy_score(data.labels, preds))
        assert result.macro_f1 == pytest.approx(f1_score(data.labels, preds, average="macro",
                                                         labels=np.arange(NUM_CLASSES), zero_division=0))
        assert result.num_samples == len(data) and int(result.confusion.sum()) == len(data)
        json.dumps(result.to_dict())

    def test_evaluate__restores_train_mode(self) -> None:
        model = ToyFusionNoHeads()
        model.classifier.eval()
        evaluate(model, make_dataset(per_class=2))
        assert model.training and model.encoders.training and not model.classifier.training

    def test_score_predictions__rejects_length_mismatch(self) -> None:
        with pytest.raises(ValueError, match="equally long"):
            score_predictions(np.array([0]), np.array([0, 1]), 2)


class TestCheckpoint:
    def test_round_trip__model_optimizer_epoch(self, tmp_path: Path) -> None:
        # Prepare: a model and an optimizer with state
        model = ToyFusionNoHeads()
        opt = build_optimizer(model.parameters(), OptimConfig(name="adam", lr=1e-3))
        loss = model({"imu": torch.randn(4, 24, 3), "noise": torch.randn(4, 24, 3)}).sum()
        loss.backward()
        opt.step()
        path = save_checkpoint(tmp_path / "ck" / "state.pt", model, epoch=7, optimizer=opt, extra={"seed": 3})
        # Execute
        other = ToyFusionNoHeads()
        other_opt = build_optimizer(other.parameters(), OptimConfig(name="adam", lr=1e-3))
        ck = load_checkpoint(path, other, other_opt)
        # Assert
        assert ck.epoch == 7 and ck.extra == {"seed": 3}
        for k, v in model.state_dict().items():
            assert torch.equal(v, other.state_dict()[k])
        assert other_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
        assert [p.name for p in path.parent.iterdir()] == ["state.pt"]  # no temp file left

    def test_load__missing_file_raises(self, tmp_path: Path) -> None:
        with pytest.raises(CheckpointError, match="not found"):
            load_checkpoint(tmp_path / "none.pt", nn.Linear(1, 1))

    def test_load__wrong_model_raises(self, tmp_path: Path) -> None:
        path = save_checkpoint(tmp_path / "a.pt", nn.Linear(2, 2), epoch=1)
        with pytest.raises(CheckpointError, match="cannot restore"):
            load_checkpoint(path, nn.Linear(3, 3))


class TestConfig:
    def test_defaults__are_paper_values(self) -> None:
        pre, fine = PretrainConfig(), FinetuneConfig()
        assert (pre.epochs, pre.batch_size, pre.optim.name, pre.optim.lr, pre.optim.momentum,
                pre.optim.weight_decay, pre.optim.milestones, pre.optim.gamma) == (
            300, 32, "sgd", 0.01, 0.9, 1e-4, (100, 200, 300), 0.9)
        assert (fine.epochs, fine.batch_size, fine.optim.name, fine.optim.lr, fine.optim.milestones) == (
            500, 16, "adam", 1e-3, (350, 400, 450))

    def test_from_mapping__partial_optim_keeps_defaults(self) -> None:
        cfg = FinetuneConfig.from_mapping({"epochs": 10, "optim": {"lr": 0.01}})
        assert cfg.epochs == 10 and cfg.optim.lr == 0.01 and cfg.optim.name == "adam"

    @pytest.mark.parametrize("mapping", [{"epoch": 3}, {"optim": {"lrate": 1}}, {"epochs": 0}, {"t_iter": 0}])
    def test_from_mapping__rejects_bad_values(self, mapping: dict) -> None:
        with pytest.raises(ConfigError):
            FinetuneConfig.from_mapping(mapping)

    def test_lr_at__matches_multisteplr(self) -> None:
        cfg = OptimConfig(lr=1.0, milestones=(2, 4), gamma=0.5)
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 4], 0.5)
        for epoch in range(6):
            assert lr_at(cfg, epoch) == pytest.approx(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()


class TestModulation:
    def test_coefficients__dominant_modality_scaled_down(self) -> None:
        coeffs = modulation_coefficients({"a": 0.8, "b": 0.4}, alpha=1.0)
        assert coeffs["b"] == 1.0
        assert coeffs["a"] == pytest.approx(1 - np.tanh(1.0))

    @pytest.mark.parametrize("conf", [{"a": 0.5, "b": 0.5}, {"a": 0.9}])
    def test_coefficients__balanced_or_single_is_identity(self, conf: dict) -> None:
        assert set(modulation_coefficients(conf, alpha=3.0).values()) == {1.0}

    def test_coefficients__negative_alpha_raises(self) -> None:
        with pytest.raises(ValueError, match="alpha"):
            modulation_coefficients({"a": 0.1}, -1.0)


class TestHistory:
    def test_last_and_best__labelled_metrics(self) -> None:
        h = History("finetune")
        for epoch, acc in [(1, 0.2), (2, 0.6), (3, 0.4)]:
            h.append(EpochRecord(epoch, "finetune", 1.0 / epoch, 0.1, 0.5, metrics={"test_accuracy": acc}))
        h.append(EpochRecord(4, "finetune", 0.1, 0.1, 0.5))
        assert h.last("test_accuracy") == 0.4 and h.best("test_accuracy") == (2, 0.6)
        rows = json.loads(json.dumps(h.to_list()))
        assert len(rows) == 4 and rows[1]["test_accuracy"] == 0.6 and h.total_seconds == pytest.approx(2.0)
