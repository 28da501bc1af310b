"""Typed baseline settings: the fields of configs/baseline/*.yaml as frozen dataclasses."""

from __future__ import annotations

import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from fedhar.config_mapping import build
from fedhar.errors import ConfigError

__all__ = [
    "AttnSenseConfig",
    "CMCConfig",
    "CPCConfig",
    "ClassicalConfig",
    "DeepSenseConfig",
]

C = TypeVar("C")
Pooling = Literal["last", "mean"]
ClassifierName = Literal["random_forest", "logistic_regression"]
_CLASSIFIERS = ("random_forest", "logistic_regression")


@dataclass(frozen=True)
class DeepSenseConfig:
    """DeepSense (Yao et al., WWW 2017) in the time domain.

    Parameters
    ----------
    name
        Always ``"deepsense"``.
    num_intervals
        tau, the number of time intervals every modality is split into; the GRU runs over them.
    conv_channels
        Filters per convolutional layer (paper: 64).
    individual_kernel_size
        Kernel of the per-modality ("individual") 1-D convolutions within an interval.
    num_individual_layers
        Number of individual convolutional layers (paper: 3).
    merge_kernel_sizes
        Kernel widths of the merge convolutional layers (paper: 8, 6, 4); the first one
        spans all modalities. Their sum minus their count must be < ``conv_channels``.
    gru_hidden, gru_layers
        Stacked GRU (paper: 120 cells, 2 layers).
    dropout
        Dropout after each convolution and between GRU layers (paper: 0.2).
    """

    name: Literal["deepsense"] = "deepsense"
    num_intervals: int = 10
    conv_channels: int = 64
    individual_kernel_size: int = 3
    num_individual_layers: int = 3
    merge_kernel_sizes: tuple[int, ...] = (8, 6, 4)
    gru_hidden: int = 120
    gru_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_name(self, "deepsense")
        _check_positive(
            self, "num_intervals", "conv_channels", "individual_kernel_size", "num_individual_layers",
            "gru_hidden", "gru_layers",
        )
        _check_positive_tuple(self, "merge_kernel_sizes")
        shrink = sum(k - 1 for k in self.merge_kernel_sizes)
        if shrink >= self.conv_channels:
            raise ConfigError(
                f"merge_kernel_sizes {self.merge_kernel_sizes} shrink the width by {shrink} >= conv_channels "
                f"{self.conv_channels}; use smaller kernels or more channels",
                "baseline.merge_kernel_sizes",
            )
        _check_dropout(self)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> DeepSenseConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "baseline")


@dataclass(frozen=True)
class AttnSenseConfig:
    """AttnSense (Ma et al., IJCAI 2019) in the time domain.

    Parameters
    ----------
    name
        Always ``"attnsense"``.
    num_intervals
        Number of time intervals every modality is split into; the GRU runs over them.
    conv_channels
        Filters per per-modality convolutional layer (the feature size fused by attention).
    kernel_size
        Kernel of the per-modality 1-D convolutions within an interval.
    num_conv_layers
        Number of per-modality convolutional layers.
    attention_dim
        Hidden size of the sensor- and time-attention scoring MLPs.
    gru_hidden, gru_layers
        GRU over the fused interval features.
    dropout
        Dropout after each convolution, between GRU layers and before the output layer.
    """

    name: Literal["attnsense"] = "attnsense"
    num_intervals: int = 10
    conv_channels: int = 64
    kernel_size: int = 3
    num_conv_layers: int = 3
    attention_dim: int = 64
    gru_hidden: int = 120
    gru_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        _check_name(self, "attnsense")
        _check_positive(
            self, "num_intervals", "conv_channels", "kernel_size", "num_conv_layers", "attention_dim",
            "gru_hidden", "gru_layers",
        )
        _check_dropout(self)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> AttnSenseConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "baseline")


