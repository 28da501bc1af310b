"""Typed training settings: the fields of configs/stage1, stage2 and supervised method configs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Self, TypeVar

from fedhar.config_mapping import build
from fedhar.errors import ConfigError
from fedhar.train.augment import AugmentConfig

__all__ = ["FinetuneConfig", "OptimConfig", "PretrainConfig", "SupervisedConfig"]

OptimizerName = Literal["sgd", "adam"]
_OPTIMIZERS = ("sgd", "adam")
ENCODER_MODES = ("train", "bn_eval", "frozen")
STAGE2_HEADS = ("iterative", "lda")

T = TypeVar("T")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and step learning-rate schedule (Cosmo stage 1 values by default).

    Parameters
    ----------
    name
        ``"sgd"`` (with ``momentum``) or ``"adam"``.
    lr
        Initial learning rate.
    momentum
        SGD momentum (ignored by Adam).
    weight_decay
        L2 weight decay.
    milestones
        Epochs (0-based count of finished epochs) at which the lr is multiplied by ``gamma``.
    gamma
        Multiplicative lr decay at each milestone.
    """

    name: OptimizerName = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (100, 200, 300)
    gamma: float = 0.9

    def __post_init__(self) -> None:
        if self.name not in _OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {_OPTIMIZERS}, got {self.name!r}", "optim.name")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}", "optim.lr")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(
                f"need weight_decay >= 0 and momentum in [0, 1), got {self.weight_decay}, {self.momentum}", "optim"
            )
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}", "optim.gamma")
        object.__setattr__(self, "milestones", tuple(sorted(int(m) for m in self.milestones)))

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> OptimConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "optim")


ADAM_STAGE2 = OptimConfig(name="adam", lr=1e-3, momentum=0.0, weight_decay=0.0, milestones=(350, 400, 450), gamma=0.9)
"""Cosmo stage 2: Adam, lr 1e-3, x0.9 at epochs 350/400/450."""


@dataclass(frozen=True)
class _LoopConfig:
    """Fields shared by every loop."""

    epochs: int = 1
    batch_size: int = 32
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval_every: int = 1
    progress: bool = True
    log_every: int = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}", name)
        if self.augment.views != 1 and not isinstance(self, PretrainConfig):
            raise ConfigError(f"augment.views={self.augment.views} is for stage 1's contrastive objective; "
                              "a labeled loop augments each batch once", "augment.views")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> Self:
        """Build from a plain mapping (a resolved YAML group); unknown keys raise."""
        kw = dict(cfg)
        if isinstance(kw.get("optim"), Mapping):  # given keys change this loop's default optimiser, the rest keep it
            kw["optim"] = {**asdict(cls().optim), **kw["optim"]}  # type: ignore[attr-defined]
        if "augment" in kw and kw["augment"] is None:
            kw["augment"] = {}
        return build(cls, kw, cls.__name__)

    def with_epochs(self, epochs: int) -> Self:
        """A copy with another epoch budget."""
        return replace(self, epochs=epochs)  # type: ignore[type-var]


@dataclass(frozen=True)
class PretrainConfig(_LoopConfig):
    """Stage 1 (contrastive pretraining): batch 32, 300 epochs, SGD 0.01 (Cosmo).

    ``drop_last`` drops the last incomplete batch (a contrastive batch of one sample has
    no negatives). ``batching``: ``"shuffle"`` (Cosmo) draws batches from all windows;
    ``"subject"`` draws every batch from one subject's windows, as a federated client's
    local batches are (the negatives then come from the same person).
    """

    epochs: int = 300
    batch_size: int = 32
    drop_last: bool = True
    batching: Literal["shuffle", "subject"] = "shuffle"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batching not in ("shuffle", "subject"):
            raise ConfigError(f"batching must be 'shuffle' or 'subject', got {self.batching!r}", "stage1.batching")


