"""Quality of modality (QoM) from unlabeled data: Hopkins statistic and cluster-count match."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import calinski_harabasz_score, silhouette_score
from sklearn.neighbors import NearestNeighbors

from fedhar.config_mapping import build
from fedhar.train.device import on_device

logger = logging.getLogger(__name__)

Criterion = Literal["silhouette", "calinski_harabasz"]
Source = Literal["raw", "features"]
ClusterPenalty = Literal["absolute", "relative"]
_PENALTIES = ("absolute", "relative")
_CRITERIA = {"silhouette": silhouette_score, "calinski_harabasz": calinski_harabasz_score}


@dataclass(frozen=True)
class QualityConfig:
    """How QoM is computed (configs/quality/default.yaml). Cosmo fixes none of these.

    Parameters
    ----------
    source
        ``"raw"``: the (normalised) input windows; ``"features"``: the encoder outputs.
    max_samples
        At most this many samples (a seeded subsample, the same rows for every modality).
    hopkins_fraction
        Fraction of the samples used as Hopkins probes (``m`` uniform and ``m`` data points).
    standardize
        Z-score every input dimension before PCA/clustering.
    pca_dim
        Project to this many principal components when the input is wider (``None``:
        never). Speeds KMeans up and makes Hopkins meaningful: in hundreds of raw
        dimensions every real dataset looks clustered next to a uniform box.
    k_min
        Smallest number of clusters tried.
    k_max_factor
        Largest number tried is ``ceil(k_max_factor * K)`` (capped at ``N - 1``).
    criterion
        ``"silhouette"`` (mean silhouette, higher is better) or ``"calinski_harabasz"``.
    kmeans_n_init
        KMeans restarts per ``k``.
    cluster_penalty
        How the cluster-count mismatch enters ``q_j = H_j / c_j``. ``"absolute"``
        (Cosmo): ``c_j = max(|k*_j - K|, c_min)``, in ``[c_min, ~K]``: a lucky exact
        match multiplies ``q_j`` by up to ``K / c_min`` against a near miss, so with the
        noisy ``k*`` of ~100 samples per client the weights swing between ~0.05 and
        ~0.95. ``"relative"`` (fedhar): ``c_j = 1 + |k*_j - K| / K``, in ``[1, ~2]``:
        the mismatch at most halves ``q_j`` and the Hopkins statistic keeps its say.
    c_min
        Guard of the absolute penalty for ``c_j = |k*_j - K| = 0``: ``c_j := max(c_j,
        c_min)``, so a perfect cluster-count match counts ``1 / c_min`` times a miss by
        one. Unused by the relative penalty.
    seed
        Seed of the subsample, the Hopkins probes, PCA and KMeans.
    """

    source: Source = "raw"
    max_samples: int = 1000
    hopkins_fraction: float = 0.1
    standardize: bool = True
    pca_dim: int | None = 16
    k_min: int = 2
    k_max_factor: float = 1.5
    criterion: Criterion = "silhouette"
    kmeans_n_init: int = 3
    cluster_penalty: ClusterPenalty = "absolute"
    c_min: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in ("raw", "features"):
            raise ValueError(f"quality.source must be 'raw' or 'features', got {self.source!r}")
        if self.criterion not in _CRITERIA:
            raise ValueError(f"quality.criterion must be one of {sorted(_CRITERIA)}, got {self.criterion!r}")
        if self.max_samples < 3:
            raise ValueError(f"quality.max_samples must be >= 3, got {self.max_samples}")
        if not 0.0 < self.hopkins_fraction < 1.0:
            raise ValueError(f"quality.hopkins_fraction must be in (0, 1), got {self.hopkins_fraction}")
        if self.pca_dim is not None and self.pca_dim < 1:
            raise ValueError(f"quality.pca_dim must be >= 1 or null, got {self.pca_dim}")
        if self.k_min < 2 or self.k_max_factor <= 0 or self.kmeans_n_init < 1:
            raise ValueError(
                f"need k_min >= 2, k_max_factor > 0, kmeans_n_init >= 1; got {self.k_min}, "
                f"{self.k_max_factor}, {self.kmeans_n_init}"
            )
        if self.c_min <= 0:
            raise ValueError(f"quality.c_min must be > 0, got {self.c_min}")
        if self.cluster_penalty not in _PENALTIES:
            raise ValueError(f"quality.cluster_penalty must be one of {_PENALTIES}, got {self.cluster_penalty!r}")

    @property
    def max_score(self) -> float:
        """The largest possible ``q_j`` (``H_j <= 1``): ``1 / c_min`` (absolute) or 1 (relative)."""
        return 1.0 / self.c_min if self.cluster_penalty == "absolute" else 1.0

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> QualityConfig:
        """Build from a plain mapping (a YAML group); unknown keys raise :class:`ConfigError`."""
        return build(cls, mapping, "quality")


@dataclass(frozen=True)
class QoMResult:
    """Per-modality Hopkins statistic ``H_j``, best cluster count ``k*_j``, ``q_j`` and weights."""

    hopkins: Mapping[str, float]
    clusters: Mapping[str, int]
    scores: Mapping[str, float]
    weights: Mapping[str, float]

    def bounded_scores(self, cfg: QualityConfig) -> dict[str, float]:
        """``q_j / cfg.max_score`` in [0, 1]: comparable across clients, unlike the per-client ``weights``."""
        return {m: float(min(max(q / cfg.max_score, 0.0), 1.0)) for m, q in self.scores.items()}


def compute_hopkins(
    x: np.ndarray, sample_size: int | None = None, fraction: float = 0.1, seed: int = 0
) -> float:
    """Hopkins statistic of a point cloud (Hopkins & Skellam 1954; Cosmo, Sec. 5.1).

    ``H = sum_i u_i / (sum_i u_i + sum_i w_i)`` with ``u_i`` the distance from a point
    drawn uniformly in the data's bounding box to its nearest data point and ``w_i`` the
    distance from a sampled data point to its nearest other data point: about 0.5 for
    uniform data, near 1 for tight clusters.

    Parameters
    ----------
    x
        ``(N, D)`` data.
    sample_size
        Number ``m`` of probes of each kind; default ``round(fraction * N)``, at least 1.
    fraction
        Probe fraction when ``sample_size`` is None.
    seed
        Seed of the probes.

    Returns
    -------
    float
        ``H`` in ``[0, 1]``; 0.5 (with a warning) for data without spread.

    Raises
    ------
    ValueError
        If ``x`` is not 2-D with ``N >= 2`` or ``sample_size`` is not in ``[1, N - 1]``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"x must be (N, D) with N >= 2, got shape {x.shape}")
    n = len(x)
    m = max(1, round(fraction * n)) if sample_size is None else sample_size
    if not 1 <= m < n:
        raise ValueError(f"sample_size must be in [1, {n - 1}] for {n} points, got {m}")
    rng = np.random.default_rng(seed)
    nn_index = NearestNeighbors(n_neighbors=2).fit(x)
    lo, hi = x.min(axis=0), x.max(axis=0)
    uniform = rng.uniform(lo, hi, size=(m, x.shape[1]))  # (m, D)
    u = nn_index.kneighbors(uniform, n_neighbors=1)[0][:, 0]  # (m,)
    probes = rng.choice(n, size=m, replace=False)
    w = nn_index.kneighbors(x[probes], n_neighbors=2)[0][:, 1]  # (m,), skip the point itself
    total = u.sum() + w.sum()
    if total <= 0:
        logger.warning("Hopkins statistic undefined for data without spread (%d points); using 0.5", n)
        return 0.5
    return float(u.sum() / total)


