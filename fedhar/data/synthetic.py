"""A deterministic synthetic multimodal HAR dataset for fast tests and zero-download demos.

Sample ``i`` of class ``k``, subject ``s``, modality ``m`` is, per channel ``c``::

    x[t, c] = scale[s, m, c] * informativeness[m] * pattern[m, k, t, c]
              + offset[s, m, c] + noise_std * eps[t, c]

``pattern[m, k, :, c]`` is a sum of ``NUM_SINUSOIDS`` sinusoids whose frequencies, phases and
amplitudes are drawn per (modality, class, channel), scaled to unit RMS over time; the
subject's ``offset ~ N(0, subject_shift)`` and ``scale = exp(N(0, subject_shift))`` model
subject heterogeneity, and ``eps ~ N(0, 1)``. With ``informativeness = 0`` a modality holds
no class information at all. Every modality draws from its own stream of one
:class:`numpy.random.SeedSequence`, so the data are a function of the settings alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any

import numpy as np

from fedhar.config_mapping import build, check_known_keys
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.errors import ConfigError

__all__ = ["SyntheticModality", "SyntheticSettings", "make_synthetic"]

logger = logging.getLogger(__name__)

DATASET_NAME = "synthetic"
NUM_SINUSOIDS = 3
"""Sinusoids summed into one class pattern of one channel."""
MIN_CYCLES, MAX_CYCLES = 0.5, 4.0
"""Range of a sinusoid's frequency, in cycles per sample window."""
DEFAULT_SAMPLE_RATE_HZ = 50.0
"""Nominal sampling rate recorded in the modality specs when the settings give none."""
MIN_AMPLITUDE, MAX_AMPLITUDE = 0.5, 1.0
"""Range of a sinusoid's amplitude (before the pattern is scaled to unit RMS)."""
_CULPRIT = "dataset.preprocess"


@dataclass(frozen=True)
class SyntheticModality:
    """One synthetic modality: per-sample shape (time first) and class-signal strength."""

    name: str
    shape: tuple[int, ...]
    informativeness: float

    def __post_init__(self) -> None:
        where = f"{_CULPRIT}.modalities.{self.name}"
        if not self.shape or any(int(d) <= 0 for d in self.shape):
            raise ConfigError(f"shape must be a non-empty list of positive sizes, got {list(self.shape)}", where)
        if not 0.0 <= self.informativeness <= 1.0:
            raise ConfigError(f"informativeness must be in [0, 1], got {self.informativeness}", where)


@dataclass(frozen=True)
class SyntheticSettings:
    """The ``preprocess`` block of configs/dataset/synthetic.yaml, validated.

    Parameters
    ----------
    num_subjects, num_classes, samples_per_subject_class
        Dataset size: subjects ``1..num_subjects``, labels ``0..num_classes-1``, trials
        ``1..samples_per_subject_class`` of every class for every subject.
    modalities
        The modalities, in order.
    subject_shift
        Std of the per-subject offset and of the log of the per-subject scale.
    noise_std
        Std of the i.i.d. Gaussian noise added to every reading.
    seed
        Seed of the generator; the data are a function of the settings alone.
    sample_rate_hz
        Nominal sampling rate stored in the modality specs.
    """

    num_subjects: int
    num_classes: int
    samples_per_subject_class: int
    modalities: tuple[SyntheticModality, ...]
    subject_shift: float
    noise_std: float
    seed: int
    sample_rate_hz: float = DEFAULT_SAMPLE_RATE_HZ

    def __post_init__(self) -> None:
        for name in ("num_subjects", "num_classes", "samples_per_subject_class"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}", f"{_CULPRIT}.{name}")
        for name in ("subject_shift", "noise_std"):
            if float(getattr(self, name)) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}", f"{_CULPRIT}.{name}")
        if self.sample_rate_hz <= 0:
            raise ConfigError(f"sample_rate_hz must be > 0, got {self.sample_rate_hz}", f"{_CULPRIT}.sample_rate_hz")
        if not self.modalities:
            raise ConfigError("at least one modality is needed", f"{_CULPRIT}.modalities")
        if self.noise_std == 0 and all(m.informativeness == 0 for m in self.modalities):
            logger.warning("synthetic data with no signal and no noise: every modality is constant per subject")

    @classmethod
    def from_mapping(cls, preprocess: Mapping[str, Any]) -> SyntheticSettings:
        """Parse the ``preprocess`` mapping of a synthetic dataset config; unknown keys raise."""
        check_known_keys(cls, preprocess, _CULPRIT)
        required = sorted(
            k for k, f in cls.__dataclass_fields__.items() if f.default is MISSING and k not in preprocess
        )
        if required:
            raise ConfigError(f"missing synthetic settings {required}", _CULPRIT)
        mods = preprocess["modalities"]
        if not isinstance(mods, Mapping):
            raise ConfigError(f"modalities must map name -> {{shape, informativeness}}, got {mods!r}", _CULPRIT)
        modalities = []
        for name, spec in mods.items():
            if not isinstance(spec, Mapping) or set(spec) != {"shape", "informativeness"}:
                raise ConfigError(
                    f"modality {name!r} must have exactly the keys shape and informativeness, got {spec!r}",
                    f"{_CULPRIT}.modalities.{name}",
                )
            shape = tuple(_coerce("shape", d) for d in spec["shape"])
            informativeness = _coerce("informativeness", spec["informativeness"])
            modalities.append(SyntheticModality(str(name), tuple(int(d) for d in shape), float(informativeness)))
        kw: dict[str, Any] = {k: _coerce(k, v) for k, v in preprocess.items() if k != "modalities"}  # int or float per field
        return build(cls, {"modalities": tuple(modalities), **kw}, _CULPRIT)


