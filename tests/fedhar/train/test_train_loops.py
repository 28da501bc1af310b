"""Tests of the pretraining, iterative fine-tuning and supervised loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from train_toys import NUM_CLASSES, ToyFusion, ToyFusionNoHeads, make_dataset, toy_objective

from fedhar.data.dataset import HARDataset
from fedhar.errors import ConfigError
from fedhar.train import (
    FinetuneConfig,
    OptimConfig,
    PretrainConfig,
    SupervisedConfig,
    finetune_iterative,
    phase_of_epoch,
    pretrain,
    set_phase,
    train_supervised,
)
from fedhar.train.augment import AugmentConfig
from fedhar.train.batches import group_batches, iterate_batches, num_batches, to_tensors


@pytest.fixture(scope="module")
def dataset() -> HARDataset:
    return make_dataset()


FT = FinetuneConfig(epochs=4, batch_size=8, t_iter=2, progress=False, eval_every=2)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TestBatches:
    def test_iterate_batches__covers_every_sample_once(self, dataset: HARDataset) -> None:
        tensors = to_tensors(dataset)
        seen = torch.cat([y for _, y in iterate_batches(tensors, 7, shuffle=True, rng=np.random.default_rng(0))])
        assert sorted(seen.tolist()) == sorted(dataset.labels.tolist())

    @pytest.mark.parametrize(("n", "b", "drop", "expected"), [(10, 4, False, 3), (10, 4, True, 2), (3, 4, True, 1)])
    def test_num_batches__drop_last(self, n: int, b: int, drop: bool, expected: int) -> None:
        assert num_batches(n, b, drop) == expected

    def test_iterate_batches__shuffle_needs_rng(self, dataset: HARDataset) -> None:
        with pytest.raises(ValueError, match="rng"):
            next(iterate_batches(to_tensors(dataset), 4, shuffle=True))

    def test_group_batches__one_group_per_batch_each_sample_at_most_once(self) -> None:
        groups = np.repeat([3, 7, 9], [10, 4, 6])  # 10 // 4 = 2 full batches, 4 // 4 = 1, 6 // 4 = 1
        batches = group_batches(groups, 4, np.random.default_rng(0), drop_last=True)
        assert [len(b) for b in batches] == [4] * 4
        assert all(len(set(groups[b])) == 1 for b in batches)
        flat = np.concatenate(batches)
        assert len(set(flat.tolist())) == len(flat)
        assert sorted(set(groups[flat].tolist())) == [3, 7, 9]
        kept = group_batches(groups, 4, np.random.default_rng(0), drop_last=False)
        assert sorted(np.concatenate(kept).tolist()) == list(range(20))  # without drop_last: every sample
        again = group_batches(groups, 4, np.random.default_rng(0), drop_last=False)
        assert all(np.array_equal(a, b) for a, b in zip(kept, again, strict=True))  # seeded

    def test_iterate_batches__groups_checked(self, dataset: HARDataset) -> None:
        tensors = to_tensors(dataset)
        with pytest.raises(ValueError, match="entries for"):
            next(iterate_batches(tensors, 4, shuffle=True, rng=np.random.default_rng(0), groups=np.zeros(3)))
        with pytest.raises(ValueError, match="shuffle=True"):
            next(iterate_batches(tensors, 4, shuffle=False, groups=dataset.subjects))


class TestPhases:
    @pytest.mark.parametrize(("epoch", "expected"), [(0, "encoders"), (1, "encoders"), (2, "classifier"),
                                                     (3, "classifier"), (4, "encoders")])
    def test_phase_of_epoch__alternates_blocks(self, epoch: int, expected: str) -> None:
        assert phase_of_epoch(epoch, 2) == expected

    def test_set_phase__freezes_other_part(self) -> None:
        model = ToyFusion()
        set_phase(model, "encoders")
        assert all(p.requires_grad for p in model.encoders.parameters())
        assert not any(p.requires_grad for p in model.classifier.parameters())
        assert model.encoders.training and not model.classifier.training

    def test_set_phase__rejects_model_without_parts(self) -> None:
        with pytest.raises(ValueError, match="encoders"):
            set_phase(nn.Linear(2, 2), "encoders")


class TestFinetuneIterative:
    @pytest.mark.parametrize("phase", ["encoders", "classifier"])
    def test_frozen_part__params_and_buffers_bit_identical(self, dataset: HARDataset, phase: str) -> None:
        # Prepare: one phase block of t_iter epochs, starting with `phase`
        model = ToyFusionNoHeads()
        frozen = model.classifier if phase == "encoders" else model.encoders
        trained = model.encoders if phase == "encoders" else model.classifier
        before_frozen, before_trained = _state(frozen), _state(trained)
        cfg = FinetuneConfig(epochs=2, batch_size=8, t_iter=2, first_phase=phase, progress=False)
        # Execute
        finetune_iterative(model, dataset, cfg, seed=0, eval_data=dataset)
        # Assert: frozen part unchanged (parameters AND BatchNorm buffers), trained part changed
        assert _same(before_frozen, _state(frozen))
        assert not _same(before_trained, _state(trained))

    def test_run__restores_grad_and_train_mode(self, dataset: HARDataset) -> None:
        model = ToyFusionNoHeads()
        finetune_iterative(model, dataset, FT, seed=0)
        assert all(p.requires_grad for p in model.parameters()) and model.training and model.classifier.training

    def test_history__phases_and_eval_epochs(self, dataset: HARDataset) -> None:
        history = finetune_iterative(ToyFusionNoHeads(), dataset, FT, seed=0, eval_data=dataset)
        assert [r.phase for r in history] == ["encoders", "encoders", "classifier", "classifier"]
        assert [e for e, _ in history.metric("test_accuracy")] == [2, 4]

    def test_seed__same_seed_same_weights_other_seed_differs(self, dataset: HARDataset) -> None:
        states, accs = [], []
        for seed in (0, 0, 1):
            torch.manual_seed(123)
            model = ToyFusionNoHeads()
            h = finetune_iterative(model, dataset, FT, seed=seed, eval_data=dataset)
            states.append(_state(model))
            accs.append(h.losses)
        assert _same(states[0], states[1]) and accs[0] == accs[1]
        assert not _same(states[0], states[2])

    def test_gradient_modulation__runs_and_changes_training(self, dataset: HARDataset) -> None:
        runs = []
        for flag in (False, True):
            torch.manual_seed(0)
            model = ToyFusionNoHeads()
            cfg = FinetuneConfig(epochs=2, batch_size=8, t_iter=2, progress=False, gradient_modulation=flag,
                                 modulation_alpha=5.0)
            finetune_iterative(model, dataset, cfg, seed=0)
            runs.append(_state(model.encoders))
        assert not _same(runs[0], runs[1])

    def test_encoder_mode_bn_eval__weights_train_but_batchnorm_statistics_stay(self, dataset: HARDataset) -> None:
        model = ToyFusionNoHeads()
        before = _state(model.encoders)
        cfg = FinetuneConfig(epochs=2, batch_size=8, t_iter=2, progress=False, encoder_mode="bn_eval")
        finetune_iterative(model, dataset, cfg, seed=0)
        after = _state(model.encoders)
        stats = [k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
        weights = [k for k in before if k not in stats]
        assert stats and all(torch.equal(before[k], after[k]) for k in stats)
        assert any(not torch.equal(before[k], after[k]) for k in weights)

    def test_encoder_mode_train__batchnorm_statistics_move(self, dataset: HARDataset) -> None:
        model = ToyFusionNoHeads()
        before = _state(model.encoders)
        finetune_iterative(model, dataset, FinetuneConfig(epochs=2, batch_size=8, t_iter=2, progress=False), seed=0)
        assert any(not torch.equal(before[k], v) for k, v in _state(model.encoders).items()
                   if k.endswith("running_mean"))

    def test_encoder_mode_frozen__encoders_untouched_every_epoch_trains_classifier(self, dataset: HARDataset) -> None:
        model = ToyFusionNoHeads()
        before_enc, before_cls = _state(model.encoders), _state(model.classifier)
        cfg = FinetuneConfig(epochs=4, batch_size=8, t_iter=1, progress=False, encoder_mode="frozen")
        history = finetune_iterative(model, dataset, cfg, seed=0)
        assert [r.phase for r in history] == ["classifier"] * 4
        assert _same(before_enc, _state(model.encoders)) and not _same(before_cls, _state(model.classifier))

    def test_encoder_mode__unknown_rejected(self) -> None:
        with pytest.raises(ConfigError, match="encoder_mode"):
            FinetuneConfig(encoder_mode="sometimes")  # type: ignore[arg-type]

    def test_augment__changes_training_and_stays_deterministic(self, dataset: HARDataset) -> None:
        aug = AugmentConfig(rotation_deg=90.0, scale=0.1, jitter=0.1)
        runs = []
        for augment in (AugmentConfig(), aug, aug):
            torch.manual_seed(0)
            model = ToyFusionNoHeads()
            cfg = FinetuneConfig(epochs=2, batch_size=8, t_iter=2, progress=False, augment=augment)
            runs.append(_state(finetune_iterative(model, dataset, cfg, seed=0) and model))
        assert not _same(runs[0], runs[1]) and _same(runs[1], runs[2])

    def test_learns__beats_chance(self, dataset: HARDataset) -> None:
        cfg = FinetuneConfig(epochs=12, batch_size=8, t_iter=2, progress=False, eval_every=12)
        history = finetune_iterative(ToyFusionNoHeads(), dataset, cfg, seed=0, eval_data=dataset)
        assert history.last("test_accuracy") > 2.0 / NUM_CLASSES


class TestPretrain:
    def test_pretrain__loss_decreases_and_deterministic(self, dataset: HARDataset) -> None:
        cfg = PretrainConfig(epochs=4, batch_size=16, progress=False, optim=OptimConfig(lr=0.05))
        results = []
        for _ in range(2):
            torch.manual_seed(0)
            model = ToyFusion()
            history = pretrain(model, toy_objective, dataset, cfg, seed=3)
            results.append((history.losses, _state(model)))
        assert results[0][0] == results[1][0] and _same(results[0][1], results[1][1])
        assert results[0][0][-1] < results[0][0][0]

    def test_pretrain__subject_batching_draws_each_batch_from_one_subject(self, dataset: HARDataset) -> None:
        subjects_seen: list[set[int]] = []

        def objective(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            # The toy's windows carry no subject, so look each batch's first modality rows up in the dataset.
            rows = batch[next(iter(batch))].reshape(len(batch[next(iter(batch))]), -1)
            table = torch.from_numpy(dataset.data[next(iter(batch))].reshape(len(dataset), -1))
            idx = [int(torch.nonzero((table == r).all(dim=1))[0]) for r in rows]
            subjects_seen.append(set(dataset.subjects[idx].tolist()))
            return toy_objective(model, batch)

        cfg = PretrainConfig(epochs=1, batch_size=8, progress=False, batching="subject")
        pretrain(ToyFusion(), objective, dataset, cfg, seed=0)
        assert subjects_seen and all(len(s) == 1 for s in subjects_seen)
        assert len(set().union(*subjects_seen)) == len(set(dataset.subjects.tolist()))
        with pytest.raises(ConfigError, match="batching"):
            PretrainConfig(batching="class")  # type: ignore[arg-type]

    def test_pretrain__lr_schedule_steps_at_milestones(self, dataset: HARDataset) -> None:
        cfg = PretrainConfig(epochs=3, batch_size=32, progress=False, optim=OptimConfig(lr=0.1, milestones=(1, 2),
                                                                                         gamma=0.5))
        history = pretrain(ToyFusion(), toy_objective, dataset, cfg, seed=0)
        assert [r.lr for r in history] == pytest.approx([0.1, 0.05, 0.025])


class TestSupervised:
    def test_train_supervised__learns_and_evaluates_last_epoch(self, dataset: HARDataset) -> None:
        cfg = SupervisedConfig(epochs=5, batch_size=8, progress=False, eval_every=10)
        history = train_supervised(ToyFusionNoHeads(), dataset, cfg, seed=0, eval_data=dataset)
        assert [e for e, _ in history.metric("test_accuracy")] == [5]
        assert history.last("test_accuracy") > 2.0 / NUM_CLASSES