def select_cluster_count(
    x: np.ndarray,
    k_range: Iterable[int],
    criterion: Criterion = "silhouette",
    seed: int = 0,
    n_init: int = 3,
) -> int:
    """The number of KMeans clusters that scores best on ``criterion``.

    ``"silhouette"``: mean silhouette coefficient ``(b - a) / max(a, b)`` (Rousseeuw
    1987), scale-free, highest wins. ``"calinski_harabasz"``: between- over
    within-cluster dispersion (Calinski & Harabasz 1974), faster, highest wins. Ties go
    to the smaller ``k``.

    Parameters
    ----------
    x
        ``(N, D)`` data.
    k_range
        Candidate counts; those outside ``[2, N - 1]`` are skipped.
    criterion
        ``"silhouette"`` or ``"calinski_harabasz"``.
    seed
        KMeans seed.
    n_init
        KMeans restarts per ``k``.

    Raises
    ------
    ValueError
        For an unknown criterion or no usable ``k``.
    """
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(_CRITERIA)}, got {criterion!r}")
    x = np.asarray(x, dtype=np.float64)
    candidates = sorted({int(k) for k in k_range if 2 <= k <= len(x) - 1})
    if not candidates:
        raise ValueError(f"no cluster count in k_range usable for {len(x)} points (need 2 <= k <= N - 1)")
    score_fn = _CRITERIA[criterion]
    best_k, best = candidates[0], -math.inf
    for k in candidates:
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(x)
        if len(np.unique(labels)) < 2:
            continue
        score = float(score_fn(x, labels))
        if score > best:
            best_k, best = k, score
    return best_k


