"""Framework-free helpers the ServerApp and the ClientApp share: model builders and the QoM prior.

Both sides must build byte-identical state-dict layouts, so they build models here. The
stage-1 model of a client holds only its modalities; the stage-2 model holds the
client's encoders and the global fusion classifier over every modality of the dataset
(a missing modality contributes zeros to its concat slot).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from torch import nn

from fedhar.data.dataset import DatasetInfo, HARDataset
from fedhar.errors import ConfigError
from fedhar.models import ContrastiveFusionModel, FusionClassifierModel, ModelConfig
from fedhar.models.attention import build_fusion_classifier
from fedhar.train.batches import to_tensors
from fedhar.train.class_stats import FeatureLayout, feature_layout
from fedhar.train.device import model_device
from fedhar.train.evaluate import eval_mode

__all__ = [
    "AttackInjection",
    "FailureInjection",
    "build_finetune_model",
    "build_pretrain_model",
    "feature_layout_of",
    "normalise_prior",
    "probe_accuracy",
    "state_digest",
]

_PROBE_BATCH = 256
_PROBE_MAX_ITER = 500


def build_pretrain_model(info: DatasetInfo, modalities: Sequence[str], cfg: ModelConfig) -> ContrastiveFusionModel:
    """Stage-1 encoders and heads of ``modalities`` (all of the dataset's for the global model)."""
    return ContrastiveFusionModel([info.modality(m) for m in modalities], cfg)


def build_finetune_model(
    info: DatasetInfo,
    modalities: Sequence[str],
    cfg: ModelConfig,
    qom_prior: Mapping[str, float] | None = None,
    seed: int | None = None,
) -> FusionClassifierModel:
    """Stage-2 model: encoders of ``modalities``, classifier over every modality of ``info``.

    Parameters
    ----------
    info
        Dataset metadata (modality specs, number of classes).
    modalities
        The modalities this holder encodes.
    cfg
        Model settings.
    qom_prior
        Modality -> weight over all of ``info``'s modalities (uniform if ``None``); missing
        modalities get a tiny weight so that the prior stays valid.
    seed
        Seeds the random initialisation (the server's initial classifier).
    """
    if seed is not None:
        torch.manual_seed(seed)
    full = build_pretrain_model(info, info.modality_names, cfg)
    prior = None if not qom_prior else normalise_prior({m: qom_prior.get(m, 0.0) for m in info.modality_names})
    classifier = build_fusion_classifier(full.feature_shapes, info.num_classes, cfg.classifier, prior)
    encoders = nn.ModuleDict({m: full.encoders[m] for m in modalities})
    return FusionClassifierModel(encoders, classifier)


def feature_layout_of(info: DatasetInfo, cfg: ModelConfig) -> FeatureLayout:
    """The fusion classifier's input layout (modality, S, F) over every modality of ``info``: same on every node."""
    return feature_layout(build_pretrain_model(info, info.modality_names, cfg).feature_shapes)


@dataclass(frozen=True)
class FailureInjection:
    """Simulated client failures (``federation.inject_failures``): tests and the robustness benchmark.

    Parameters
    ----------
    fraction
        Probability that a client fails a training round (0: never).
    kind
        ``"raise"`` (the client replies an error), ``"hang"`` (it sleeps ``hang_s``, past
        the round timeout, so its reply never counts) or ``"drop"`` (a device that goes away:
        from the first round it fails it hangs in every later round of the stage, so with
        fraction f a client is still there after r rounds with probability (1 - f)^r).
    hang_s
        Seconds a hanging client sleeps.
    seed
        Which (subject, round) pairs fail is a function of this seed alone.
    subjects
        Subjects whose client fails every training round besides the random draws (the
        secure-aggregation benchmark drops exactly one or two clients per round).
    """

    fraction: float = 0.0
    kind: Literal["raise", "hang", "drop"] = "raise"
    hang_s: float = 60.0
    seed: int = 0
    subjects: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in [0, 1], got {self.fraction}", "federation.inject_failures.fraction")
        object.__setattr__(self, "subjects", tuple(int(x) for x in self.subjects))
        if self.kind not in ("raise", "hang", "drop"):
            raise ConfigError(f"kind must be 'raise', 'hang' or 'drop', got {self.kind!r}",
                              "federation.inject_failures.kind")

    def fails(self, subject: int, stage: str, server_round: int) -> bool:
        """Whether this client fails this round (deterministic in seed, subject, stage, round).

        A dropped client (``kind="drop"``) fails this round if it failed any earlier round of the stage.
        """
        if subject in self.subjects:
            return True
        if self.fraction <= 0.0:
            return False
        rounds = range(1, server_round + 1) if self.kind == "drop" else (server_round,)
        return any(self._draw(subject, stage, r) < self.fraction for r in rounds)

    def _draw(self, subject: int, stage: str, server_round: int) -> float:
        return float(np.random.default_rng([self.seed, subject, server_round, zlib.crc32(stage.encode())]).random())


@dataclass(frozen=True)
class AttackInjection:
    """A simulated hostile client (``federation.inject_attack``): the robustness benchmark and tests.

    Parameters
    ----------
    subject
        The subject whose client attacks (``None``: nobody).
    kind
        ``"scale"`` (sends ``global + factor x update``) or ``"sign_flip"`` (sends
        ``global - factor x update``).
    factor
        Size of the manipulated update, in multiples of the honest one.
    """

    subject: int | None = None
    kind: Literal["scale", "sign_flip"] = "scale"
    factor: float = 1000.0

    def __post_init__(self) -> None:
        if self.kind not in ("scale", "sign_flip"):
            raise ConfigError(f"kind must be 'scale' or 'sign_flip', got {self.kind!r}", "federation.inject_attack.kind")

    def apply(self, subject: int, trained: Mapping[str, torch.Tensor],
              received: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The state ``subject`` sends: ``trained`` unless it is the attacker (floating tensors manipulated)."""
        if subject != self.subject:
            return dict(trained)
        sign = 1.0 if self.kind == "scale" else -1.0
        return {k: received[k] + sign * self.factor * (v - received[k]) if v.is_floating_point() else v
                for k, v in trained.items()}


def state_digest(state: Mapping[str, torch.Tensor | np.ndarray]) -> str:
    """SHA-256 over a state dict's keys, dtypes, shapes and bytes, in key order (bit-identical weights check)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        arr = np.ascontiguousarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
        digest.update(f"{name}:{arr.dtype}:{arr.shape};".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()


def normalise_prior(scores: Mapping[str, float], floor: float = 1e-3) -> dict[str, float]:
    """Scores -> weights summing to 1 (each at least ``floor`` before normalising; uniform if all 0)."""
    clipped = {m: max(float(s), floor) for m, s in scores.items()}
    total = sum(clipped.values())
    return {m: v / total for m, v in clipped.items()}


def probe_accuracy(model: ContrastiveFusionModel, data: HARDataset, seed: int, folds: int = 5) -> float:
    """Linear-probe accuracy of frozen stage-1 features on ``data`` (stratified k-fold CV).

    A cheap convergence signal for stage 1, computed on the held-out test subjects only:
    the concatenated L2-normalised projections of every modality, a logistic regression,
    ``min(folds, smallest class count)`` folds (at least 2). The model runs where it is.
    """
    tensors = to_tensors(data, model.modalities, device=model_device(model))
    with eval_mode(model), torch.no_grad():
        parts = [model({m: tensors.inputs[m][i:i + _PROBE_BATCH] for m in model.modalities})
                 for i in range(0, len(data), _PROBE_BATCH)]
    features = np.concatenate([torch.cat(list(p.values()), dim=1).cpu().numpy() for p in parts])
    labels = np.asarray(data.labels)
    smallest = int(np.bincount(labels)[np.unique(labels)].min())
    cv = StratifiedKFold(n_splits=max(2, min(folds, smallest)), shuffle=True, random_state=seed)
    probe = LogisticRegression(max_iter=_PROBE_MAX_ITER)
    return float(np.mean(cross_val_score(probe, features, labels, cv=cv)))
