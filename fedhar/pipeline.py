"""Run one method end to end on prepared experiment data: Cosmo, CMC, CPC or a supervised baseline.

Methods are configurations (configs/method/*.yaml) of one pipeline:

- ``cosmo``: stage 1 contrastive fusion pretraining on the unlabeled pool, QoM of each
  modality computed on the unlabeled data (raw inputs or stage-1 features,
  ``quality.source``) as the attention prior, stage 2 iterative fusion learning on the
  labeled set.
- ``cmc``: stage 1 with the CMC objective, then the same stage 2 without a QoM prior
  (``use_qom: false`` sets the classifier's ``lambda_ = 0``: attention only), as Cosmo's
  CMC baseline fine-tunes with its stage-2 classifier.
- ``cpc`` (IMU-only datasets): CPC pretraining on the unlabeled pool, then the CPC
  classifier trained on the labeled set (encoder frozen by default, as in Haresamudram
  et al. 2021; ``freeze_encoder: false`` trains all layers).
- ``deepsense``, ``attnsense``: supervised on the labeled set, all modalities.
- ``supervised`` with ``modality``: Cosmo's encoder for that modality plus its stage-2
  classifier, trained end to end on the labeled set (Cosmo's "IMU only"/"skeleton only").
- ``classical``: statistics of each window (all modalities, or ``modality`` alone) and a
  scikit-learn classifier on the labeled set (:mod:`fedhar.baselines.classical`): no deep
  learning, no unlabeled data; the floor every deep method must clear.

Every method reports the LAST-epoch test accuracy and macro-F1; ``best_epoch_accuracy``
is the maximum over evaluated epochs and selects on the test set (reported for comparison
with Cosmo's code only).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from fedhar.baselines.attnsense import AttnSenseModel
from fedhar.baselines.classical import ClassicalModel
from fedhar.baselines.cmc import CMCLoss, cmc_objective
from fedhar.baselines.config import AttnSenseConfig, ClassicalConfig, CMCConfig, CPCConfig, DeepSenseConfig
from fedhar.baselines.cpc import CPCClassifier, CPCModel, cpc_objective
from fedhar.baselines.deepsense import DeepSenseModel
from fedhar.baselines.single_modality import SingleModalityClassifier
from fedhar.config_mapping import build
from fedhar.data.dataset import HARDataset, ModalitySpec
from fedhar.data.experiment import ExperimentData
from fedhar.errors import ConfigError
from fedhar.losses.fusion import CosmoFusionLoss, cosmo_objective
from fedhar.models.config import ModelConfig
from fedhar.models.contrastive import ContrastiveFusionModel
from fedhar.models.fusion_classifier import build_fusion_classifier_model
from fedhar.quality import QualityConfig, compute_client_qom
from fedhar.train.checkpoint import save_checkpoint
from fedhar.train.config import FinetuneConfig, PretrainConfig, SupervisedConfig
from fedhar.train.device import device_name, resolve_device
from fedhar.train.evaluate import evaluate, score_predictions
from fedhar.train.history import History
from fedhar.train.loop import TEST_ACCURACY
from fedhar.train.pretrain import pretrain
from fedhar.train.seeding import derive_seed, seed_everything
from fedhar.train.stage2 import run_stage2
from fedhar.train.supervised import train_supervised

__all__ = ["METHODS", "MethodConfig", "compute_modality_prior", "count_parameters", "run_method"]

logger = logging.getLogger(__name__)

MethodName = Literal["cosmo", "cmc", "cpc", "deepsense", "attnsense", "supervised", "classical"]
METHODS = ("cosmo", "cmc", "cpc", "deepsense", "attnsense", "supervised", "classical")


@dataclass(frozen=True)
class MethodConfig:
    """One method: which pipeline branch, and its method-specific settings.

    Parameters
    ----------
    name
        One of :data:`METHODS`.
    modality
        ``supervised`` only: the single modality to train on (``"skeleton"``,
        ``"inertial"``, ``"acc"``, ``"gyro"``).
    use_qom
        Stage 2 attention uses the QoM prior (Cosmo) or not (``lambda_ = 0``, CMC).
    loss
        Stage-1 loss settings: ``CosmoFusionLoss`` kwargs (cosmo) or a ``CMCConfig``
        mapping (cmc, configs/baseline/cmc.yaml).
    architecture
        The baseline's config mapping (``DeepSenseConfig``, ``AttnSenseConfig``,
        ``CPCConfig``; configs/baseline/*.yaml).
    freeze_encoder
        ``cpc`` only: train the classifier on a frozen pretrained encoder.
    """

    name: MethodName = "cosmo"
    modality: str | None = None
    use_qom: bool = True
    loss: Mapping[str, Any] = field(default_factory=dict)
    architecture: Mapping[str, Any] = field(default_factory=dict)
    freeze_encoder: bool = True

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ConfigError(f"unknown method {self.name!r}; choose one of {METHODS}", "method.name")
        if self.name == "supervised" and not self.modality:
            raise ConfigError("method 'supervised' needs a modality (e.g. method.modality=skeleton)",
                              "method.modality")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> MethodConfig:
        """Build from a plain mapping (a resolved configs/method/*.yaml); unknown keys raise."""
        kw = dict(cfg)
        for key in ("loss", "architecture"):  # free-form keyword arguments of the loss / baseline model
            kw[key] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(kw.get(key) or {}).items()}
        return build(cls, kw, "method")

    @property
    def label(self) -> str:
        """Name for tables and run folders (``supervised-skeleton``, ``classical-lr``, ``classical-acc``)."""
        name: str = self.name
        if name == "classical" and self.architecture.get("classifier") == "logistic_regression":
            name = "classical-lr"
        return f"{name}-{self.modality}" if name != "cosmo" and self.modality else name


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return int(sum(p.numel() for p in module.parameters()))


def run_method(
    method_cfg: MethodConfig,
    experiment: ExperimentData,
    model_cfg: ModelConfig,
    stage1_cfg: PretrainConfig,
    stage2_cfg: FinetuneConfig,
    quality_cfg: QualityConfig | None,
    seed: int,
    *,
    supervised_cfg: SupervisedConfig | None = None,
    checkpoint_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train and evaluate one method; return its results (JSON-serialisable).

    Parameters
    ----------
    method_cfg
        The method (see the module docstring).
    experiment
        Normalised labeled, unlabeled and test sets.
    model_cfg
        Encoders, heads and stage-2 classifier (cosmo, cmc, supervised).
    stage1_cfg
        Pretraining budget and optimizer (cosmo, cmc, cpc).
    stage2_cfg
        Fine-tuning budget and optimizer (cosmo, cmc).
    quality_cfg
        QoM settings (cosmo); ``source`` (``"raw"`` or ``"features"``) picks what QoM is
        computed on. ``None``: the defaults of :class:`fedhar.quality.QualityConfig`.
    seed
        The run's seed (weights, shuffling, dropout); stage 1 and stage 2 use derived seeds.
    supervised_cfg
        Loop settings of the supervised baselines and the CPC classifier (default: stage 2's
        epochs, batch size, optimizer and evaluation period).
    checkpoint_path
        If given, the final (last-epoch) model is saved there (:func:`save_checkpoint`).
    device
        Train, compute QoM and evaluate on this device (``"cpu"``, ``"cuda"``,
        ``"cuda:N"``, ``"auto"``; :func:`fedhar.train.device.resolve_device`). Only
        ``"cpu"`` is bit-reproducible. Models are built, checkpointed and returned to the
        CPU between stages.

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1`` (last epoch, test set), ``best_epoch_accuracy`` and
        ``best_epoch`` (selected on the test set), ``confusion``, ``num_test``,
        ``num_labeled``, ``num_unlabeled``, ``parameters``, ``wall_time_s``, ``history``,
        ``device`` (``"cpu"`` or ``"cuda:N"``), ``device_name`` (the GPU's name, ``None``
        on the CPU) and, for cosmo, ``qom``.

    Raises
    ------
    ConfigError
        For a method that does not fit the dataset (CPC on skeleton data, an unknown
        modality, a single-modality dataset for a fusion method), or an unknown or
        unavailable ``device``.
    """
    target = resolve_device(device)
    started = time.perf_counter()
    seed_everything(seed)
    if method_cfg.name == "classical":
        return _run_classical(method_cfg, experiment, seed, started)
    runner = {"cosmo": _run_contrastive, "cmc": _run_contrastive, "cpc": _run_cpc,
              "deepsense": _run_baseline, "attnsense": _run_baseline, "supervised": _run_single}[method_cfg.name]
    supervised = supervised_cfg or _supervised_cfg(stage2_cfg)
    model, histories, extra = runner(method_cfg, experiment, model_cfg, stage1_cfg, stage2_cfg, quality_cfg, seed,
                                     supervised, target)
    test = experiment.test.with_modalities([extra["modality"]]) if "modality" in extra else experiment.test
    final = evaluate(model, test, device=target)
    last = histories[-1]
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, model, epoch=len(last), extra={"method": method_cfg.label, "seed": seed})
    best_epoch, best_acc = last.best(TEST_ACCURACY)
    wall = {h.stage: h.total_seconds for h in histories}
    wall.update(extra.pop("wall_time_s", {}))
    wall["total"] = time.perf_counter() - started
    results: dict[str, Any] = {
        "method": method_cfg.label,
        "seed": seed,
        "accuracy": final.accuracy,
        "macro_f1": final.macro_f1,
        "best_epoch_accuracy": best_acc,
        "best_epoch": best_epoch,
        "best_epoch_note": "max test accuracy over evaluated epochs: selects on the test set",
        "confusion": final.confusion.tolist(),
        "class_names": list(experiment.info.class_names),
        "num_test": final.num_samples,
        "num_labeled": len(experiment.labeled),
        "num_unlabeled": len(experiment.unlabeled),
        "wall_time_s": wall,
        "device": str(target),
        "device_name": device_name(target),
        "history": {h.stage: h.to_list() for h in histories},
        **extra,
    }
    logger.info("%s seed %d: accuracy %.4f macro-F1 %.4f (best-epoch accuracy %.4f, selects on test) in %.1f s on %s",
                method_cfg.label, seed, final.accuracy, final.macro_f1, best_acc, wall["total"], target)
    return results


def _supervised_cfg(stage2: FinetuneConfig) -> SupervisedConfig:
    """Default supervised loop settings: stage 2's budget, batch, optimizer, evaluation."""
    return SupervisedConfig(epochs=stage2.epochs, batch_size=stage2.batch_size, optim=stage2.optim,
                            eval_every=stage2.eval_every, progress=stage2.progress, log_every=stage2.log_every)


def _specs(experiment: ExperimentData, names: Sequence[str] | None = None) -> tuple[ModalitySpec, ...]:
    """Specs of ``names`` (default: all modalities), checked."""
    try:
        return tuple(experiment.info.modality(n) for n in (names or experiment.info.modality_names))
    except KeyError as err:
        raise ConfigError(str(err.args[0]), "method.modality") from err


def _run_contrastive(
    method: MethodConfig, experiment: ExperimentData, model_cfg: ModelConfig, stage1: PretrainConfig,
    stage2: FinetuneConfig, quality_cfg: QualityConfig | None, seed: int,
    supervised: SupervisedConfig, device: torch.device,
) -> tuple[nn.Module, list[History], dict[str, Any]]:
    """Cosmo / CMC: contrastive stage 1, (QoM,) iterative fusion stage 2."""
    specs = _specs(experiment)
    if len(specs) < 2:
        raise ConfigError(f"{method.name} fuses modalities, but {experiment.info.name} has only {len(specs)}",
                          "method.name")
    seed_everything(derive_seed(seed, "model"))
    stage1_model = ContrastiveFusionModel(specs, model_cfg)
    if method.name != "cosmo" and stage1.augment.views != 1:
        raise ConfigError(f"stage1.augment.views={stage1.augment.views} is implemented for method=cosmo only",
                          "stage1.augment.views")
    objective = (cosmo_objective(CosmoFusionLoss(**method.loss, copies=stage1.augment.views))
                 if method.name == "cosmo" else cmc_objective(CMCLoss(CMCConfig.from_mapping(method.loss).temperature)))
    h1 = pretrain(stage1_model, objective, experiment.unlabeled, stage1, derive_seed(seed, "stage1"), device=device)
    extra: dict[str, Any] = {"wall_time_s": {}}
    names = stage1_model.modalities
    if method.use_qom:
        t0 = time.perf_counter()
        quality_cfg = quality_cfg or QualityConfig()
        qom = _compute_qom(stage1_model, experiment.unlabeled, experiment.info.num_classes, quality_cfg, device)
        extra["wall_time_s"]["qom"] = time.perf_counter() - t0
        prior = {m: float(qom.weights[m]) for m in names}
        extra["qom"] = {"weights": prior, "hopkins": _plain(qom.hopkins), "clusters": _plain(qom.clusters),
                        "scores": _plain(qom.scores), "source": quality_cfg.source}
        classifier_cfg = model_cfg.classifier
    else:
        prior = {m: 1.0 / len(names) for m in names}
        classifier_cfg = replace(model_cfg.classifier, lambda_=0.0)
    seed_everything(derive_seed(seed, "classifier"))
    model = build_fusion_classifier_model(specs, experiment.info.num_classes,
                                          replace(model_cfg, classifier=classifier_cfg),
                                          encoders=stage1_model.encoders, qom_prior=prior)
    classifier = model.classifier
    extra["parameters"] = {"encoders": count_parameters(stage1_model.encoders),
                           "heads": count_parameters(stage1_model.heads),
                           "classifier": count_parameters(classifier),
                           "stage1_model": count_parameters(stage1_model),
                           "stage2_model": count_parameters(model)}
    model, h2 = run_stage2(model, experiment.labeled, stage2, derive_seed(seed, "stage2"), eval_data=experiment.test,
                           device=device)
    return model, [h1, h2], extra


def compute_modality_prior(
    model: ContrastiveFusionModel, experiment: ExperimentData, quality_cfg: QualityConfig, device: torch.device
) -> dict[str, float]:
    """Cosmo's stage-2 attention prior: the normalised QoM of each modality on the unlabeled pool."""
    qom = _compute_qom(model, experiment.unlabeled, experiment.info.num_classes, quality_cfg, device)
    return {m: float(qom.weights[m]) for m in model.modalities}


def _compute_qom(
    model: ContrastiveFusionModel, data: HARDataset, num_classes: int, quality_cfg: QualityConfig, device: torch.device
) -> Any:
    """QoM of each modality on ``data`` (raw inputs or stage-1 features), as a federated client computes it."""
    return compute_client_qom({m: np.asarray(data.data[m]) for m in model.modalities}, num_classes, quality_cfg,
                              model=model, device=device)


def _run_baseline(
    method: MethodConfig, experiment: ExperimentData, model_cfg: ModelConfig, stage1: PretrainConfig,
    stage2: FinetuneConfig, quality_cfg: QualityConfig | None, seed: int,
    supervised: SupervisedConfig, device: torch.device,
) -> tuple[nn.Module, list[History], dict[str, Any]]:
    """DeepSense / AttnSense: supervised on the labeled set, all modalities."""
    specs, k = _specs(experiment), experiment.info.num_classes
    seed_everything(derive_seed(seed, "model"))
    if method.name == "deepsense":
        model: nn.Module = DeepSenseModel(specs, k, DeepSenseConfig.from_mapping(method.architecture))
    else:
        model = AttnSenseModel(specs, k, AttnSenseConfig.from_mapping(method.architecture))
    h = train_supervised(model, experiment.labeled, supervised, derive_seed(seed, "stage2"),
                         eval_data=experiment.test, device=device)
    return model, [h], {"parameters": {"model": count_parameters(model)}}


def _run_single(
    method: MethodConfig, experiment: ExperimentData, model_cfg: ModelConfig, stage1: PretrainConfig,
    stage2: FinetuneConfig, quality_cfg: QualityConfig | None, seed: int,
    supervised: SupervisedConfig, device: torch.device,
) -> tuple[nn.Module, list[History], dict[str, Any]]:
    """One modality: Cosmo's encoder + stage-2 classifier (no QoM prior), trained end to end."""
    (spec,) = _specs(experiment, [str(method.modality)])
    seed_everything(derive_seed(seed, "model"))
    model = SingleModalityClassifier(spec, experiment.info.num_classes, model_cfg.encoder, model_cfg.classifier)
    labeled, test = experiment.labeled.with_modalities([spec.name]), experiment.test.with_modalities([spec.name])
    h = train_supervised(model, labeled, supervised, derive_seed(seed, "stage2"), eval_data=test, device=device)
    return model, [h], {"parameters": {"model": count_parameters(model)}, "modality": spec.name}


def _run_cpc(
    method: MethodConfig, experiment: ExperimentData, model_cfg: ModelConfig, stage1: PretrainConfig,
    stage2: FinetuneConfig, quality_cfg: QualityConfig | None, seed: int,
    supervised: SupervisedConfig, device: torch.device,
) -> tuple[nn.Module, list[History], dict[str, Any]]:
    """CPC pretraining on the unlabeled pool, then the CPC classifier on the labeled set."""
    specs = _specs(experiment)
    if any(len(s.shape) != 2 for s in specs):
        raise ConfigError(f"cpc takes IMU (T, C) modalities only; {experiment.info.name} has "
                          f"{ {s.name: s.shape for s in specs} }", "method.name")
    cfg = CPCConfig.from_mapping(method.architecture)
    seed_everything(derive_seed(seed, "model"))
    cpc = CPCModel(specs, cfg)
    h1 = pretrain(cpc, cpc_objective(), experiment.unlabeled, stage1, derive_seed(seed, "stage1"), device=device)
    seed_everything(derive_seed(seed, "classifier"))
    model = CPCClassifier(cpc, experiment.info.num_classes, cfg)
    model.freeze_encoder(method.freeze_encoder)
    h2 = train_supervised(model, experiment.labeled, supervised, derive_seed(seed, "stage2"),
                          eval_data=experiment.test, device=device)
    model.freeze_encoder(False)
    return model, [h1, h2], {"parameters": {"encoder": count_parameters(cpc), "model": count_parameters(model)}}


def _run_classical(method: MethodConfig, experiment: ExperimentData, seed: int, started: float) -> dict[str, Any]:
    """Statistical features + scikit-learn classifier on the labeled set; same result keys as the deep methods."""
    names = (str(method.modality),) if method.modality else experiment.info.modality_names
    _specs(experiment, names)
    model = ClassicalModel(names, ClassicalConfig.from_mapping(method.architecture), seed)
    model.fit(experiment.labeled)
    fitted = time.perf_counter()
    final = score_predictions(np.asarray(experiment.test.labels), model.predict(experiment.test),
                              experiment.info.num_classes)
    total = time.perf_counter() - started
    logger.info("%s seed %d: accuracy %.4f macro-F1 %.4f in %.1f s", method.label, seed, final.accuracy,
                final.macro_f1, total)
    return {
        "method": method.label,
        "seed": seed,
        "accuracy": final.accuracy,
        "macro_f1": final.macro_f1,
        "best_epoch_accuracy": final.accuracy,
        "best_epoch": None,
        "best_epoch_note": "no epochs: the classical baseline is fitted once",
        "confusion": final.confusion.tolist(),
        "class_names": list(experiment.info.class_names),
        "num_test": final.num_samples,
        "num_labeled": len(experiment.labeled),
        "num_unlabeled": len(experiment.unlabeled),
        "wall_time_s": {"fit": fitted - started, "total": total},
        "device": "cpu",
        "device_name": None,
        "history": {},
        "parameters": {"features": model.num_features},
        "modalities": list(names),
    }


def _plain(value: Any) -> Any:
    """numpy scalars/arrays and mappings to JSON-ready Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