def prepare_quality_inputs(x: np.ndarray, cfg: QualityConfig) -> np.ndarray:
    """Flatten ``(N, ...)`` to ``(N, D)``, then optionally z-score and PCA-project (see QualityConfig)."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if cfg.standardize:
        std = flat.std(axis=0)
        flat = (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if not np.ptp(flat, axis=0).any():  # every row identical: nothing to project
        return flat
    if cfg.pca_dim is not None and flat.shape[1] > cfg.pca_dim and len(flat) > cfg.pca_dim:
        flat = PCA(n_components=cfg.pca_dim, svd_solver="randomized", random_state=cfg.seed).fit_transform(flat)
    return flat


def compute_qom(
    features: Mapping[str, np.ndarray], num_classes: int, cfg: QualityConfig | None = None
) -> QoMResult:
    """Quality of each modality (Cosmo, Sec. 5.1), normalised over the modalities.

    ``q_j = H_j / c_j`` with ``H_j`` the Hopkins statistic, ``k*_j`` the best KMeans
    cluster count of modality ``j`` (searched in ``[k_min, ceil(k_max_factor * K)]``)
    and ``c_j`` = :func:`cluster_penalty` (Cosmo's ``max(|k*_j - K|, c_min)`` or the
    relative ``1 + |k*_j - K| / K``), then ``beta_QoM_j = q_j / sum_i q_i``. A
    modality whose samples are all identical (a dead sensor) gets ``H = 0.5`` and
    ``k* = 1``: a low but non-zero weight, with a warning.

    Parameters
    ----------
    features
        Modality -> ``(N, ...)`` samples (raw windows or encoder features), same ``N``.
    num_classes
        Number of classes ``K``.
    cfg
        Settings (subsample size, PCA, criterion, guard).

    Returns
    -------
    QoMResult
        ``hopkins``, ``clusters``, ``scores`` (``q_j``) and ``weights`` (sum 1).

    Raises
    ------
    ValueError
        If ``features`` is empty, the modalities differ in ``N``, ``N < 3`` or
        ``num_classes < 2``.
    """
    cfg = cfg or QualityConfig()
    if not features:
        raise ValueError("features is empty; give modality -> (N, ...) array")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    sizes = {m: len(x) for m, x in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"all modalities need the same number of samples, got {sizes}")
    n = next(iter(sizes.values()))
    if n < 3:
        raise ValueError(f"QoM needs at least 3 samples, got {n}")
    rows = np.random.default_rng(cfg.seed).choice(n, size=cfg.max_samples, replace=False) if n > cfg.max_samples else None
    k_range = range(cfg.k_min, math.ceil(cfg.k_max_factor * num_classes) + 1)
    hopkins, clusters, scores = {}, {}, {}
    for m, x in features.items():
        data = prepare_quality_inputs(x if rows is None else np.asarray(x)[rows], cfg)
        if not np.ptp(data, axis=0).any():
            logger.warning("modality %r has no spread (a dead or zero-filled sensor): H = 0.5, one cluster", m)
            hopkins[m], clusters[m] = 0.5, 1
        else:
            hopkins[m] = compute_hopkins(data, fraction=cfg.hopkins_fraction, seed=cfg.seed)
            clusters[m] = select_cluster_count(data, k_range, cfg.criterion, cfg.seed, cfg.kmeans_n_init)
        scores[m] = hopkins[m] / cluster_penalty(clusters[m], num_classes, cfg)
    total = sum(scores.values())
    weights = {m: q / total for m, q in scores.items()}
    logger.debug("QoM: hopkins %s, clusters %s (K=%d), weights %s", hopkins, clusters, num_classes, weights)
    return QoMResult(hopkins=hopkins, clusters=clusters, scores=scores, weights=weights)


def cluster_penalty(k_star: int, num_classes: int, cfg: QualityConfig) -> float:
    """The divisor ``c_j`` of ``q_j = H_j / c_j`` for a best cluster count ``k_star`` and ``K`` classes.

    ``"absolute"`` (Cosmo): ``max(|k* - K|, c_min)``; ``"relative"``: ``1 + |k* - K| / K``.
    """
    miss = abs(k_star - num_classes)
    if cfg.cluster_penalty == "absolute":
        return max(float(miss), cfg.c_min)
    return 1.0 + miss / num_classes


@torch.no_grad()
def encode_for_quality(
    model: torch.nn.Module,
    data: Mapping[str, np.ndarray],
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Encoder features ``(N, S, F)`` of ``data`` via ``model.encode(batch)``, in eval mode, as CPU arrays.

    ``device``: encode there (the model moves back afterwards); ``None``: where the model
    is. The model's train/eval mode is restored afterwards.
    """
    encode = getattr(model, "encode", None)
    if not callable(encode):
        raise TypeError(f"{type(model).__name__} has no encode(batch) method giving modality -> (B, S, F)")
    was_training = model.training
    model.eval()
    try:
        n = len(next(iter(data.values())))
        chunks: dict[str, list[np.ndarray]] = {m: [] for m in data}
        with on_device(model, device) as target:
            for start in range(0, n, batch_size):
                batch = {m: torch.as_tensor(np.asarray(x[start : start + batch_size]), dtype=torch.float32,
                                            device=target) for m, x in data.items()}
                for m, z in encode(batch).items():
                    chunks[m].append(z.cpu().numpy())
    finally:
        model.train(was_training)
    return {m: np.concatenate(c) for m, c in chunks.items()}


