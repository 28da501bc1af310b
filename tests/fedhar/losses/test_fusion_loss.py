"""CosmoFusionLoss against a slow loop reference, invariants and errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fedhar.losses import (
    DEFAULT_FUSION_WEIGHTS,
    CosmoFusionLoss,
    build_fusion_views,
    fusion_contrastive_loss,
    fusion_weight_matrix,
)


def _projections(batch: int, dim: int = 16, modalities: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"m{j}": F.normalize(torch.randn(batch, dim, generator=gen), dim=1) for j in range(modalities)}


def _loop_reference(u: torch.Tensor, s: torch.Tensor, weights: list[float], temperature: float) -> float:
    """Cosmo's loss written out view by view (SupCon eq. 2, labels = sample index)."""
    views = []  # (view vector, sample index)
    for w in weights:
        for b in range(len(u)):
            v = w * u[b] + (1 - w) * s[b]
            views.append((v / v.norm(), b))
    total = 0.0
    for i, (vi, bi) in enumerate(views):
        denom = sum(math.exp(float(vi @ vk) / temperature) for k, (vk, _) in enumerate(views) if k != i)
        positives = [k for k, (_, bk) in enumerate(views) if bk == bi and k != i]
        total += -sum(float(vi @ views[k][0]) / temperature - math.log(denom) for k in positives) / len(positives)
    return total / len(views)