@dataclass(frozen=True)
class FinetuneConfig(_LoopConfig):
    """Stage 2 (iterative fusion learning): batch 16, 500 epochs, Adam 1e-3 (Cosmo).

    Parameters
    ----------
    t_iter
        Epochs per phase: ``t_iter`` epochs train the encoders (classifier frozen), then
        ``t_iter`` epochs train the classifier (encoders frozen), and so on.
    first_phase
        ``"encoders"`` or ``"classifier"``: which part trains first.
    gradient_modulation
        Confidence-driven gradient modulation (after DCDP-HAR; off in Cosmo).
    modulation_alpha
        Strength of the modulation: a dominant modality's encoder gradients are scaled by
        ``1 - tanh(alpha * (ratio - 1))`` (see :mod:`fedhar.train.modulation`).
    encoder_mode
        How the encoder phases train the pretrained encoders. ``"train"`` (Cosmo): in
        train mode, so their BatchNorm running statistics are re-estimated on batches of
        the few labeled samples and dropout is on. ``"bn_eval"``: their weights are
        updated but BatchNorm statistics (from stage 1's large unlabeled pool) and dropout
        stay fixed (eval mode). ``"frozen"``: never updated; every epoch trains the
        classifier (a probe of the stage-1 features).
    head
        ``"iterative"`` (Cosmo): the fusion classifier trained as above. ``"lda"``: the
        encoders stay frozen and a linear head is fitted in closed form from the labeled
        rows' class statistics (:func:`fedhar.train.finetune.run_stage2`), as the default
        federated stage 2 does from the clients' statistics; the epoch and optimiser
        settings are then unused.
    lda_passes
        ``lda``: augmented copies of each labeled row besides the clean one (``augment``).
    lda_shrinkage
        ``lda``: shrinkage of the pooled covariance towards a scaled identity, in [0, 1].
    """

    epochs: int = 500
    batch_size: int = 16
    optim: OptimConfig = field(default_factory=lambda: ADAM_STAGE2)
    t_iter: int = 5
    first_phase: Literal["encoders", "classifier"] = "encoders"
    gradient_modulation: bool = False
    modulation_alpha: float = 1.0
    encoder_mode: Literal["train", "bn_eval", "frozen"] = "train"
    head: Literal["iterative", "lda"] = "iterative"
    lda_passes: int = 10
    lda_shrinkage: float = 0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head not in STAGE2_HEADS:
            raise ConfigError(f"head must be one of {STAGE2_HEADS}, got {self.head!r}", "stage2.head")
        if self.lda_passes < 0:
            raise ConfigError(f"lda_passes must be >= 0, got {self.lda_passes}", "stage2.lda_passes")
        if not 0.0 <= self.lda_shrinkage <= 1.0:
            raise ConfigError(f"lda_shrinkage must be in [0, 1], got {self.lda_shrinkage}", "stage2.lda_shrinkage")
        if self.encoder_mode not in ENCODER_MODES:
            raise ConfigError(f"encoder_mode must be one of {ENCODER_MODES}, got {self.encoder_mode!r}",
                              "stage2.encoder_mode")
        if self.t_iter < 1:
            raise ConfigError(f"t_iter must be >= 1, got {self.t_iter}", "stage2.t_iter")
        if self.first_phase not in ("encoders", "classifier"):
            raise ConfigError(f"first_phase must be 'encoders' or 'classifier', got {self.first_phase!r}",
                              "stage2.first_phase")
        if self.modulation_alpha < 0:
            raise ConfigError(f"modulation_alpha must be >= 0, got {self.modulation_alpha}", "stage2.modulation_alpha")


@dataclass(frozen=True)
class SupervisedConfig(_LoopConfig):
    """End-to-end supervised training of a baseline: same optimizer and budget as stage 2."""

    epochs: int = 500
    batch_size: int = 16
    optim: OptimConfig = field(default_factory=lambda: ADAM_STAGE2)