def compute_client_qom(
    data: Mapping[str, np.ndarray],
    num_classes: int,
    cfg: QualityConfig | None = None,
    model: torch.nn.Module | None = None,
    device: str | torch.device | None = None,
) -> QoMResult:
    """QoM of a client's unlabeled data from the representation ``cfg.source`` names.

    Parameters
    ----------
    data
        Modality -> ``(N, *shape)`` input windows.
    num_classes
        Number of classes ``K``.
    cfg
        Settings; ``source="features"`` needs ``model`` (anything with ``encode(batch)``).
    model
        The encoder model for ``source="features"``.
    device
        Encode on this device (``source="features"``; see
        :func:`fedhar.train.device.resolve_device`); ``None``: where the model is.

    Raises
    ------
    ValueError
        If ``source="features"`` and no model is given.
    """
    cfg = cfg or QualityConfig()
    if cfg.source == "features":
        if model is None:
            raise ValueError("quality.source='features' needs the encoder model; pass model= or use source='raw'")
        n = len(next(iter(data.values())))
        if n > cfg.max_samples:  # subsample before encoding: cheaper, same rows as compute_qom would pick
            rows = np.random.default_rng(cfg.seed).choice(n, size=cfg.max_samples, replace=False)
            data = {m: np.asarray(x)[rows] for m, x in data.items()}
        data = encode_for_quality(model, data, device=device)
    return compute_qom(data, num_classes, cfg)