class TestCosmoFusionLoss:
    @pytest.mark.parametrize("batch", [1, 3, 8])
    @pytest.mark.parametrize("weights", [DEFAULT_FUSION_WEIGHTS, (0.25, 0.5, 0.75), (0.3, 0.7)])
    @pytest.mark.parametrize("temperature", [0.07, 0.5])
    def test_forward__matches_loop_reference(self, batch: int, weights: tuple[float, ...], temperature: float) -> None:
        proj = {k: v.double() for k, v in _projections(batch).items()}
        loss = CosmoFusionLoss(temperature=temperature, fusion_weights=weights)(proj)
        assert loss.item() == pytest.approx(_loop_reference(proj["m0"], proj["m1"], list(weights), temperature), rel=1e-9)

    def test_forward__invariant_to_batch_permutation(self) -> None:
        proj = _projections(10)
        perm = torch.randperm(10, generator=torch.Generator().manual_seed(1))
        loss_fn = CosmoFusionLoss()
        assert loss_fn(proj).item() == pytest.approx(loss_fn({k: v[perm] for k, v in proj.items()}).item(), rel=1e-5)

    def test_forward__positive_and_lower_when_modalities_agree(self) -> None:
        proj = _projections(8)
        loss_fn = CosmoFusionLoss()
        aligned = loss_fn({"m0": proj["m0"], "m1": proj["m0"]})
        assert 0 < aligned.item() < loss_fn(proj).item()

    def test_forward__single_modality_raises(self) -> None:
        with pytest.raises(ValueError, match="UnimodalContrastiveLoss"):
            CosmoFusionLoss()(_projections(4, modalities=1))

    def test_forward__mismatched_shapes_raise(self) -> None:
        with pytest.raises(ValueError, match="same shape"):
            CosmoFusionLoss()({"a": torch.randn(4, 8), "b": torch.randn(3, 8)})

    def test_forward__three_modalities(self) -> None:
        loss = CosmoFusionLoss()(_projections(4, modalities=3))
        assert torch.isfinite(loss) and loss.item() > 0

    def test_hard_positive_beta__zero_equals_plain_supcon(self) -> None:
        proj = _projections(6)
        assert CosmoFusionLoss(hard_positive_beta=0.0)(proj).item() == pytest.approx(CosmoFusionLoss()(proj).item())

    def test_hard_positive_beta__upweights_hardest_positive(self) -> None:
        # one sample, three views; view 2 is the least similar to view 0
        views = F.normalize(torch.tensor([[[1.0, 0.0], [0.9, 0.1], [0.2, 1.0]]]), dim=-1)
        plain = fusion_contrastive_loss(views, temperature=0.5)
        hard = fusion_contrastive_loss(views, temperature=0.5, hard_positive_beta=5.0)
        assert hard.item() > plain.item()

    def test_copies__identical_copies_equal_the_loss_over_doubled_views(self) -> None:
        """Two stacked copies of a batch: the views of both copies of a sample are positives."""
        proj = {k: v.double() for k, v in _projections(5).items()}
        weights = (0.25, 0.5, 0.75)
        doubled = CosmoFusionLoss(fusion_weights=weights, copies=2)({k: torch.cat([v, v]) for k, v in proj.items()})
        views = build_fusion_views(list(proj.values()), fusion_weight_matrix(2, weights))
        expected = fusion_contrastive_loss(torch.cat([views, views], dim=1), temperature=0.07)
        assert doubled.item() == pytest.approx(expected.item(), rel=1e-9)
        assert doubled.item() != pytest.approx(CosmoFusionLoss(fusion_weights=weights)(proj).item())

    def test_copies__pairs_rows_of_the_same_sample(self) -> None:
        """Copy B is copy A's sample order: swapping B's rows changes which views are positives."""
        a, b = _projections(6, seed=1), _projections(6, seed=2)
        loss_fn = CosmoFusionLoss(copies=2)
        paired = loss_fn({k: torch.cat([a[k], 0.9 * a[k] + 0.1 * b[k]]) for k in a})
        shuffled = loss_fn({k: torch.cat([a[k], (0.9 * a[k] + 0.1 * b[k]).roll(1, dims=0)]) for k in a})
        assert paired.item() < shuffled.item()

    def test_copies__rows_not_divisible_raise(self) -> None:
        with pytest.raises(ValueError, match="copies"):
            CosmoFusionLoss(copies=2)(_projections(5))

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"copies": 0}, "copies"),
            ({"temperature": 0.0}, "temperature"),  # division by zero
            ({"hard_positive_beta": -1.0}, "hard_positive_beta"),  # would favour easy positives
            ({"fusion_weights": ()}, "empty"),  # no views at all
            ({"fusion_weights": (0.5,)}, "distinct"),  # a single view has no positive
            ({"fusion_weights": (1.5, 0.5)}, r"\[0, 1\]"),  # not a convex combination
        ],
    )
    def test_init__bad_argument_raises(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            CosmoFusionLoss(**kwargs)


class TestFusionViews:
    def test_weight_matrix__two_modalities_is_cosmo(self) -> None:
        expected = torch.tensor([[w, 1 - w] for w in DEFAULT_FUSION_WEIGHTS], dtype=torch.float64)
        assert torch.allclose(fusion_weight_matrix(2), expected)

    def test_weight_matrix__three_modalities_rows_on_simplex(self) -> None:
        weights = fusion_weight_matrix(3)
        assert weights.shape == (27, 3)  # 9 weights x 3 modalities, no duplicates
        assert torch.allclose(weights.sum(1), torch.ones(len(weights), dtype=torch.float64))
        assert (weights >= 0).all()

    def test_weight_matrix__explicit_rows(self) -> None:
        rows = ((0.2, 0.3, 0.5), (0.6, 0.2, 0.2))
        assert torch.allclose(fusion_weight_matrix(3, rows), torch.tensor(rows, dtype=torch.float64))
        with pytest.raises(ValueError, match="sum to 1"):
            fusion_weight_matrix(3, ((0.2, 0.3, 0.6), (0.6, 0.2, 0.2)))

    def test_build_fusion_views__convex_combination(self) -> None:
        u, s = torch.randn(4, 8), torch.randn(4, 8)
        views = build_fusion_views([u, s], torch.tensor([[0.1, 0.9], [0.7, 0.3]]), normalize=False)
        assert views.shape == (4, 2, 8)
        assert torch.allclose(views[:, 1], 0.7 * u + 0.3 * s)

    def test_build_fusion_views__normalised(self) -> None:
        views = build_fusion_views([torch.randn(4, 8), torch.randn(4, 8)], fusion_weight_matrix(2))
        assert torch.allclose(views.norm(dim=-1), torch.ones(4, 9), atol=1e-5)
