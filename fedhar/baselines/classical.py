"""Classical baseline: hand-crafted statistics of each window, fed to a scikit-learn classifier.

No deep learning and no unlabeled data: it trains on the same labeled rows as every other
method and keeps the deep methods honest (a few labels often suffice for a random forest
on summary statistics). Features, per sample:

- IMU ``(T, C)``, for every channel: mean, standard deviation, minimum, maximum, the 10th,
  25th, 50th, 75th and 90th percentiles, and the mean absolute first difference (jerk);
  for every consecutive triad of channels (x, y, z of one sensor), the same statistics of
  the vector magnitude, which do not change when the device is worn in another
  orientation.
- Skeleton ``(T, J, 3)``: joint coordinates relative to the first joint (the hip centre in
  Kinect's order), then the same per-channel statistics over time for every joint
  coordinate, and those of each joint's speed.

The classifier is a random forest (default) or a standardised logistic regression, seeded.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fedhar.baselines.config import ClassicalConfig
from fedhar.data.dataset import HARDataset

__all__ = ["ClassicalConfig", "ClassicalModel", "window_features"]

_PERCENTILES = (10, 25, 50, 75, 90)


def _channel_stats(x: np.ndarray) -> np.ndarray:
    """Statistics over time of every channel: ``(N, T, C)`` -> ``(N, C * 10)``."""
    stats = [x.mean(axis=1), x.std(axis=1), x.min(axis=1), x.max(axis=1)]
    stats += list(np.percentile(x, _PERCENTILES, axis=1))
    stats.append(np.abs(np.diff(x, axis=1)).mean(axis=1) if x.shape[1] > 1 else np.zeros_like(x[:, 0]))
    return np.concatenate(stats, axis=1)


def window_features(x: np.ndarray) -> np.ndarray:
    """Feature vector of each sample of one modality: ``(N, T, C)`` or ``(N, T, J, 3)`` -> ``(N, F)``.

    Raises
    ------
    ValueError
        If ``x`` is neither rank 3 (IMU) nor rank 4 (skeleton).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 3:
        parts = [_channel_stats(x)]
        triads = x.shape[2] // 3
        if triads:
            norms = np.linalg.norm(x[:, :, : 3 * triads].reshape(len(x), x.shape[1], triads, 3), axis=3)
            parts.append(_channel_stats(norms))
        return np.concatenate(parts, axis=1)
    if x.ndim == 4:
        relative = x - x[:, :, :1, :]
        flat = relative.reshape(len(x), x.shape[1], -1)
        speed = np.linalg.norm(np.diff(x, axis=1), axis=3) if x.shape[1] > 1 else np.zeros(x.shape[:3])
        return np.concatenate([_channel_stats(flat), _channel_stats(speed)], axis=1)
    raise ValueError(f"expected IMU (N, T, C) or skeleton (N, T, J, 3) arrays, got shape {x.shape}")


class ClassicalModel:
    """Statistical features of every modality, concatenated, and a scikit-learn classifier.

    Parameters
    ----------
    modalities
        The modalities to use, in order.
    cfg
        The classifier.
    seed
        Seeds the classifier (the features are deterministic).
    """

    def __init__(self, modalities: tuple[str, ...], cfg: ClassicalConfig, seed: int) -> None:
        if not modalities:
            raise ValueError("the classical baseline needs at least one modality")
        self.modalities = modalities
        self.cfg = cfg
        self.classifier: ClassifierMixin
        if cfg.classifier == "random_forest":
            self.classifier = RandomForestClassifier(n_estimators=cfg.n_estimators, random_state=seed, n_jobs=1)
        else:
            self.classifier = make_pipeline(StandardScaler(), LogisticRegression(C=cfg.c, max_iter=cfg.max_iter,
                                                                                 random_state=seed))

    def features(self, data: HARDataset) -> np.ndarray:
        """``(N, F)`` features of ``data`` (all of :attr:`modalities`)."""
        missing = [m for m in self.modalities if m not in data.data]
        if missing:
            raise KeyError(f"modalities {missing} not in the dataset view {data.modalities}")
        return np.concatenate([window_features(data.data[m]) for m in self.modalities], axis=1)

    def fit(self, data: HARDataset) -> ClassicalModel:
        """Fit on labeled ``data``."""
        self.classifier.fit(self.features(data), np.asarray(data.labels))
        return self

    def predict(self, data: HARDataset) -> np.ndarray:
        """Predicted class of each row, ``(N,)`` int64."""
        return np.asarray(self.classifier.predict(self.features(data)), dtype=np.int64)

    @property
    def num_features(self) -> int:
        """Length of the fitted feature vector."""
        return int(getattr(self.classifier, "n_features_in_", 0))
