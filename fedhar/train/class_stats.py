"""Stage 2 under label skew: the classifier fitted from class-conditional feature statistics.

At 5 % labels every UTD-MHAD class sits on one or two clients, so averaging classifiers
that each saw a few classes (FedAvg) loses most of what centralised fine-tuning gets from
the same encoders. With the encoders frozen (the ``fedhar`` recipe), everything stage 2
needs from a client is the distribution of its labeled windows' features. Each client
encodes its labeled rows with the global encoders (the clean rows plus ``passes``
augmented copies) and sends additive sufficient statistics: per-class row counts, per-class
feature sums and the scatter matrix ``sum x x^T`` over all its rows. Sums over clients are
exactly the statistics of the pooled rows, so the server sees the class means and the
pooled within-class covariance of every labeled window without seeing any window. It then
fits the head in one of two ways:

- ``ccvr``: after CCVR (Luo et al., NeurIPS 2021, "No fear of heterogeneity"), sample
  virtual features from a Gaussian per class (class mean, shrunk pooled covariance) and
  train the ordinary fusion classifier on them; the result is the same model as every
  other stage-2 mode.
- ``lda``: linear discriminant analysis in closed form (``W = Sigma^-1 mu_c``), a linear
  head over the concatenated features (:class:`LinearFusionHead`).

What the server learns (class means, a second-moment matrix) is more than a weight update
reveals; docs/federated.md says so. Flattened features of a modality a client lacks are
zeros, as in the concat fusion classifier.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from fedhar.config_mapping import build
from fedhar.data.dataset import HARDataset
from fedhar.errors import ConfigError
from fedhar.models.fusion_classifier import FusionClassifierModel
from fedhar.train.augment import AugmentConfig, build_augmenter
from fedhar.train.batches import iterate_batches, to_tensors
from fedhar.train.config import OptimConfig
from fedhar.train.evaluate import eval_mode
from fedhar.train.loop import build_optimizer

__all__ = [
    "STATS_HEADS",
    "ClassFeatureStats",
    "ClassStatsConfig",
    "FeatureLayout",
    "LinearFusionHead",
    "check_class_stats",
    "class_feature_stats",
    "feature_layout",
    "fit_lda_head",
    "fit_personal_lda_head",
    "fit_stats_head",
    "fit_virtual_classifier",
    "flatten_features",
    "unflatten_features",
]

logger = logging.getLogger(__name__)

_ENCODE_BATCH = 256

VIRTUAL_OPTIM = OptimConfig(name="adam", lr=1e-3, momentum=0.0, weight_decay=0.0, milestones=(), gamma=1.0)
"""Adam at a constant lr 1e-3 (stage 2's optimizer without its epoch milestones)."""

FeatureLayout = tuple[tuple[str, int, int], ...]
"""Modality, steps ``S`` and width ``F`` of each slot of the flattened feature vector, in order."""


@dataclass(frozen=True)
class ClassStatsConfig:
    """How clients summarise their labeled features and how the server fits the head from them.

    Parameters
    ----------
    passes
        Augmented copies of each labeled row a client encodes, besides the clean row (with
        the stage-2 ``augment`` settings); they give the covariance more rows than labels.
    shrinkage
        Weight of ``trace(Sigma) / D * I`` in the shrunk pooled covariance (0: none).
    max_dim
        Largest flattened feature size accepted: the scatter matrix a client sends once is
        ``D x D`` float64 (the compact model's 1408 for UTD-MHAD: 16 MB).
    personalise
        After the ``lda`` head, each client adapts it to its own rows (class means moved
        towards its own, :func:`fit_personal_lda_head`) and reports the accuracy on its own
        held-out rows; the server tests each personal head on the held-out subjects.
    personal_strength
        Weight of the global class mean in a personal mean, in labeled rows.
    virtual_per_class
        Virtual features per class per epoch (``ccvr``).
    epochs
        Epochs over the virtual features, fresh samples each epoch (``ccvr``).
    batch_size
        Batch size of the virtual training (``ccvr``).
    optim
        Optimizer of the virtual training (``ccvr``).
    """

    passes: int = 10
    shrinkage: float = 0.3
    max_dim: int = 4096
    personalise: bool = False
    personal_strength: float = 1.0
    virtual_per_class: int = 64
    epochs: int = 30
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: VIRTUAL_OPTIM)

    def __post_init__(self) -> None:
        if self.passes < 0:
            raise ConfigError(f"passes must be >= 0, got {self.passes}", "class_stats.passes")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ConfigError(f"shrinkage must be in [0, 1], got {self.shrinkage}", "class_stats.shrinkage")
        if self.personal_strength <= 0:
            raise ConfigError(f"personal_strength must be > 0, got {self.personal_strength}",
                              "class_stats.personal_strength")
        for name in ("max_dim", "virtual_per_class", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", f"class_stats.{name}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> ClassStatsConfig:
        """Build from a plain mapping (the ``federation.class_stats`` group); unknown keys raise."""
        kw = dict(cfg)
        if isinstance(kw.get("optim"), Mapping):  # given keys change VIRTUAL_OPTIM, the rest keep it
            kw["optim"] = {**asdict(VIRTUAL_OPTIM), **kw["optim"]}
        return build(cls, kw, "federation.class_stats")


@dataclass(frozen=True)
class ClassFeatureStats:
    """Additive per-class statistics of flattened features: what one client sends.

    Parameters
    ----------
    counts
        ``(K,)`` rows per class (augmented copies counted).
    sums
        ``(K, D)`` feature sum per class.
    scatter
        ``(D, D)`` sum of ``x x^T`` over all rows.
    """

    counts: np.ndarray
    sums: np.ndarray
    scatter: np.ndarray

    def __post_init__(self) -> None:
        k, d = self.sums.shape if self.sums.ndim == 2 else (-1, -1)
        if self.counts.shape != (k,) or self.scatter.shape != (d, d) or k < 1 or d < 1:
            raise ValueError(f"need counts (K,), sums (K, D), scatter (D, D); got {self.counts.shape}, "
                             f"{self.sums.shape}, {self.scatter.shape}")
        if not all(np.isfinite(a).all() for a in (self.counts, self.sums, self.scatter)):
            raise ValueError("statistics must be finite")
        if (self.counts < 0).any() or np.any(self.counts != np.round(self.counts)):
            raise ValueError(f"counts must be non-negative integers, got {self.counts.tolist()}")
        if (np.diag(self.scatter) < 0).any() or not np.allclose(self.scatter, self.scatter.T, rtol=1e-5, atol=1e-6):
            raise ValueError("scatter must be symmetric with a non-negative diagonal")

    @property
    def num_classes(self) -> int:
        """``K``."""
        return int(self.counts.shape[0])

    @property
    def dim(self) -> int:
        """``D``."""
        return int(self.sums.shape[1])

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for a message (``counts``, ``sums``, ``scatter``)."""
        return {"counts": self.counts, "sums": self.sums, "scatter": self.scatter}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ClassFeatureStats:
        """Inverse of :meth:`to_arrays`.

        Raises
        ------
        ValueError
            If an array is missing, extra, malformed or not finite.
        """
        if set(arrays) != {"counts", "sums", "scatter"}:
            raise ValueError(f"expected arrays counts, sums, scatter; got {sorted(arrays)}")
        return cls(*(np.asarray(arrays[k], dtype=np.float64) for k in ("counts", "sums", "scatter")))

    @staticmethod
    def merge(parts: Sequence[ClassFeatureStats]) -> ClassFeatureStats:
        """The statistics of the union of the parts' rows (sums of sums).

        Raises
        ------
        ValueError
            If there is no part or their shapes differ.
        """
        if not parts:
            raise ValueError("nothing to merge")
        shapes = {(p.num_classes, p.dim) for p in parts}
        if len(shapes) != 1:
            raise ValueError(f"statistics of different shapes cannot be merged: {sorted(shapes)}")
        return ClassFeatureStats(sum(p.counts for p in parts), sum(p.sums for p in parts),  # type: ignore[arg-type]
                                 sum(p.scatter for p in parts))  # type: ignore[arg-type]

    def means(self) -> np.ndarray:
        """``(K, D)`` class means (zeros for a class without rows)."""
        return self.sums / np.maximum(self.counts, 1.0)[:, None]

    def pooled_covariance(self, shrinkage: float) -> np.ndarray:
        """Within-class covariance pooled over classes, shrunk towards ``trace / D * I``.

        ``(scatter - sum_c n_c mu_c mu_c^T) / (N - K_present)``.

        Raises
        ------
        ValueError
            If there are not more rows than classes present.
        """
        present = self.counts > 0
        dof = float(self.counts.sum() - present.sum())
        if dof <= 0:
            raise ValueError(f"need more rows than classes to estimate a covariance, got {int(self.counts.sum())} "
                             f"rows in {int(present.sum())} classes")
        mu = self.means()
        within = self.scatter - (mu.T * self.counts) @ mu
        cov = (within + within.T) / (2.0 * dof)
        target = np.trace(cov) / self.dim
        return (1.0 - shrinkage) * cov + shrinkage * target * np.eye(self.dim)


def feature_layout(shapes: Mapping[str, tuple[int, int]]) -> FeatureLayout:
    """The flattened layout of the fusion classifier's inputs (modality, S, F), in its order."""
    return tuple((m, int(s), int(f)) for m, (s, f) in shapes.items())


def flatten_features(features: Mapping[str, torch.Tensor], layout: FeatureLayout) -> torch.Tensor:
    """``(B, D)``: each modality's ``(B, S, F)`` flattened, concatenated in ``layout`` order (zeros if absent)."""
    ref = next(iter(features.values()))
    parts = [features[m].reshape(ref.shape[0], -1) if m in features else ref.new_zeros(ref.shape[0], s * f)
             for m, s, f in layout]
    return torch.cat(parts, dim=1)


def unflatten_features(flat: torch.Tensor, layout: FeatureLayout) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_features` (every modality of ``layout``)."""
    out, start = {}, 0
    for m, s, f in layout:
        out[m] = flat[:, start:start + s * f].reshape(flat.shape[0], s, f)
        start += s * f
    return out


@torch.no_grad()
def class_feature_stats(
    model: nn.Module,
    data: HARDataset,
    layout: FeatureLayout,
    num_classes: int,
    passes: int,
    augment: AugmentConfig,
    seed: int,
    row_clip: float | None = None,
) -> ClassFeatureStats:
    """Statistics of ``model.encode`` features of ``data``'s rows: the clean rows and ``passes`` augmented copies.

    The encoders run in eval mode (BatchNorm statistics from stage 1, no dropout). Without
    augmentation (every ``augment`` setting 0) only the clean pass is taken. No rows give
    zero statistics (a client without labels adds nothing). ``row_clip`` scales each feature
    row down to that L2 norm at most (secure aggregation's fixed-point range needs a bound).
    """
    augmenter = build_augmenter(augment)
    total_passes = 1 + (passes if augmenter is not None else 0)
    dim = sum(s * f for _, s, f in layout)
    counts = np.zeros(num_classes)
    sums = np.zeros((num_classes, dim))
    scatter = np.zeros((dim, dim))
    if len(data) == 0:
        return ClassFeatureStats(counts, sums, scatter)
    tensors = to_tensors(data)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with eval_mode(model):
            for p in range(total_passes):
                for inputs, labels in iterate_batches(tensors, _ENCODE_BATCH, shuffle=False):
                    batch = augmenter(inputs) if p > 0 and augmenter is not None else inputs
                    x = flatten_features(model.encode(batch), layout).double().numpy()  # type: ignore[operator]
                    if row_clip is not None:
                        norms = np.linalg.norm(x, axis=1, keepdims=True)
                        x = x * np.minimum(1.0, row_clip / np.maximum(norms, 1e-12))
                    y = labels.numpy()
                    np.add.at(counts, y, 1.0)
                    np.add.at(sums, y, x)
                    scatter += x.T @ x
    finally:
        torch.random.set_rng_state(generator_state)
    return ClassFeatureStats(counts, sums, scatter)


def _sampler(stats: ClassFeatureStats, shrinkage: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class means, the covariance's square root ``L`` (``Sigma = L L^T``) and the classes present."""
    cov = stats.pooled_covariance(shrinkage)
    values, vectors = np.linalg.eigh(cov)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))[None, :]
    return stats.means(), root, np.flatnonzero(stats.counts > 0)


def fit_virtual_classifier(
    classifier: nn.Module,
    stats: ClassFeatureStats,
    layout: FeatureLayout,
    cfg: ClassStatsConfig,
    seed: int,
) -> list[float]:
    """Train ``classifier`` (features mapping -> logits) on virtual features of ``stats``; returns the epoch losses.

    Each epoch draws ``virtual_per_class`` features of every class present from
    ``N(mu_c, Sigma)`` (the shrunk pooled covariance), shuffles them and takes one pass.
    """
    means, root, classes = _sampler(stats, cfg.shrinkage)
    gen = torch.Generator().manual_seed(seed)
    mu_t = torch.from_numpy(means).float()
    root_t = torch.from_numpy(root).float()
    optimizer = build_optimizer(classifier.parameters(), cfg.optim)
    loss_fn = nn.CrossEntropyLoss()
    labels = torch.from_numpy(np.repeat(classes, cfg.virtual_per_class)).long()
    losses: list[float] = []
    classifier.train()
    for _ in range(cfg.epochs):
        noise = torch.randn(len(labels), stats.dim, generator=gen)
        features = mu_t[labels] + noise @ root_t.T
        order = torch.randperm(len(labels), generator=gen)
        total, batches = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm cannot train on one sample
                continue
            optimizer.zero_grad()
            loss = loss_fn(classifier(unflatten_features(features[idx], layout)), labels[idx])
            loss.backward()
            optimizer.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
    classifier.eval()
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"training on virtual features diverged (losses {losses[-3:]})")
    return losses


class LinearFusionHead(nn.Module):
    """A linear head over the flattened, concatenated modality features (the ``lda`` stage-2 head).

    Parameters
    ----------
    layout
        The feature layout (see :func:`feature_layout`).
    num_classes
        ``K``.
    """

    def __init__(self, layout: FeatureLayout, num_classes: int) -> None:
        super().__init__()
        self.layout = layout
        self.linear = nn.Linear(sum(s * f for _, s, f in layout), num_classes)

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, K)``."""
        return self.linear(flatten_features(features, self.layout))


def fit_lda_head(stats: ClassFeatureStats, layout: FeatureLayout, shrinkage: float) -> LinearFusionHead:
    """Linear discriminant analysis with the shrunk pooled covariance and the class frequencies as priors.

    ``w_c = Sigma^-1 mu_c``, ``b_c = -mu_c^T Sigma^-1 mu_c / 2 + log pi_c``; a class without
    rows gets bias ``-inf``-like (never predicted).
    """
    return _lda_head(stats.pooled_covariance(shrinkage), stats.means(), stats.counts, layout)


def fit_personal_lda_head(
    global_stats: ClassFeatureStats, own: ClassFeatureStats, layout: FeatureLayout, shrinkage: float, strength: float
) -> LinearFusionHead:
    """The global LDA head with each class mean moved towards the client's own rows of that class.

    ``mu_c = (own_sum_c + strength * global_mu_c) / (own_n_c + strength)``: a class the
    client has no rows of keeps the global mean; covariance and class priors stay global.
    ``strength`` is in rows (as counted in ``own``).

    Raises
    ------
    ValueError
        If the two statistics differ in shape or ``strength`` is not > 0.
    """
    if (own.num_classes, own.dim) != (global_stats.num_classes, global_stats.dim):
        raise ValueError(f"own statistics {own.num_classes} x {own.dim} do not match the global "
                         f"{global_stats.num_classes} x {global_stats.dim}")
    if strength <= 0:
        raise ValueError(f"strength must be > 0, got {strength}")
    means = (own.sums + strength * global_stats.means()) / (own.counts + strength)[:, None]
    return _lda_head(global_stats.pooled_covariance(shrinkage), means, global_stats.counts, layout)


def _lda_head(cov: np.ndarray, means: np.ndarray, counts: np.ndarray, layout: FeatureLayout) -> LinearFusionHead:
    weights = np.linalg.solve(cov, means.T).T  # (K, D)
    priors = counts / counts.sum()
    bias = -0.5 * np.einsum("kd,kd->k", weights, means) + np.log(np.maximum(priors, 1e-12))
    bias[counts == 0] = -1e9
    head = LinearFusionHead(layout, len(counts))
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(weights).float())
        head.linear.bias.copy_(torch.from_numpy(bias).float())
    return head


STATS_HEADS = ("lda", "ccvr")
"""Stage-2 heads fitted from class statistics (``federation.stage2_mode``)."""


def fit_stats_head(
    model: FusionClassifierModel,
    stats: ClassFeatureStats,
    layout: FeatureLayout,
    head: str,
    cfg: ClassStatsConfig,
    seed: int,
) -> FusionClassifierModel:
    """``model``'s encoders with a head fitted from ``stats``: ``lda`` (a new linear head) or ``ccvr`` (its classifier, trained).

    Raises
    ------
    ValueError
        If ``head`` is unknown or the statistics cannot give a covariance.
    """
    if head == "lda":
        return FusionClassifierModel(model.encoders, fit_lda_head(stats, layout, cfg.shrinkage))
    if head == "ccvr":
        torch.manual_seed(seed)
        fit_virtual_classifier(model.classifier, stats, layout, cfg, seed)
        return model
    raise ValueError(f"head must be one of {STATS_HEADS}, got {head!r}")


def check_class_stats(
    stats: ClassFeatureStats, expected_counts: np.ndarray, passes: int, dim: int
) -> str | None:
    """Why a client's statistics are not acceptable, or ``None``.

    The server knows each training subject's labeled rows per class (the label split is
    drawn from the census of the normalisation round), so the counts must be exactly
    ``(1 + passes) x`` those; the feature size must be the model's.
    """
    if stats.dim != dim or stats.num_classes != len(expected_counts):
        return f"statistics of {stats.num_classes} classes x {stats.dim} features, expected {len(expected_counts)} x {dim}"
    expected = (1 + passes) * np.asarray(expected_counts, dtype=np.float64)
    if not np.array_equal(stats.counts, expected):
        return f"class counts {stats.counts.astype(int).tolist()} differ from the expected {expected.astype(int).tolist()}"
    return None
