"""One typed experiment configuration: the resolved config groups of a run as fedhar's dataclasses.

Every entry point builds it once from its composed config (a centralised run, an ablation,
the ServerApp's setup record, a client's parsed ConfigRecord); past that point the code
reads typed fields, never a DictConfig or an untyped mapping. Each group is checked by its
own dataclass and a bad key or value raises :class:`fedhar.errors.ConfigError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from fedhar.data.config import DatasetConfig
from fedhar.errors import ConfigError
from fedhar.models.config import ModelConfig
from fedhar.pipeline import MethodConfig
from fedhar.quality import QualityConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig, SupervisedConfig

__all__ = ["ExperimentConfig"]

#: Root keys of a composed config that are groups of :class:`ExperimentConfig` (the rest, e.g.
#: ``paths`` or ``federation``, belong to the entry point that composed it).
GROUPS = ("dataset", "label_rate", "seed", "model", "stage1", "stage2", "quality", "method", "supervised")


@dataclass(frozen=True)
class ExperimentConfig:
    """What one experiment trains on and how: the groups of configs/config.yaml (and federated.yaml).

    Parameters
    ----------
    dataset
        Dataset, protocol, preprocessing, modalities.
    label_rate
        Labeled fraction of the training rows, in percent (0, 100].
    seed
        The run's seed; every stage derives its own from it.
    model
        Encoders, heads and fusion classifier.
    stage1, stage2
        Contrastive pretraining and iterative fusion fine-tuning loops.
    quality
        How the quality of each modality (QoM) is computed.
    method
        Which method a centralised run trains (``None`` in federated runs: always Cosmo).
    supervised
        The supervised baselines' loop (``None`` where no baseline runs).
    """

    dataset: DatasetConfig
    label_rate: float
    seed: int
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: PretrainConfig = field(default_factory=PretrainConfig)
    stage2: FinetuneConfig = field(default_factory=FinetuneConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    method: MethodConfig | None = None
    supervised: SupervisedConfig | None = None

    def __post_init__(self) -> None:
        if not 0 < self.label_rate <= 100:
            raise ConfigError(f"label_rate must be in (0, 100] percent, got {self.label_rate}", "label_rate")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}", "seed")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any], cache_dir: str | None = None,
                     progress: bool | None = None) -> ExperimentConfig:
        """Build from a resolved config (plain mapping); keys outside :data:`GROUPS` are left to the caller.

        ``cache_dir`` fills the dataset's cache folder when the group has none; ``progress``
        overrides the loops' progress bars (``False`` on a server or a client).
        """
        for key in ("dataset", "label_rate", "seed"):
            if key not in cfg:
                raise ConfigError(f"the config has no {key!r}", key)

        def group(name: str) -> dict[str, Any]:
            value = cfg.get(name) or {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}", name)
            return dict(value)

        def loop(name: str) -> dict[str, Any]:
            return {**group(name), **({"progress": progress} if progress is not None else {})}

        try:
            label_rate, seed = float(cfg["label_rate"]), int(cfg["seed"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"label_rate and seed must be numbers: {err}", "label_rate") from err
        return cls(
            dataset=DatasetConfig.from_mapping(group("dataset"), cache_dir=cache_dir),
            label_rate=label_rate,
            seed=seed,
            model=ModelConfig.from_mapping(group("model")),
            stage1=PretrainConfig.from_mapping(loop("stage1")),
            stage2=FinetuneConfig.from_mapping(loop("stage2")),
            quality=QualityConfig.from_mapping(group("quality")),
            method=MethodConfig.from_mapping(group("method")) if cfg.get("method") else None,
            supervised=SupervisedConfig.from_mapping(loop("supervised")) if cfg.get("supervised") else None,
        )

    def with_quality_seed(self, seed: int) -> ExperimentConfig:
        """A copy whose QoM subsample is drawn with ``seed`` (a client seeds it with its own)."""
        return replace(self, quality=replace(self.quality, seed=seed))
