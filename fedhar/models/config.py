"""Typed model settings: the fields of configs/model/*.yaml as frozen dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fedhar.config_mapping import build

Padding = Literal["valid", "same"]
HeadPool = Literal["flatten", "mean_s", "adaptive"]
Layout = Literal["grid", "temporal"]
Pooling = Literal["adaptive", "mean_max"]
Fusion = Literal["concat", "sum"]
VARIANTS = ("reference", "compact")


def _check_variant(variant: str, where: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"{where}.variant must be one of {VARIANTS}, got {variant!r}")


@dataclass(frozen=True)
class ConvStackConfig:
    """One family of convolutional encoder: a stack of Conv-BN-ReLU(-Dropout) blocks.

    Parameters
    ----------
    channels
        Output channels of each block; the last one is the sequence length ``S`` of the
        encoder output (16 in Cosmo).
    kernels
        Kernel size of each block, one entry per input axis after the channel axis:
        ``(time, channel)`` for IMU, ``(time, joint, coordinate)`` for skeleton.
    dropout
        Dropout probability after every block but the last (Cosmo: 0.5).
    padding
        ``"valid"`` (Cosmo: the axes shrink by ``kernel - 1``) or ``"same"`` (odd kernels).
    pools
        Optional max-pooling kernel after each block (``1`` on an axis: no pooling);
        ``()`` means no pooling anywhere.
    out_size
        Optional adaptive average pooling of the spatial axes after the last block; an
        entry ``None`` keeps that axis. ``None``: no pooling.
    magnitude
        IMU only: append each (x, y, z) triad's norm as an extra input channel (a signal no
        rotation of the sensor changes). Off in Cosmo.
    layout
        IMU only. ``"grid"`` (Cosmo): the window ``(T, C)`` is a one-channel image and 2-D
        kernels ``(time, channel)`` slide over both axes. ``"temporal"``: the C sensor axes
        are the input channels of 1-D convolutions over time (kernels and pools are
        ``(time,)``), so the first layer mixes x, y and z, which a rotated sensor needs;
        on USC-HAD it is the difference between 34 and 69 % (docs/learning.md section 13).
    pooling
        After the last block: ``"adaptive"`` (``out_size``) or ``"mean_max"`` (temporal
        layout only): the mean and the maximum over time of every channel, features
        ``(channels[-1], 2)`` that do not depend on where in the window a movement happens.
    """

    channels: tuple[int, ...]
    kernels: tuple[tuple[int, ...], ...]
    dropout: float = 0.5
    padding: Padding = "valid"
    pools: tuple[tuple[int, ...], ...] = ()
    out_size: tuple[int | None, ...] | None = None
    magnitude: bool = False
    layout: Layout = "grid"
    pooling: Pooling = "adaptive"

    def __post_init__(self) -> None:
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be positive and non-empty, got {self.channels}")
        if len(self.kernels) != len(self.channels):
            raise ValueError(
                f"kernels has {len(self.kernels)} entries but channels has {len(self.channels)}; "
                "give one kernel per block"
            )
        if len({len(k) for k in self.kernels}) != 1 or any(s < 1 for k in self.kernels for s in k):
            raise ValueError(f"kernels must all have the same rank and positive sizes, got {self.kernels}")
        if self.pools and len(self.pools) != len(self.channels):
            raise ValueError(f"pools has {len(self.pools)} entries, channels {len(self.channels)}; give one per block")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        if self.padding == "same" and any(s % 2 == 0 for k in self.kernels for s in k):
            raise ValueError(f"padding 'same' needs odd kernel sizes, got {self.kernels}")
        if self.layout not in ("grid", "temporal"):
            raise ValueError(f"layout must be 'grid' or 'temporal', got {self.layout!r}")
        if self.pooling not in ("adaptive", "mean_max"):
            raise ValueError(f"pooling must be 'adaptive' or 'mean_max', got {self.pooling!r}")
        if self.layout == "temporal" and self.ndim != 1:
            raise ValueError(f"layout 'temporal' needs 1-D (time,) kernels, got {self.kernels}")
        if self.pooling == "mean_max" and (self.layout != "temporal" or self.out_size is not None):
            raise ValueError("pooling 'mean_max' needs layout 'temporal' and out_size null")

    @property
    def ndim(self) -> int:
        """Number of convolved axes (2 for grid IMU, 1 for temporal IMU, 3 for skeleton)."""
        return len(self.kernels[0])

    @property
    def input_rank(self) -> int:
        """Rank of one input sample this stack takes: ``(T, C)`` is 2, ``(T, J, 3)`` is 3."""
        return 2 if self.layout == "temporal" else self.ndim

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ConvStackConfig:
        """Build from a plain mapping (e.g. a YAML group); unknown keys raise :class:`~fedhar.errors.ConfigError`."""
        return build(cls, mapping, "model.encoder.<modality>")


# Cosmo's UTD-MHAD encoders (sample-code-UTD/Cosmo/cosmo_model_guide.py).
REFERENCE_IMU = ConvStackConfig(channels=(64, 64, 32, 16), kernels=((2, 2), (2, 2), (1, 1), (1, 1)))
REFERENCE_SKELETON = ConvStackConfig(
    channels=(64, 64, 32, 16), kernels=((5, 5, 2), (5, 5, 2), (5, 5, 1), (5, 2, 1))
)
# fedhar's compact encoders: temporal pooling keeps F small so the head stays small.
COMPACT_IMU = ConvStackConfig(
    channels=(32, 32, 16, 16),
    kernels=((5, 3), (5, 3), (3, 1), (3, 1)),
    padding="same",
    pools=((2, 1), (2, 1), (2, 1), (1, 1)),
    out_size=(8, None),
)
COMPACT_SKELETON = ConvStackConfig(
    channels=(32, 32, 16, 16),
    kernels=((5, 5, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    pools=((2, 1, 1), (2, 1, 1), (1, 1, 1), (1, 1, 1)),
)
# fedhar's temporal IMU encoder (docs/learning.md section 13): 1-D convs over time with the
# sensor axes as channels, mean and max over time; ~44 k parameters for a (200, 3) modality.
TEMPORAL_IMU = ConvStackConfig(
    channels=(32, 64, 64, 64),
    kernels=((5,), (5,), (5,), (3,)),
    dropout=0.0,
    padding="same",
    pools=((2,), (2,), (2,), (1,)),
    layout="temporal",
    pooling="mean_max",
)
_ENCODER_PRESETS = {
    "reference": (REFERENCE_IMU, REFERENCE_SKELETON),
    "compact": (COMPACT_IMU, COMPACT_SKELETON),
}


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of the per-modality feature encoders.

    Parameters
    ----------
    variant
        ``"reference"`` (Cosmo's sizes) or ``"compact"``; fills ``imu``/``skeleton``
        when they are not given.
    imu
        Cosmo's 2-D conv stack for ``(T, C)`` modalities (inertial, acc, gyro).
    temporal_imu
        The 1-D temporal stack for ``(T, C)`` modalities (layout ``"temporal"``).
    imu_layout
        Which of the two every ``(T, C)`` modality gets: ``"grid"`` (``imu``, Cosmo) or
        ``"temporal"`` (``temporal_imu``). The fedhar recipe takes it from the dataset
        (``dataset.imu_layout``): periodic activities and postures of a phone worn in any
        orientation (USC-HAD) suit the temporal stack, gestures (UTD-MHAD) the grid.
    skeleton
        The 3-D conv stack used for every ``(T, J, 3)`` modality.
    """

    variant: str = "reference"
    imu: ConvStackConfig | None = None
    temporal_imu: ConvStackConfig = TEMPORAL_IMU
    imu_layout: Layout = "grid"
    skeleton: ConvStackConfig | None = None

    def __post_init__(self) -> None:
        _check_variant(self.variant, "encoder")
        imu, skeleton = _ENCODER_PRESETS[self.variant]
        object.__setattr__(self, "imu", self.imu or imu)
        object.__setattr__(self, "skeleton", self.skeleton or skeleton)
        if self.imu.input_rank != 2:  # type: ignore[union-attr]
            raise ValueError(
                f"encoder.imu kernels must be 2-D (time, channel), or 1-D (time,) with layout 'temporal', got {self.imu.kernels}"  # type: ignore[union-attr]
            )
        if self.imu_layout not in ("grid", "temporal"):
            raise ValueError(f"encoder.imu_layout must be 'grid' or 'temporal', got {self.imu_layout!r}")
        if self.temporal_imu.layout != "temporal":
            raise ValueError("encoder.temporal_imu must have layout 'temporal'")
        if self.skeleton.layout != "grid" or self.skeleton.ndim != 3:  # type: ignore[union-attr]
            raise ValueError(
                f"encoder.skeleton kernels must be 3-D (time, joint, coord), got {self.skeleton.kernels}"  # type: ignore[union-attr]
            )

    @property
    def imu_stack(self) -> ConvStackConfig:
        """The stack every ``(T, C)`` modality gets, as chosen by ``imu_layout``."""
        stack = self.temporal_imu if self.imu_layout == "temporal" else self.imu
        assert stack is not None  # __post_init__ fills imu
        return stack

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> EncoderConfig:
        """Build from a plain mapping; ``imu``/``skeleton`` may be nested mappings."""
        return build(cls, mapping, "model.encoder")


