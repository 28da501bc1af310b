"""Typed dataset settings: the fields of configs/dataset/*.yaml as a frozen dataclass."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from fedhar.config_mapping import build
from fedhar.errors import ConfigError

if TYPE_CHECKING:
    from fedhar.data.dataset import ModalitySpec

LabelScheme = Literal["per_class", "fraction"]
DATASET_NAMES = ("utd-mhad", "usc-had", "synthetic")


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset to load, how to preprocess it, and its evaluation protocol.

    Parameters
    ----------
    name
        ``"utd-mhad"``, ``"usc-had"`` or ``"synthetic"``.
    root
        Folder holding the raw files as published (``None`` for synthetic data).
    preprocess
        Dataset-specific preprocessing settings (see configs/dataset/*.yaml); they key
        the on-disk cache.
    protocol
        Name of the protocol preset in ``protocols``.
    protocols
        Preset name -> ``{"test_subjects": [...]}``; training subjects are the rest.
    label_scheme
        ``"per_class"`` (Cosmo's UTD semantics: rate % of ``sequences_per_class`` labeled
        trials per class) or ``"fraction"`` (class-stratified fraction of training samples).
    sequences_per_class
        Reference number of sequences per class for ``"per_class"``.
    label_rates
        The label rates (percent) this dataset is evaluated at.
    modality_subsets
        Subject id -> modalities that subject exposes; unlisted subjects have all.
    skip_bad_files
        Skip unreadable raw files with a warning and a count instead of stopping.
    cache_dir
        Folder for preprocessed-array caches (``None``: no caching).
    orientation_spread_deg
        How far the IMU's orientation varies between wearers, in degrees: the range of the
        rotation augmentation of the fedhar recipe (configs/recipe/fedhar.yaml). A wrist
        band worn one way (UTD-MHAD) varies little; a hip-worn phone (USC-HAD) a lot.
    imu_layout
        The IMU encoder that suits this dataset's activities, which the fedhar recipe uses
        (``model.encoder.imu_layout``): ``"temporal"`` (1-D convs over time, mean and max
        pooled: periodic activities and postures, the order of events inside a window does
        not matter; USC-HAD) or ``"grid"`` (Cosmo's 2-D convs, which keep the time course:
        gestures; UTD-MHAD). docs/learning.md section 13 has the measurements.
    value_bounds
        Modality -> the largest absolute raw value of each channel (one number for all, or
        one per channel), e.g. the sensor's range. Only secure aggregation uses them: each
        client clips its values to them and scales its normalisation moments into the
        fixed-point range (:func:`fedhar.secure_sum.moments_contribution`).
    """

    name: str
    root: Path | None = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    protocol: str = "default"
    protocols: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    label_scheme: LabelScheme = "fraction"
    sequences_per_class: int | None = None
    label_rates: tuple[float, ...] = ()
    modality_subsets: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    skip_bad_files: bool = False
    orientation_spread_deg: float = 30.0
    imu_layout: str = "grid"
    value_bounds: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    cache_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.name not in DATASET_NAMES:
            raise ConfigError(f"unknown dataset {self.name!r}; choose one of {DATASET_NAMES}", "dataset.name")
        if self.label_scheme not in ("per_class", "fraction"):
            raise ConfigError(
                f"label_scheme must be 'per_class' or 'fraction', got {self.label_scheme!r}",
                "dataset.label_scheme",
            )
        if not 0.0 <= float(self.orientation_spread_deg) <= 180.0:
            raise ConfigError(f"orientation_spread_deg must be in [0, 180], got {self.orientation_spread_deg}",
                              "dataset.orientation_spread_deg")
        if self.imu_layout not in ("grid", "temporal"):
            raise ConfigError(f"imu_layout must be 'grid' or 'temporal', got {self.imu_layout!r}", "dataset.imu_layout")
        for name, bound in self.value_bounds.items():
            if not bound or not all(math.isfinite(b) and b > 0 for b in bound):
                raise ConfigError(f"value_bounds of {name!r} must be positive numbers, got {list(bound)}",
                                  f"dataset.value_bounds.{name}")
        if self.label_scheme == "per_class" and not self.sequences_per_class:
            raise ConfigError("label_scheme 'per_class' needs sequences_per_class > 0", "dataset.sequences_per_class")
        if self.protocols and self.protocol not in self.protocols:
            raise ConfigError(
                f"protocol {self.protocol!r} is not one of the presets {sorted(self.protocols)}",
                "dataset.protocol",
            )

    @property
    def test_subjects(self) -> tuple[int, ...]:
        """Held-out test subjects of the selected protocol preset."""
        if not self.protocols:
            return ()
        return tuple(int(s) for s in self.protocols[self.protocol].get("test_subjects", ()))

    def channel_bounds(self, modality: str, channels: int) -> np.ndarray:
        """``(channels,)`` largest absolute value of each channel of ``modality``.

        Raises
        ------
        ConfigError
            If ``value_bounds`` lacks the modality or gives another number of channels.
        """
        if modality not in self.value_bounds:
            raise ConfigError(f"dataset.value_bounds has no entry for modality {modality!r} (it has "
                              f"{sorted(self.value_bounds)}): secure aggregation of the normalisation round needs "
                              "each modality's value range", f"dataset.value_bounds.{modality}")
        bound = self.value_bounds[modality]
        if len(bound) not in (1, channels):
            raise ConfigError(f"value_bounds of {modality!r} has {len(bound)} numbers; give 1 or one per channel "
                              f"({channels})", f"dataset.value_bounds.{modality}")
        return np.broadcast_to(np.asarray(bound, dtype=np.float64), (channels,)).copy()

    def bounds_of(self, modalities: Iterable[ModalitySpec]) -> dict[str, np.ndarray]:
        """Modality -> :meth:`channel_bounds` for each of ``modalities`` (raises as it does)."""
        return {m.name: self.channel_bounds(m.name, m.shape[-1]) for m in modalities}

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], cache_dir: str | Path | None = None) -> DatasetConfig:
        """Build from a plain mapping (a resolved ``configs/dataset/*.yaml``); unknown keys raise."""
        kw: dict[str, Any] = dict(cfg)
        kw["preprocess"] = _plain(kw.get("preprocess") or {})
        kw["protocols"] = _plain(kw.get("protocols") or {})
        kw["label_rates"] = kw.get("label_rates") or ()
        kw["value_bounds"] = {str(m): tuple(float(v) for v in (b if isinstance(b, Sequence) and not isinstance(b, str)
                                                                else [b]))
                              for m, b in _plain(kw.get("value_bounds") or {}).items()}
        kw["modality_subsets"] = {  # YAML keys may be strings
            int(s): tuple(str(m) for m in mods) for s, mods in (kw.get("modality_subsets") or {}).items()
        }
        if cache_dir is not None and "cache_dir" not in cfg:
            kw["cache_dir"] = cache_dir
        return build(cls, kw, "dataset")


def _plain(value: Any) -> Any:
    """Recursively turn mappings and sequences into dicts and lists (for hashing and typing)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value
