"""Stage 2 from class statistics: additive statistics, the pooled covariance, the LDA and CCVR heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from model_presets import compact_model_config
from torch import nn

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.loading import load_dataset
from fedhar.errors import ConfigError
from fedhar.federated import build_finetune_model, feature_layout_of
from fedhar.train.augment import AugmentConfig
from fedhar.train.class_stats import (
    ClassFeatureStats,
    ClassStatsConfig,
    check_class_stats,
    class_feature_stats,
    fit_lda_head,
    fit_personal_lda_head,
    fit_stats_head,
    fit_virtual_classifier,
    flatten_features,
    unflatten_features,
)

SYNTHETIC = Path(__file__).resolve().parents[3] / "configs" / "dataset" / "synthetic.yaml"
LAYOUT = (("a", 2, 3), ("b", 2, 2))  # D = 6 + 4 = 10
DIM = 10


@pytest.fixture(scope="module")
def synthetic_dataset() -> HARDataset:
    """configs/dataset/synthetic.yaml, 3 subjects."""
    cfg = yaml.safe_load(SYNTHETIC.read_text())
    cfg["preprocess"]["num_subjects"] = 3
    return load_dataset(DatasetConfig.from_mapping(cfg))


def stats_of(x: np.ndarray, y: np.ndarray, k: int) -> ClassFeatureStats:
    """The statistics of flat features ``x`` with labels ``y``, computed directly."""
    counts = np.bincount(y, minlength=k).astype(float)
    sums = np.stack([x[y == c].sum(axis=0) for c in range(k)])
    return ClassFeatureStats(counts, sums, x.T @ x)


def blobs(rng: np.random.Generator, n_per_class: int, k: int, sep: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    means = rng.normal(size=(k, DIM)) * sep
    y = np.repeat(np.arange(k), n_per_class)
    return means[y] + rng.normal(size=(len(y), DIM)), y


class TestClassFeatureStats:
    def test_merge__equals_the_statistics_of_the_pooled_rows(self) -> None:
        rng = np.random.default_rng(0)
        x, y = blobs(rng, 6, 3)
        halves = [stats_of(x[i::2], y[i::2], 3) for i in (0, 1)]
        merged, pooled = ClassFeatureStats.merge(halves), stats_of(x, y, 3)
        for a, b in zip(merged.to_arrays().values(), pooled.to_arrays().values(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12)

    def test_pooled_covariance__within_class_covariance_then_shrinkage(self) -> None:
        rng = np.random.default_rng(1)
        x, y = blobs(rng, 8, 3)
        centred = x - np.stack([x[y == c].mean(axis=0) for c in range(3)])[y]
        expected = centred.T @ centred / (len(y) - 3)
        stats = stats_of(x, y, 3)
        np.testing.assert_allclose(stats.pooled_covariance(0.0), expected, rtol=1e-9, atol=1e-12)
        target = np.trace(expected) / DIM * np.eye(DIM)
        np.testing.assert_allclose(stats.pooled_covariance(0.25), 0.75 * expected + 0.25 * target, rtol=1e-9,
                                   atol=1e-12)

    def test_pooled_covariance__needs_more_rows_than_classes(self) -> None:
        x, y = np.eye(DIM)[:2], np.array([0, 1])
        with pytest.raises(ValueError, match="more rows than classes"):
            stats_of(x, y, 2).pooled_covariance(0.1)

    @pytest.mark.parametrize(("name", "value", "words"), [
        ("counts", np.array([1.0, -1.0]), "non-negative integers"),
        ("counts", np.array([1.5, 1.0]), "non-negative integers"),
        ("sums", np.full((2, DIM), np.nan), "finite"),
        ("scatter", np.triu(np.ones((DIM, DIM))), "symmetric"),
        ("scatter", np.ones((DIM, DIM + 1)), "scatter"),
    ])
    def test_from_arrays__malformed_raises(self, name: str, value: np.ndarray, words: str) -> None:
        good = stats_of(np.eye(DIM)[:4], np.array([0, 0, 1, 1]), 2).to_arrays()
        with pytest.raises(ValueError, match=words):
            ClassFeatureStats.from_arrays({**good, name: value})

    def test_check__counts_must_be_passes_plus_one_times_the_labeled_rows(self) -> None:
        stats = stats_of(np.eye(DIM)[:6], np.array([0, 0, 0, 1, 1, 1]), 2)  # 3 + 3 = (1 + 2) x (1, 1)
        assert check_class_stats(stats, np.array([1, 1]), passes=2, dim=DIM) is None
        assert "differ from the expected [6, 3]" in str(check_class_stats(stats, np.array([2, 1]), 2, DIM))
        assert "expected 2 x 12" in str(check_class_stats(stats, np.array([1, 1]), 2, 12))


class TestFlatten:
    def test_flatten_unflatten__round_trip_and_zeros_for_a_missing_modality(self) -> None:
        a, b = torch.randn(4, 2, 3), torch.randn(4, 2, 2)
        flat = flatten_features({"a": a, "b": b}, LAYOUT)
        assert flat.shape == (4, DIM)
        back = unflatten_features(flat, LAYOUT)
        assert torch.equal(back["a"], a) and torch.equal(back["b"], b)
        only_a = flatten_features({"a": a}, LAYOUT)
        assert torch.equal(only_a[:, :6], a.reshape(4, -1)) and not only_a[:, 6:].any()


class TestLDAHead:
    def test_lda__predicts_the_gaussian_maximum_likelihood_class(self) -> None:
        rng = np.random.default_rng(2)
        x, y = blobs(rng, 10, 4, sep=1.0)
        stats = stats_of(x, y, 4)
        head = fit_lda_head(stats, LAYOUT, shrinkage=0.2)
        logits = head(unflatten_features(torch.from_numpy(x).float(), LAYOUT)).detach().numpy()
        inv, mu = np.linalg.inv(stats.pooled_covariance(0.2)), stats.means()
        log_lik = np.stack([-0.5 * np.einsum("nd,de,ne->n", x - m, inv, x - m) for m in mu], axis=1)
        np.testing.assert_array_equal(logits.argmax(1), (log_lik + np.log(stats.counts / stats.counts.sum())).argmax(1))

    def test_lda__never_predicts_a_class_without_rows(self) -> None:
        rng = np.random.default_rng(3)
        x, y = blobs(rng, 10, 3)
        stats = stats_of(x, y, 4)  # class 3 has no row
        logits = fit_lda_head(stats, LAYOUT, 0.1)(unflatten_features(torch.randn(50, DIM) * 10, LAYOUT))
        assert (logits.argmax(1) != 3).all()

    def test_lda__federated_equals_centralised_and_beats_fedavg_under_disjoint_labels(self) -> None:
        # Two clients with disjoint classes (0-2 and 3-5). The head from their merged statistics
        # is the head from the pooled rows; FedAvg of two softmax classifiers, each trained on its
        # own classes only, confuses classes across clients. Few labels (4 per class), as at 5 %.
        rng = np.random.default_rng(4)
        x, y = blobs(rng, 4, 6, sep=1.0)
        own = [y < 3, y >= 3]
        merged = ClassFeatureStats.merge([stats_of(x[m], y[m], 6) for m in own])
        fed, central = fit_lda_head(merged, LAYOUT, 0.1), fit_lda_head(stats_of(x, y, 6), LAYOUT, 0.1)
        torch.testing.assert_close(fed.state_dict(), central.state_dict(), rtol=1e-5, atol=1e-5)
        test_x, test_y = blobs(np.random.default_rng(4), 30, 6, sep=1.0)  # same means (same seed), new noise
        features = unflatten_features(torch.from_numpy(test_x).float(), LAYOUT)
        lda_acc = float((fed(features).argmax(1).numpy() == test_y).mean())
        fedavg_acc = float((_fedavg_linear(x, y, own)(torch.from_numpy(test_x).float()).argmax(1).numpy()
                            == test_y).mean())
        assert lda_acc > 0.75 and lda_acc > fedavg_acc + 0.1, (lda_acc, fedavg_acc)  # measured 0.80 vs 0.62


def _fedavg_linear(x: np.ndarray, y: np.ndarray, own: list[np.ndarray]) -> nn.Linear:
    """FedAvg (one round, equal weights) of softmax regressions each trained on one client's rows only."""
    torch.manual_seed(0)
    models = []
    for mask in own:
        model = nn.Linear(DIM, 6)
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        xs, ys = torch.from_numpy(x[mask]).float(), torch.from_numpy(y[mask]).long()
        for _ in range(200):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xs), ys).backward()
            opt.step()
        models.append(model.state_dict())
    avg = nn.Linear(DIM, 6)
    avg.load_state_dict({k: sum(m[k] for m in models) / len(models) for k in models[0]})
    return avg