def make_synthetic(cfg: DatasetConfig) -> HARDataset:
    """Generate the synthetic dataset described by ``cfg.preprocess``.

    Parameters
    ----------
    cfg
        A ``synthetic`` dataset config (see configs/dataset/synthetic.yaml).

    Returns
    -------
    HARDataset
        ``num_subjects * num_classes * samples_per_subject_class`` rows, ordered by subject,
        class, trial; float32 data of shape ``(N, *shape)`` per modality.

    Raises
    ------
    ConfigError
        If ``cfg`` is not a synthetic config or a setting is missing or out of range.

    Examples
    --------
    >>> cfg = DatasetConfig(name="synthetic", preprocess={...})  # doctest: +SKIP
    >>> make_synthetic(cfg).data["imu"].shape  # doctest: +SKIP
    (360, 60, 6)
    """
    if cfg.name != DATASET_NAME:
        raise ConfigError(f"make_synthetic needs a {DATASET_NAME!r} config, got {cfg.name!r}", "dataset.name")
    settings = SyntheticSettings.from_mapping(cfg.preprocess)
    s, k, n = settings.num_subjects, settings.num_classes, settings.samples_per_subject_class
    subjects = np.repeat(np.arange(1, s + 1, dtype=np.int64), k * n)
    labels = np.tile(np.repeat(np.arange(k, dtype=np.int64), n), s)
    trials = np.tile(np.arange(1, n + 1, dtype=np.int64), s * k)
    streams = np.random.SeedSequence(settings.seed).spawn(len(settings.modalities))
    data = {
        m.name: _generate_modality(m, settings, labels, subjects, np.random.default_rng(stream))
        for m, stream in zip(settings.modalities, streams, strict=True)
    }
    info = DatasetInfo(
        name=DATASET_NAME,
        modalities=tuple(
            ModalitySpec(m.name, m.shape, settings.sample_rate_hz, tuple(f"c{i}" for i in range(m.shape[-1])))
            for m in settings.modalities
        ),
        class_names=tuple(f"class_{i}" for i in range(k)),
        subjects=tuple(range(1, s + 1)),
    )
    logger.info("synthetic dataset: %d rows, %d classes, %d subjects, modalities %s", len(labels), k, s,
                {m.name: m.shape for m in settings.modalities})
    return HARDataset(info=info, data=data, labels=labels, subjects=subjects, trials=trials)


def _generate_modality(
    modality: SyntheticModality,
    settings: SyntheticSettings,
    labels: np.ndarray,
    subjects: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(N, *shape)`` float32 samples of one modality (see the module docstring)."""
    steps, channels = modality.shape[0], math.prod(modality.shape[1:])
    patterns = _class_patterns(settings.num_classes, steps, channels, rng)  # (K, T, C)
    shift_shape = (settings.num_subjects, 1, channels)
    offset = settings.subject_shift * rng.standard_normal(shift_shape)  # (S, 1, C)
    scale = np.exp(settings.subject_shift * rng.standard_normal(shift_shape))  # (S, 1, C)
    subject_row = subjects - 1
    noise = settings.noise_std * rng.standard_normal((len(labels), steps, channels))  # (N, T, C)
    signal = modality.informativeness * patterns[labels] * scale[subject_row]  # (N, T, C)
    samples = signal + offset[subject_row] + noise
    return samples.reshape(len(labels), *modality.shape).astype(np.float32)


def _class_patterns(num_classes: int, steps: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """``(K, T, C)`` smooth class templates: sums of sinusoids, unit RMS over time."""
    t = np.arange(steps) / steps  # (T,)
    draw = (num_classes, 1, channels, NUM_SINUSOIDS)
    freq = rng.uniform(MIN_CYCLES, MAX_CYCLES, size=draw)
    phase = rng.uniform(0.0, 2.0 * np.pi, size=draw)
    amp = rng.uniform(MIN_AMPLITUDE, MAX_AMPLITUDE, size=draw)
    waves = amp * np.sin(2.0 * np.pi * freq * t[None, :, None, None] + phase)  # (K, T, C, NUM_SINUSOIDS)
    pattern = waves.sum(axis=-1)  # (K, T, C)
    rms = np.sqrt(np.mean(pattern**2, axis=1, keepdims=True))
    return pattern / np.maximum(rms, np.finfo(np.float64).tiny)


_INT_SETTINGS = ("num_subjects", "num_classes", "samples_per_subject_class", "seed", "shape")


def _coerce(name: str, value: Any) -> int | float:
    """A scalar setting as int (counts, seed) or float; ``ConfigError`` for anything else."""
    if name in _INT_SETTINGS and isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a number, got {value!r}", f"{_CULPRIT}.{name}") from err
    if isinstance(value, bool) or not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number, got {value!r}", f"{_CULPRIT}.{name}")
    if name in _INT_SETTINGS:
        if not number.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}", f"{_CULPRIT}.{name}")
        return int(number)
    return number