@dataclass(frozen=True)
class HeadConfig:
    """Settings of the per-modality projection heads.

    Parameters
    ----------
    variant
        A label (``"reference"`` or ``"compact"``); the other fields define the head.
    pool
        How ``(B, S, F)`` becomes a vector: ``"flatten"`` (Cosmo, ``S*F``), ``"mean_s"``
        (mean over S, ``F``) or ``"adaptive"`` (adaptive average pooling of F to
        ``pool_size``, ``S*pool_size``).
    pool_size
        Output length of ``"adaptive"`` pooling.
    hidden_dims
        Widths of the hidden Linear-ReLU layers (Cosmo: ``(1280,)``).
    out_dim
        Projection dimension ``D`` (Cosmo: 128).
    batch_norm
        BatchNorm1d after each hidden Linear, as in Cosmo's public code (needs batches of
        more than one sample in training mode).
    normalize
        L2-normalise the output (Cosmo: yes).
    """

    variant: str = "reference"
    pool: HeadPool = "flatten"
    pool_size: int | None = None
    hidden_dims: tuple[int, ...] = (1280,)
    out_dim: int = 128
    batch_norm: bool = True
    normalize: bool = True

    def __post_init__(self) -> None:
        _check_variant(self.variant, "head")
        if self.pool not in ("flatten", "mean_s", "adaptive"):
            raise ValueError(f"head.pool must be 'flatten', 'mean_s' or 'adaptive', got {self.pool!r}")
        if self.pool == "adaptive" and (self.pool_size is None or self.pool_size < 1):
            raise ValueError(f"head.pool 'adaptive' needs pool_size >= 1, got {self.pool_size}")
        if self.out_dim < 1 or any(h < 1 for h in self.hidden_dims):
            raise ValueError(f"head dims must be positive, got hidden {self.hidden_dims}, out {self.out_dim}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> HeadConfig:
        """Build from a plain mapping; unknown keys raise :class:`~fedhar.errors.ConfigError`."""
        return build(cls, mapping, "model.head")


@dataclass(frozen=True)
class ClassifierConfig:
    """Settings of the quality-guided attention fusion classifier (Cosmo stage 2).

    Parameters
    ----------
    variant
        A label (``"reference"`` or ``"compact"``).
    lambda_
        Weight of the QoM prior in ``beta = (1 - lambda) beta_attn + lambda beta_QoM``
        (Cosmo: 0.8).
    fusion
        ``"concat"`` (ConcatAttn, Cosmo's UTD setting) or ``"sum"`` (SumAttn, equal shapes).
    gru_hidden
        Hidden size of the GRU over the S axis (Cosmo: 120).
    gru_layers
        Number of GRU layers (Cosmo: 2).
    mlp_hidden
        Hidden widths of the MLP after the GRU (Cosmo: 1280, 128).
    batch_norm
        BatchNorm1d after each hidden MLP layer, as in Cosmo's code.
    dropout
        Dropout after each hidden MLP layer (Cosmo: none).
    """

    variant: str = "reference"
    lambda_: float = 0.8
    fusion: Fusion = "concat"
    gru_hidden: int = 120
    gru_layers: int = 2
    mlp_hidden: tuple[int, ...] = (1280, 128)
    batch_norm: bool = True
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_variant(self.variant, "classifier")
        if not 0.0 <= self.lambda_ <= 1.0:
            raise ValueError(f"classifier.lambda_ must be in [0, 1], got {self.lambda_}")
        if self.fusion not in ("concat", "sum"):
            raise ValueError(f"classifier.fusion must be 'concat' or 'sum', got {self.fusion!r}")
        if self.gru_hidden < 1 or self.gru_layers < 1 or any(h < 1 for h in self.mlp_hidden):
            raise ValueError(
                f"classifier sizes must be positive, got gru_hidden={self.gru_hidden}, "
                f"gru_layers={self.gru_layers}, mlp_hidden={self.mlp_hidden}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"classifier.dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ClassifierConfig:
        """Build from a plain mapping; unknown keys raise :class:`~fedhar.errors.ConfigError`."""
        return build(cls, mapping, "model.classifier")


@dataclass(frozen=True)
class ModelConfig:
    """Encoders, projection heads and fusion classifier: one ``configs/model/*.yaml``.

    Parameters
    ----------
    encoder
        Encoder settings, shared by all modalities of a family.
    head
        Projection-head settings.
    classifier
        Stage-2 classifier settings.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain nested mapping (``OmegaConf.to_container`` of the model group).

        Examples
        --------
        >>> cfg = ModelConfig.from_mapping({"encoder": {"variant": "compact"}})
        >>> cfg.encoder.imu.channels
        (32, 32, 16, 16)
        """
        return build(cls, mapping, "model")
