"""The client's side of the ConfigRecord: parse it into fedhar's frozen dataclasses in one place."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord

from fedhar import keys
from fedhar.config import ExperimentConfig
from fedhar.data.config import DatasetConfig
from fedhar.data.federation import ClientFederation
from fedhar.errors import ConfigError
from fedhar.federated import AttackInjection, FailureInjection
from fedhar.models.config import ModelConfig
from fedhar.quality import QualityConfig
from fedhar.train.config import FinetuneConfig, PretrainConfig

__all__ = ["ClientSettings", "parse_config", "qom_prior_of"]


@dataclass(frozen=True)
class ClientSettings:
    """Everything a client needs for one round, typed.

    Parameters
    ----------
    dataset
        Which dataset, protocol and modality subsets (the client loads its own partition).
    label_rate
        Label rate in percent (decides the client's labeled / unlabeled rows).
    seed
        The run's seed; the client derives its own from (seed, subject, round).
    model
        Encoder, head and classifier settings (must match the server's model).
    pretrain
        Stage-1 loop settings; ``epochs`` is the local epochs of this round.
    finetune
        Stage-2 loop settings; ``epochs`` is the local epochs of this round.
    quality
        Settings of :func:`fedhar.quality.compute_client_qom`, seeded with the run's seed.
    stage
        ``"pretrain"`` or ``"finetune"`` (or ``""`` for evaluation).
    server_round
        The round, from 1.
    qom_prior
        Global normalised QoM per modality, for stage 2's attention prior.
    freeze_encoders
        Stage 2 trains only the fusion classifier; the stage-1 encoders stay as received.
    train_subjects
        The protocol's training subjects (maps ``partition-id`` to a subject, checks ``subject-id``).
    federation
        Merged statistics and class counts of the normalisation round (``None`` in the
        round itself).
    failures
        Simulated failures of this client's training rounds (off by default).
    attack
        A simulated hostile client (off by default).
    fusion_loss
        Keyword arguments of stage 1's :class:`fedhar.losses.CosmoFusionLoss` (the ``method``
        group's ``loss``: temperature, fusion weights, CLMM's hard-positive weight).
    """

    dataset: DatasetConfig
    label_rate: float
    seed: int
    model: ModelConfig
    pretrain: PretrainConfig
    finetune: FinetuneConfig
    quality: QualityConfig = field(default_factory=QualityConfig)
    stage: str = ""
    server_round: int = 0
    qom_prior: Mapping[str, float] = field(default_factory=dict)
    freeze_encoders: bool = False
    train_subjects: tuple[int, ...] = ()
    federation: ClientFederation | None = None
    failures: FailureInjection = field(default_factory=FailureInjection)
    attack: AttackInjection = field(default_factory=AttackInjection)
    fusion_loss: Mapping[str, Any] = field(default_factory=dict)


def parse_config(config: ConfigRecord) -> ClientSettings:
    """Turn the server's ConfigRecord into :class:`ClientSettings`.

    The record holds ``setup`` (JSON of the resolved dataset, model, stage1, stage2 and
    quality groups plus ``label_rate`` and ``seed``), ``train-subjects``, the merged
    ``norm-stats`` and the node's own ``label-share`` (after the normalisation round), and flat
    per-round values: ``stage``, ``server-round``, ``local-epochs``, ``qom-prior-<modality>``.

    Raises
    ------
    ConfigError
        If ``setup`` is missing or not valid JSON, a group has unknown keys, or the
        normalisation-round entries are malformed.
    """
    if keys.SETUP not in config:
        raise ConfigError(f"the ConfigRecord lacks {keys.SETUP!r}; is the ServerApp from the same fedhar version?",
                          keys.SETUP)
    try:
        setup = json.loads(str(config[keys.SETUP]))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{keys.SETUP!r} is not valid JSON: {err}", keys.SETUP) from err
    local_epochs = config.get(keys.LOCAL_EPOCHS)
    if local_epochs is not None and (not isinstance(local_epochs, int) or isinstance(local_epochs, bool)):
        raise ConfigError(f"{keys.LOCAL_EPOCHS!r} must be an int, got {local_epochs!r}", keys.LOCAL_EPOCHS)
    seed = int(config.get(keys.SEED, setup.get("seed", 0)))  # type: ignore[arg-type]
    exp = ExperimentConfig.from_mapping({**setup, "seed": seed}, progress=False).with_quality_seed(seed)
    pretrain, finetune = exp.stage1, exp.stage2
    if local_epochs is not None:
        pretrain, finetune = pretrain.with_epochs(int(local_epochs)), finetune.with_epochs(int(local_epochs))
    return ClientSettings(
        dataset=exp.dataset,
        label_rate=exp.label_rate,
        seed=seed,
        model=exp.model,
        pretrain=pretrain,
        finetune=finetune,
        quality=exp.quality,
        stage=str(config.get(keys.STAGE, "")),
        server_round=int(config.get(keys.SERVER_ROUND, 0)),  # type: ignore[arg-type]
        qom_prior=qom_prior_of(config),
        freeze_encoders=bool(config.get(keys.FREEZE_ENCODERS, False)),
        train_subjects=tuple(int(x) for x in config.get(keys.TRAIN_SUBJECTS, []) or []),  # type: ignore[union-attr]
        federation=ClientFederation.from_config(config),
        failures=FailureInjection(**dict(setup.get("inject_failures") or {})),
        attack=AttackInjection(**dict(setup.get("inject_attack") or {})),
        fusion_loss=dict(exp.method.loss) if exp.method is not None else {},
    )


def qom_prior_of(config: Mapping[str, Any]) -> dict[str, float]:
    """The ``qom-prior-<modality>`` entries of a record, as modality -> float."""
    prefix = keys.QOM_PRIOR_PREFIX
    return {k[len(prefix):]: float(v) for k, v in config.items() if k.startswith(prefix)}
