"""Tests for the CMC loss and objective."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from baseline_helpers import USC_SPECS, UTD_SPECS, make_batch, take_train_step
from model_presets import compact_model_config
from torch import Tensor

from fedhar.baselines import CMCLoss, cmc_objective, cmc_or_unimodal_objective
from fedhar.models import ContrastiveFusionModel


def _loop_reference(projections: dict[str, Tensor], temperature: float) -> float:
    """CMC full-graph loss from Tian et al. (2019), Eq. 2, sample by sample."""
    z = {m: F.normalize(p.double(), dim=1) for m, p in projections.items()}
    pair_losses = []
    for m, n in itertools.permutations(sorted(z), 2):
        batch = z[m].shape[0]
        total = 0.0
        for i in range(batch):
            scores = [math.exp(float(z[m][i] @ z[n][j]) / temperature) for j in range(batch)]
            total -= math.log(scores[i] / sum(scores))
        pair_losses.append(total / batch)
    return sum(pair_losses) / len(pair_losses)


def _random_projections(names: tuple[str, ...], batch: int, dim: int, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: F.normalize(torch.randn(batch, dim, generator=gen), dim=1) for m in names}


class TestCMCLoss:
    @pytest.mark.parametrize("batch", [1, 2, 8])
    @pytest.mark.parametrize("temperature", [0.07, 0.5])
    @pytest.mark.parametrize("names", [("inertial", "skeleton"), ("acc", "gyro", "mag")])
    def test_forward__matches_loop_reference(self, batch: int, temperature: float, names: tuple[str, ...]) -> None:
        projections = _random_projections(names, batch, 16)
        loss = CMCLoss(temperature)(projections)
        assert loss.item() == pytest.approx(_loop_reference(projections, temperature), abs=1e-4)

    def test_forward__is_symmetric_in_modalities(self) -> None:
        u, s = _random_projections(("a", "b"), 8, 16).values()
        loss_fn = CMCLoss()
        torch.testing.assert_close(loss_fn({"a": u, "b": s}), loss_fn({"a": s, "b": u}))
        torch.testing.assert_close(loss_fn({"a": u, "b": s}), loss_fn({"b": s, "a": u}))

    def test_forward__is_invariant_to_batch_permutation(self) -> None:
        projections = _random_projections(("a", "b"), 8, 16)
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
        permuted = {m: p[perm] for m, p in projections.items()}
        torch.testing.assert_close(CMCLoss()(projections), CMCLoss()(permuted))

    def test_forward__equals_closed_form_for_aligned_orthogonal_views(self) -> None:
        # Prepare: both views are the same orthonormal basis, so s_ii = 1 and s_ij = 0
        batch, temperature = 6, 0.5
        eye = torch.eye(batch)
        # Execute
        loss = CMCLoss(temperature)({"a": eye, "b": eye.clone()})
        # Assert: -log(e^{1/t} / (e^{1/t} + B - 1))
        assert loss.item() == pytest.approx(math.log1p((batch - 1) * math.exp(-1 / temperature)), rel=1e-5)

    def test_forward__normalises_inputs(self) -> None:
        projections = _random_projections(("a", "b"), 4, 8)
        scaled = {m: 3.0 * p for m, p in projections.items()}
        torch.testing.assert_close(CMCLoss()(projections), CMCLoss()(scaled))

    def test_forward__raises_on_one_modality(self) -> None:
        with pytest.raises(ValueError, match=r"at least two modalities, got \['a'\]"):
            CMCLoss()(_random_projections(("a",), 4, 8))

    def test_forward__raises_on_shape_mismatch(self) -> None:
        projections = {"a": torch.randn(4, 8), "b": torch.randn(4, 16)}
        with pytest.raises(ValueError, match=r"'a': \(4, 8\), 'b': \(4, 16\)"):
            CMCLoss()(projections)

    @pytest.mark.parametrize("temperature", [0.0, -0.1])
    def test_init__raises_on_non_positive_temperature(self, temperature: float) -> None:
        with pytest.raises(ValueError, match="temperature must be > 0"):
            CMCLoss(temperature)


class TestCMCObjective:
    @pytest.mark.parametrize("specs", [UTD_SPECS, USC_SPECS], ids=["utd", "usc"])
    def test_objective__trains_contrastive_fusion_model(self, specs: tuple) -> None:
        model = ContrastiveFusionModel(specs, compact_model_config())
        batch = make_batch(specs, 4)
        take_train_step(model, lambda m: cmc_objective()(m, batch))

    def test_or_unimodal__falls_back_for_one_modality(self) -> None:
        model = ContrastiveFusionModel(USC_SPECS[:1], compact_model_config())
        objective = cmc_or_unimodal_objective(torch.Generator().manual_seed(0))
        take_train_step(model, lambda m: objective(m, make_batch(USC_SPECS[:1], 4)))

    def test_or_unimodal__uses_cmc_for_two_modalities(self) -> None:
        model = ContrastiveFusionModel(USC_SPECS, compact_model_config()).eval()
        batch = make_batch(USC_SPECS, 4)
        objective = cmc_or_unimodal_objective(torch.Generator().manual_seed(0))
        torch.testing.assert_close(objective(model, batch), cmc_objective()(model, batch))
