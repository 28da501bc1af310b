"""Stage 2 on the server side: federated, local or centralised iterative fusion fine-tuning."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid
from omegaconf import DictConfig, OmegaConf

from fedhar import keys
from fedhar.config import ExperimentConfig
from fedhar.data.experiment import ExperimentData
from fedhar.errors import ConfigError, FederationError
from fedhar.federated import build_finetune_model, feature_layout_of, state_digest
from fedhar.models import FusionClassifierModel
from fedhar.train import FinetuneConfig, derive_seed, evaluate, finetune_iterative
from fedhar.train.checkpoint import atomic_save_state
from fedhar.train.class_stats import STATS_HEADS, ClassStatsConfig, FeatureLayout, LinearFusionHead, fit_stats_head
from strategies.class_stats_round import PersonalHead, run_class_stats_round, run_personalise_round
from strategies.qom_fedavg import QoMFedAvg, check_stage, influence_bounds, parse_reply
from strategies.run_privacy import RunPrivacy
from strategies.secure_aggregation import SecureAggregation

__all__ = ["STAGE2_MODES", "run_stage2"]

logger = logging.getLogger(__name__)

#: federated: FedAvg of the classifier; lda / ccvr: a head fitted from the clients' class
#: statistics (fedhar.train.class_stats); local: each client alone; centralized: labels pooled.
STAGE2_MODES = ("federated", *STATS_HEADS, "local", "centralized")


def run_stage2(
    grid: Grid,
    cfg: DictConfig,
    exp: ExperimentConfig,
    shared: Mapping[str, Any],
    experiment: ExperimentData,
    encoders: ArrayRecord,
    prior: dict[str, float],
    num_nodes: int,
    run_dir: Path,
    mode: str | None = None,
    privacy: RunPrivacy | None = None,
    secure: SecureAggregation | None = None,
) -> dict[str, Any]:
    """Fine-tune from the stage-1 encoders in ``mode`` (default ``cfg.federation.stage2_mode``); test on the held-out subjects.

    The centralised mode trains ``federation.centralized_epochs`` epochs (``null``:
    ``stage2_rounds x stage2_local_epochs``) with ``stage2``'s optimizer and lr milestones.
    ``exp`` is the run's typed experiment config (model, stage-2 loop); ``cfg`` gives the
    ``federation`` group. ``shared`` holds the ConfigRecord entries every client message carries (``setup``,
    ``seed``, ``train-subjects``; the grid adds each node's ``norm-stats`` / ``label-share``).
    ``privacy`` (federated mode only) noises and accounts every aggregation; ``secure``
    (federated mode only) runs each aggregation as a secure sum.

    Returns
    -------
    dict
        Mode-specific details, ``final`` = ``{"accuracy", "macro_f1"}`` on the test subjects
        and, for the federated and centralised modes, ``model_file``: the final model's
        state dict in ``run_dir``.

    Raises
    ------
    ValueError
        If the mode is unknown.
    """
    fed, seed, info = cfg.federation, exp.seed, experiment.info
    mode = str(fed.stage2_mode) if mode is None else mode
    if mode not in STAGE2_MODES:
        raise ValueError(f"federation.stage2_mode must be one of {STAGE2_MODES}, got {mode!r}")
    model = build_finetune_model(info, info.modality_names, exp.model, prior, seed=derive_seed(seed, "init", "stage2"))
    state = model.state_dict()
    stage1 = encoders.to_torch_state_dict()
    state.update({k: v for k, v in stage1.items() if k.startswith(keys.ENCODER_PREFIX)})
    model.load_state_dict(state)
    config = ConfigRecord({**shared, keys.FREEZE_ENCODERS: bool(fed.get("stage2_freeze_encoders", False)),
                           **{f"{keys.QOM_PRIOR_PREFIX}{m}": float(w) for m, w in prior.items()}})
    job = _Job(grid, cfg, exp, experiment, model, config, prior, num_nodes, run_dir, privacy, secure)
    if mode in STATS_HEADS:
        return _run_stats_head(job, mode)
    return {"centralized": _run_centralized, "local": _run_local, "federated": _run_federated}[mode](job)


@dataclass(frozen=True)
class _Job:
    """What every stage-2 mode works from: the run's grid and config, the data, the model with stage-1 encoders."""

    grid: Grid
    cfg: DictConfig
    exp: ExperimentConfig
    experiment: ExperimentData
    model: FusionClassifierModel
    config: ConfigRecord
    prior: dict[str, float]
    num_nodes: int
    run_dir: Path
    privacy: RunPrivacy | None
    secure: SecureAggregation | None

    @property
    def budget(self) -> int:
        """Stage-2 epochs of a client-side or centralised fine-tuning: rounds x local epochs."""
        return int(self.cfg.federation.stage2_rounds) * int(self.cfg.federation.stage2_local_epochs)

    def finetune_config(self) -> FinetuneConfig:
        """The ``stage2`` group as :class:`FinetuneConfig` (no progress bar on the server)."""
        return replace(self.exp.stage2, progress=False)

    def save_final(self, mode: str, state: Mapping[str, torch.Tensor]) -> str:
        """Write the mode's final model into the run folder; its file name."""
        model_file = f"stage2-{mode}-final.pt"
        atomic_save_state(state, self.run_dir / model_file)
        return model_file


def _run_centralized(job: _Job) -> dict[str, Any]:
    """Cosmo's stage 2: the labeled rows pooled on the server (a reference; labels leave the clients)."""
    fed, labeled = job.cfg.federation, job.experiment.labeled
    epochs = job.budget if fed.get("centralized_epochs") is None else int(fed.centralized_epochs)
    finetune_iterative(job.model, labeled, job.finetune_config().with_epochs(epochs),
                       seed=derive_seed(int(job.cfg.seed), "stage2", "centralized"), progress=False)
    return {"mode": "centralized", "epochs": epochs, "num_labeled": len(labeled),
            "final": _test(job.model, job.experiment), "weights_sha256": state_digest(job.model.state_dict()),
            "model_file": job.save_final("centralized", job.model.state_dict())}


def _run_local(job: _Job) -> dict[str, Any]:
    """Each client fine-tunes alone on its own labels; every client's model is tested on the held-out subjects."""
    fed, info = job.cfg.federation, job.experiment.info
    job.config[keys.LOCAL_EPOCHS] = job.budget
    strategy = QoMFedAvg(stage="finetune", min_train_nodes=job.num_nodes, min_available_nodes=job.num_nodes)
    replies = job.grid.send_and_receive(
        strategy.configure_train(1, ArrayRecord(job.model.state_dict()), job.config, job.grid),
        timeout=float(fed.round_timeout_s))
    clients: dict[str, dict[str, float]] = {}
    for msg in replies:
        update, reason = (None, msg.error.reason) if msg.has_error() else parse_reply(msg)
        if update is None:
            logger.warning("stage 2 local: node %d failed: %s", msg.metadata.src_node_id, reason)
            continue
        own = build_finetune_model(info, update.modalities, job.exp.model, job.prior)
        own.load_state_dict({k: torch.from_numpy(v) for k, v in update.arrays.items()
                             if k in own.state_dict()}, strict=True)
        metrics = msg.content[keys.METRICS]
        clients[update.client_id] = {**_test(own, job.experiment, update.modalities),
                                     "own_accuracy": float(metrics.get(keys.ACCURACY, float("nan")))}  # type: ignore[arg-type]
    if not clients:
        raise FederationError("no client replied; see the log for each node's error", "stage 2 local")
    mean = {k: sum(c[k] for c in clients.values()) / len(clients) for k in ("accuracy", "macro_f1", "own_accuracy")}
    return {"mode": "local", "epochs": job.budget, "clients": clients, "mean": mean,
            "final": {"accuracy": mean["accuracy"], "macro_f1": mean["macro_f1"]}}


def _run_federated(job: _Job) -> dict[str, Any]:
    """FedAvg (QoM-weighted, bounded, optionally DP) of the fusion classifier over ``stage2_rounds`` rounds."""
    fed, cfg, model, num_nodes = job.cfg.federation, job.cfg, job.model, job.num_nodes
    job.config[keys.LOCAL_EPOCHS] = int(fed.stage2_local_epochs)
    strategy = QoMFedAvg(stage="finetune", weighting=cfg.strategy.weighting, max_examples=cfg.strategy.max_examples,
                         bounds=influence_bounds(cfg.strategy), min_valid_replies=int(fed.min_valid_replies),
                         known_examples={s: p.num_labeled for s, p in job.experiment.partitions.items()},
                         fraction_train=float(fed.fraction_train),
                         fraction_evaluate=1.0 if fed.client_eval else 0.0,
                         min_train_nodes=num_nodes, min_evaluate_nodes=num_nodes, min_available_nodes=num_nodes,
                         privacy=job.privacy, secure=job.secure)
    rounds = int(fed.stage2_rounds)
    times: list[float] = []

    def central(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        times.append(time.perf_counter())
        model.load_state_dict(arrays.to_torch_state_dict())
        if server_round > 0:
            atomic_save_state(model.state_dict(), job.run_dir / f"stage2-round{server_round:03d}.pt")
        if server_round % int(fed.eval_every) and server_round != rounds:
            return None
        result = _test(model, job.experiment)
        logger.info("stage 2 round %d: test accuracy %.3f, macro-F1 %.3f", server_round, result["accuracy"],
                    result["macro_f1"])
        return MetricRecord({keys.ACCURACY: result["accuracy"], keys.MACRO_F1: result["macro_f1"]})

    result = strategy.start(grid=job.grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=rounds,
                            timeout=float(fed.round_timeout_s), train_config=job.config,
                            evaluate_config=job.config, evaluate_fn=central)
    check_stage("stage 2 federated", strategy, rounds)
    final = result.evaluate_metrics_serverapp[rounds]
    return {
        "mode": "federated",
        "rounds": {int(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "client_eval": {int(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        "central": {int(r): dict(m) for r, m in result.evaluate_metrics_serverapp.items()},
        "round_wall_s": [b - a for a, b in itertools.pairwise(times)],
        "failed_rounds": {str(r): reason for r, reason in strategy.failed_rounds.items()},
        "client_weights": {str(r): w for r, w in strategy.client_weights.items()},
        "bytes_down_per_client_round": strategy.bytes_sent / max(1, rounds * num_nodes),
        "bytes_up_per_client_round": strategy.bytes_received / max(1, rounds * num_nodes),
        "final": {"accuracy": float(final[keys.ACCURACY]), "macro_f1": float(final[keys.MACRO_F1])},  # type: ignore[arg-type]
        "weights_sha256": state_digest(result.arrays.to_torch_state_dict()),
        "model_file": job.save_final("federated", result.arrays.to_torch_state_dict()),
        "secure_aggregation": ({str(r): v for r, v in strategy.secure_rounds.items()} if job.secure is not None
                               else None),
    }


def _run_stats_head(job: _Job, mode: str) -> dict[str, Any]:
    """One class-statistics round, then the ``mode`` head fitted on the server from the merged statistics.

    Clients encode ``class_stats.passes`` augmented copies of each row when stage 2 augments,
    else only the clean rows.
    """
    grid, cfg, experiment, model, config = job.grid, job.cfg, job.experiment, job.model, job.config
    fed, info = cfg.federation, experiment.info
    augmented = job.finetune_config().augment.enabled
    stats_cfg = ClassStatsConfig.from_mapping(OmegaConf.to_container(fed.class_stats, resolve=True))  # type: ignore[arg-type]
    layout = feature_layout_of(info, job.exp.model)
    dim = sum(s * f for _, s, f in layout)
    if dim > stats_cfg.max_dim:
        raise ConfigError(f"stage 2 {mode}: {dim} flattened features exceed federation.class_stats.max_dim "
                          f"{stats_cfg.max_dim} (a {dim} x {dim} scatter matrix per client); use model=compact or "
                          "another stage2_mode", "federation.class_stats.max_dim")
    passes = stats_cfg.passes if augmented else 0
    config[keys.CLASS_STATS_PASSES] = passes
    labeled = {s: np.bincount(p.labeled.labels, minlength=info.num_classes) for s, p in experiment.partitions.items()}
    started = time.perf_counter()
    merged = run_class_stats_round(grid, config, ArrayRecord(model.state_dict()), labeled, passes, dim,
                                   float(fed.round_timeout_s), secure=job.secure)
    fitted = fit_stats_head(model, merged.stats, layout, mode, stats_cfg, seed=derive_seed(int(cfg.seed), "stage2", mode))
    final = _test(fitted, experiment)
    logger.info("stage 2 %s: test accuracy %.3f, macro-F1 %.3f", mode, final["accuracy"], final["macro_f1"])
    model_file = job.save_final(mode, fitted.state_dict())
    extra: dict[str, Any] = {}
    if mode == "lda" and stats_cfg.personalise:
        config[keys.SHRINKAGE] = float(stats_cfg.shrinkage)
        config[keys.PERSONAL_STRENGTH] = float(stats_cfg.personal_strength * (1 + passes))
        heads, rejected = run_personalise_round(grid, config, ArrayRecord(model.state_dict()), merged.stats,
                                                tuple(experiment.partitions), float(fed.round_timeout_s))
        extra["personalised"] = _personal_summary(heads, rejected, fitted, layout, experiment, final)
    return {"mode": mode, **extra, "class_stats": {**merged.summary(), "passes": passes}, "feature_dim": dim, "wall_s": time.perf_counter() - started,
            "bytes_down_per_client_round": float(sum(v.numel() * v.element_size() for v in model.state_dict().values())),
            "bytes_up_per_client_round": merged.bytes_up_per_client,
            "final": final, "weights_sha256": state_digest(fitted.state_dict()), "model_file": model_file}


def _personal_summary(heads: list[PersonalHead], rejected: dict[int, str], fitted: FusionClassifierModel,
                      layout: FeatureLayout, experiment: ExperimentData, final: dict[str, float]) -> dict[str, Any]:
    """Per client: the global and the personal head on its own held-out rows (as it reported) and on the test subjects."""
    clients: dict[str, dict[str, float]] = {}
    for head in heads:
        personal = LinearFusionHead(layout, experiment.info.num_classes)
        personal.linear.load_state_dict({"weight": torch.from_numpy(head.weight), "bias": torch.from_numpy(head.bias)})
        test = _test(FusionClassifierModel(fitted.encoders, personal), experiment)
        clients[f"subject-{head.subject}"] = {
            **{f"own_{name.replace('-', '_')}": v for name, v in head.own.items()},
            "test_accuracy_global": final["accuracy"], "test_accuracy_personal": test["accuracy"],
            "test_macro_f1_global": final["macro_f1"], "test_macro_f1_personal": test["macro_f1"]}
    names = sorted({k for c in clients.values() for k in c})
    mean = {k: float(np.mean([c[k] for c in clients.values() if k in c])) for k in names}
    for name in sorted(m for m in mean if m.endswith("_personal")):
        logger.info("personalised lda: mean %s %.3f (global head %.3f)", name, mean[name],
                    mean[name.replace("_personal", "_global")])
    return {"clients": clients, "mean": mean, "num_rejected": len(rejected),
            "rejected": {str(n): r for n, r in rejected.items()}}


def _test(model: torch.nn.Module, experiment: ExperimentData, modalities: tuple[str, ...] | None = None) -> dict[str, float]:
    """Accuracy and macro-F1 on the held-out test subjects (only ``modalities`` fed, if given)."""
    test = experiment.test if modalities is None else experiment.test.with_modalities(modalities)
    result = evaluate(model, test)
    return {"accuracy": float(result.accuracy), "macro_f1": float(result.macro_f1)}