class _FlatLinear(nn.Module):
    """A classifier over the feature mapping: flatten, then a linear layer."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, num_classes)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.linear(flatten_features(features, LAYOUT))


class TestVirtualClassifier:
    def test_ccvr__learns_separable_classes_and_is_deterministic_by_seed(self) -> None:
        rng = np.random.default_rng(5)
        x, y = blobs(rng, 8, 3)
        stats = stats_of(x, y, 3)
        cfg = ClassStatsConfig.from_mapping({"epochs": 40, "virtual_per_class": 32, "batch_size": 32, "optim": {"lr": 0.01}})
        runs = []
        for _ in range(2):
            torch.manual_seed(0)
            clf = _FlatLinear()
            losses = fit_virtual_classifier(clf, stats, LAYOUT, cfg, seed=7)
            runs.append(clf.state_dict())
        assert losses[-1] < losses[0] / 2
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        acc = (clf(unflatten_features(torch.from_numpy(x).float(), LAYOUT)).argmax(1).numpy() == y).mean()
        assert acc > 0.9


class TestFeatureStatistics:
    def test_stats_of_a_model__per_subject_merge_equals_all_rows(self, synthetic_dataset: HARDataset) -> None:
        torch.manual_seed(0)
        info = synthetic_dataset.info
        cfg = compact_model_config()
        model = build_finetune_model(info, info.modality_names, cfg)
        layout = feature_layout_of(info, cfg)
        aug = AugmentConfig()
        k = info.num_classes
        whole = class_feature_stats(model, synthetic_dataset, layout, k, passes=3, augment=aug, seed=0)
        parts = [class_feature_stats(model, synthetic_dataset.subset(synthetic_dataset.indices_of_subjects([s])),
                                     layout, k, passes=3, augment=aug, seed=0)
                 for s in np.unique(synthetic_dataset.subjects)]
        merged = ClassFeatureStats.merge(parts)
        # No augmentation configured: only the clean pass, whatever ``passes`` says.
        np.testing.assert_array_equal(whole.counts, np.bincount(synthetic_dataset.labels, minlength=k))
        np.testing.assert_allclose(merged.sums, whole.sums, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-9, atol=1e-8)
        empty = class_feature_stats(model, synthetic_dataset.subset(np.array([], dtype=int)), layout, k, 3, aug, 0)
        assert empty.counts.sum() == 0

    def test_augmented_passes__counted_and_change_the_features(self, synthetic_dataset: HARDataset) -> None:
        torch.manual_seed(0)
        info = synthetic_dataset.info
        cfg = compact_model_config()
        model = build_finetune_model(info, info.modality_names, cfg)
        layout = feature_layout_of(info, cfg)
        aug = AugmentConfig(jitter=0.5)
        clean = class_feature_stats(model, synthetic_dataset, layout, info.num_classes, 0, aug, seed=0)
        noisy = class_feature_stats(model, synthetic_dataset, layout, info.num_classes, 2, aug, seed=0)
        np.testing.assert_array_equal(noisy.counts, 3 * clean.counts)
        assert not np.allclose(noisy.sums, 3 * clean.sums)
        again = class_feature_stats(model, synthetic_dataset, layout, info.num_classes, 2, aug, seed=0)
        np.testing.assert_array_equal(again.scatter, noisy.scatter)

    def test_row_clip__bounds_every_rows_norm(self, synthetic_dataset: HARDataset) -> None:
        torch.manual_seed(0)
        info = synthetic_dataset.info
        cfg = compact_model_config()
        model = build_finetune_model(info, info.modality_names, cfg)
        layout = feature_layout_of(info, cfg)
        free = class_feature_stats(model, synthetic_dataset, layout, info.num_classes, 0, AugmentConfig(), seed=0)
        rows = free.counts.sum()
        mean_sq_norm = np.trace(free.scatter) / rows
        bound = 0.5 * float(np.sqrt(mean_sq_norm))  # below the typical norm: most rows are scaled down
        clipped = class_feature_stats(model, synthetic_dataset, layout, info.num_classes, 0, AugmentConfig(), seed=0,
                                      row_clip=bound)
        # trace(scatter) = sum of squared row norms: at most rows x bound^2, and every row at the bound here
        assert np.trace(clipped.scatter) <= rows * bound**2 * (1 + 1e-9)
        assert np.trace(clipped.scatter) > 0.9 * rows * bound**2
        np.testing.assert_array_equal(clipped.counts, free.counts)

    def test_fit_stats_head__unknown_head_raises(self, synthetic_dataset: HARDataset) -> None:
        info = synthetic_dataset.info
        model = build_finetune_model(info, info.modality_names, compact_model_config())
        stats = stats_of(np.eye(DIM)[:4], np.array([0, 0, 1, 1]), 2)
        with pytest.raises(ValueError, match="head must be one of"):
            fit_stats_head(model, stats, LAYOUT, "fedavg", ClassStatsConfig(), seed=0)


class TestConfig:
    def test_from_mapping__unknown_key_and_bad_values_raise(self) -> None:
        assert ClassStatsConfig.from_mapping({"passes": 3, "optim": {"lr": 0.01}}).optim.lr == 0.01
        with pytest.raises(ConfigError, match="unknown keys"):
            ClassStatsConfig.from_mapping({"pases": 3})
        with pytest.raises(ConfigError, match="shrinkage"):
            ClassStatsConfig(shrinkage=1.5)


class TestPersonalHead:
    def test_personal__means_move_towards_own_rows_and_a_strong_prior_gives_the_global_head(self) -> None:
        rng = np.random.default_rng(6)
        x, y = blobs(rng, 10, 3, sep=1.0)
        global_stats = stats_of(x, y, 3)
        own_x = x[y != 2][:8] + 3.0  # the client's own rows are shifted and hold no row of class 2
        own = stats_of(own_x, y[y != 2][:8], 3)
        strong = fit_personal_lda_head(global_stats, own, LAYOUT, 0.2, strength=1e9)
        torch.testing.assert_close(strong.state_dict(), fit_lda_head(global_stats, LAYOUT, 0.2).state_dict(),
                                   rtol=1e-4, atol=1e-3)
        weak = fit_personal_lda_head(global_stats, own, LAYOUT, 0.2, strength=1e-6)
        own_acc = (weak(unflatten_features(torch.from_numpy(own_x).float(), LAYOUT)).argmax(1).numpy()
                   == y[y != 2][:8]).mean()
        glob_acc = (fit_lda_head(global_stats, LAYOUT, 0.2)(unflatten_features(torch.from_numpy(own_x).float(),
                                                                                  LAYOUT)).argmax(1).numpy()
                    == y[y != 2][:8]).mean()
        assert own_acc == 1.0 and glob_acc == 0.75  # measured
        # class 2 (no own rows) keeps the global mean: its weight row is the global head's
        cov_inv_mu = np.linalg.solve(global_stats.pooled_covariance(0.2), global_stats.means()[2])
        np.testing.assert_allclose(weak.linear.weight[2].detach().numpy(), cov_inv_mu, rtol=1e-4, atol=1e-4)

    def test_personal__shape_mismatch_and_bad_strength_raise(self) -> None:
        a = stats_of(np.eye(DIM)[:4], np.array([0, 0, 1, 1]), 2)
        b = stats_of(np.eye(DIM)[:4], np.array([0, 0, 1, 1]), 3)
        with pytest.raises(ValueError, match="do not match"):
            fit_personal_lda_head(a, b, LAYOUT, 0.1, 1.0)
        with pytest.raises(ValueError, match="strength must be > 0"):
            fit_personal_lda_head(a, a, LAYOUT, 0.1, 0.0)


def test_ccvr__federated_matches_centralised_fit_and_beats_fedavg_under_disjoint_labels() -> None:
    # The LDA test's set-up: two clients with disjoint classes, 4 labels per class.
    rng = np.random.default_rng(4)
    x, y = blobs(rng, 4, 6, sep=1.0)
    own = [y < 3, y >= 3]
    merged = ClassFeatureStats.merge([stats_of(x[m], y[m], 6) for m in own])
    cfg = ClassStatsConfig.from_mapping({"epochs": 40, "virtual_per_class": 32, "batch_size": 32, "optim": {"lr": 0.01}})
    heads = []
    for stats in (merged, stats_of(x, y, 6)):
        torch.manual_seed(0)
        head = _FlatLinear(6)
        fit_virtual_classifier(head, stats, LAYOUT, cfg, seed=3)
        heads.append(head)
    torch.testing.assert_close(heads[0].state_dict(), heads[1].state_dict(), rtol=1e-3, atol=1e-3)
    test_x, test_y = blobs(np.random.default_rng(4), 30, 6, sep=1.0)
    features = unflatten_features(torch.from_numpy(test_x).float(), LAYOUT)
    ccvr_acc = float((heads[0](features).argmax(1).numpy() == test_y).mean())
    fedavg_acc = float((_fedavg_linear(x, y, own)(torch.from_numpy(test_x).float()).argmax(1).numpy() == test_y).mean())
    assert ccvr_acc > fedavg_acc + 0.1, (ccvr_acc, fedavg_acc)