@dataclass(frozen=True)
class CMCConfig:
    """Contrastive multiview coding (Tian et al., 2019) as the stage-1 objective.

    Parameters
    ----------
    name
        Always ``"cmc"``.
    temperature
        Softmax temperature of the cross-view InfoNCE (Cosmo's CMC code: 0.07).
    """

    name: Literal["cmc"] = "cmc"
    temperature: float = 0.07

    def __post_init__(self) -> None:
        _check_name(self, "cmc")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}", "baseline.temperature")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> CMCConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "baseline")


@dataclass(frozen=True)
class CPCConfig:
    """Contrastive predictive coding for HAR (Haresamudram et al., IMWUT 2021).

    Parameters
    ----------
    name
        Always ``"cpc"``.
    conv_channels
        Channels of the 1-D convolutional encoder blocks (paper: 32, 64, 128); the last
        one is the size of z_t.
    kernel_size
        Odd kernel of the encoder convolutions (paper: 3, stride 1, reflect padding).
    dropout
        Dropout after each encoder block, between GRU layers and in the classifier (paper: 0.2).
    gru_hidden, gru_layers
        Autoregressive GRU giving c_t (paper: 256, 2).
    prediction_steps
        K, the number of future steps predicted from each c_t (paper: 28).
    classifier_hidden
        Hidden widths of the fine-tuning MLP on the context (paper: 256, 128).
    pooling
        Context fed to the classifier: ``"last"`` (c_T, as in the paper) or ``"mean"`` over t.
    """

    name: Literal["cpc"] = "cpc"
    conv_channels: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 3
    dropout: float = 0.2
    gru_hidden: int = 256
    gru_layers: int = 2
    prediction_steps: int = 28
    classifier_hidden: tuple[int, ...] = (256, 128)
    pooling: Pooling = "last"

    def __post_init__(self) -> None:
        _check_name(self, "cpc")
        _check_positive(self, "kernel_size", "gru_hidden", "gru_layers", "prediction_steps")
        _check_positive_tuple(self, "conv_channels", "classifier_hidden")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd (same-length output), got {self.kernel_size}", "baseline.kernel_size")
        if self.pooling not in typing.get_args(Pooling):
            raise ConfigError(f"pooling must be one of {typing.get_args(Pooling)}, got {self.pooling!r}", "baseline.pooling")
        _check_dropout(self)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> CPCConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "baseline")


@dataclass(frozen=True)
class ClassicalConfig:
    """The classical baseline's settings (configs/baseline/classical.yaml).

    Parameters
    ----------
    classifier
        ``"random_forest"`` or ``"logistic_regression"`` (standardised features, L2).
    n_estimators
        Trees of the random forest.
    max_iter
        Iterations of the logistic regression's solver.
    c
        Inverse L2 strength of the logistic regression.
    """

    name: Literal["classical"] = "classical"
    classifier: ClassifierName = "random_forest"
    n_estimators: int = 500
    max_iter: int = 2000
    c: float = 1.0

    def __post_init__(self) -> None:
        _check_name(self, "classical")
        if self.classifier not in _CLASSIFIERS:
            raise ConfigError(f"classifier must be one of {_CLASSIFIERS}, got {self.classifier!r}",
                              "method.architecture.classifier")
        if self.n_estimators < 1 or self.max_iter < 1 or self.c <= 0:
            raise ConfigError(f"need n_estimators >= 1, max_iter >= 1 and c > 0, got {self.n_estimators}, "
                              f"{self.max_iter}, {self.c}", "method.architecture")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> ClassicalConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "baseline")






def _check_name(cfg: Any, expected: str) -> None:
    if cfg.name != expected:
        raise ConfigError(f"{type(cfg).__name__}.name must be {expected!r}, got {cfg.name!r}", "baseline.name")


def _check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}", f"baseline.{name}")


def _check_positive_tuple(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value or any(not isinstance(v, int) or v < 1 for v in value):
            raise ConfigError(f"{name} must be a non-empty list of integers >= 1, got {value!r}", f"baseline.{name}")


def _check_dropout(cfg: Any) -> None:
    if not 0 <= cfg.dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {cfg.dropout}", "baseline.dropout")
