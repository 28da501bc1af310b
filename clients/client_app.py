"""ClientApp: one Flower node = one subject; Message -> typed settings -> fedhar call -> Message.

A node reads only its own subject's files (deployment: node-config ``data-path`` holds just
them). Normalisation round (``query.norm_stats``, before stage 1): the node replies the
sufficient statistics (count, sum, sum of squares per channel) and per-class row counts of
its training rows; every later message carries the server's merged statistics and the
node's own share of the label split, with which it normalises its rows and picks its
labeled ones (``fedhar.data.federation``). Simulation runs the same path. The training
policy of each round is :mod:`fedhar.train.local`; a handler here turns the Message into
typed settings, calls it and turns the result into the reply.

Stage 1 (``train.pretrain``): contrastive fusion pretraining of the global encoders and
heads of the modalities the subject's device has, on its unlabeled pool. A client with a
single modality cannot form fused views; it trains with the unimodal SimCLR objective on
augmented windows instead (``fedhar.losses.cosmo_or_unimodal_objective``), so it still
improves its modality's encoder. Stage 2 (``train.finetune``): iterative fusion
fine-tuning on its own labeled rows with the global QoM prior; or (``query.class_stats``)
per-class statistics of its labeled rows' features under the global encoders, from which
the server fits the head. ``evaluate``: accuracy on
its own rows that it did not train on (its unlabeled pool, whose labels the dataset has).
Both train handlers run under :func:`clients.secure_aggregation.secure_aggregation_mod`:
when the server runs secure aggregation, the node answers its key stages and masks what
it trained; otherwise the mod passes the message through.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients.secure_aggregation import secure_aggregation_mod
from clients.settings import ClientSettings, parse_config
from fedhar import keys
from fedhar.data.dataset import HARDataset
from fedhar.data.federation import build_client_partition, subject_modalities, summarize_subject
from fedhar.data.loading import load_dataset
from fedhar.data.partition import ClientPartition, partition_ids
from fedhar.errors import ConfigError
from fedhar.federated import build_finetune_model, feature_layout_of
from fedhar.models import FusionClassifierModel
from fedhar.quality import compute_client_qom
from fedhar.secure_sum import moments_contribution
from fedhar.train import (
    derive_seed,
    evaluate,
    resolve_device,
)
from fedhar.train.class_stats import ClassFeatureStats, class_feature_stats, fit_lda_head, fit_personal_lda_head
from fedhar.train.local import load_global, local_finetune, local_pretrain

__all__ = ["app", "load_own_dataset", "load_partition", "resolve_subject"]

logger = logging.getLogger(__name__)

app = ClientApp()


@dataclass(frozen=True)
class _Local:
    """A client's view of the run: its settings, subject and data."""

    settings: ClientSettings
    partition: ClientPartition
    num_classes: int


def resolve_subject(context: Context, train_subjects: tuple[int, ...]) -> int:
    """The subject this node plays.

    Deployment: node-config ``subject-id``. Simulation: ``partition-id`` indexes the
    protocol's training subjects in ascending order.

    Raises
    ------
    ConfigError
        If neither key is set, the id is not a training subject / a valid partition, or the
        server sent no training subjects.
    """
    if not train_subjects:
        raise ConfigError(f"the ConfigRecord lacks {keys.TRAIN_SUBJECTS!r}; is the ServerApp from the same fedhar "
                          "version?", keys.TRAIN_SUBJECTS)
    node_config = context.node_config
    if keys.SUBJECT_ID in node_config:
        subject = int(node_config[keys.SUBJECT_ID])  # type: ignore[arg-type]
        if subject not in train_subjects:
            raise ConfigError(f"subject {subject} is not a training subject {list(train_subjects)}", keys.SUBJECT_ID)
        return subject
    if keys.PARTITION_ID in node_config:
        mapping = partition_ids(train_subjects)
        pid = int(node_config[keys.PARTITION_ID])  # type: ignore[arg-type]
        if pid not in mapping:
            raise ConfigError(f"partition {pid} out of range: {len(mapping)} training subjects; run with "
                              f"num-supernodes={len(mapping)}", keys.PARTITION_ID)
        return mapping[pid]
    raise ConfigError(f"node config has neither {keys.SUBJECT_ID!r} nor {keys.PARTITION_ID!r}", "node-config")


def load_own_dataset(context: Context, settings: ClientSettings, subject: int) -> HARDataset:
    """This node's subject's rows, un-normalised, read through the data layer's disk cache.

    Only the subject's own files are read (a device holds nothing else); node-config
    ``data-path`` overrides the dataset root in deployment.
    """
    cfg = settings.dataset
    if keys.DATA_PATH in context.node_config:
        cfg = replace(cfg, root=Path(str(context.node_config[keys.DATA_PATH])))
    return load_dataset(cfg, subjects=(subject,))


def load_partition(context: Context, settings: ClientSettings) -> _Local:
    """This node's partition: its own rows, its share of the label split, normalised with the merged statistics.

    Raises
    ------
    ConfigError
        If the message lacks the normalisation round's results (see :func:`resolve_subject`
        and :func:`fedhar.data.federation.build_client_partition` for the other cases).
    """
    subject = resolve_subject(context, settings.train_subjects)
    if settings.federation is None:
        raise ConfigError(f"the ConfigRecord lacks {keys.NORM_STATS!r} / {keys.LABEL_SHARE!r}: the ServerApp must "
                          f"run the normalisation round (query.{keys.NORM_STATS_ACTION}) before training",
                          keys.NORM_STATS)
    dataset = load_own_dataset(context, settings, subject)
    partition = build_client_partition(dataset, settings.dataset, subject, settings.federation)
    return _Local(settings, partition, dataset.info.num_classes)


def node_device(context: Context) -> torch.device:
    """The torch device of this node: node config ``device`` (cpu when absent; cuda on a Jetson).

    Raises
    ------
    ConfigError
        If the value is unknown or names a CUDA device this node does not have.
    """
    return resolve_device(str(context.node_config.get(keys.DEVICE, "cpu")))


def _setup(msg: Message, context: Context) -> _Local:
    return load_partition(context, parse_config(msg.content.config_records[keys.CONFIG]))


def _global_arrays(msg: Message) -> dict[str, np.ndarray]:
    """The global arrays of a train / query / evaluate message."""
    return {k: v.numpy() for k, v in msg.content.array_records[keys.ARRAYS].items()}


def _qom(local: _Local, context: Context, model: torch.nn.Module | None = None) -> dict[str, float]:
    """This client's QoM per modality in [0, 1]: computed once, then read from ``context.state``.

    Sent is ``q_j / max_score`` (``q_j = H_j / c_j``, see ``quality.cluster_penalty``):
    divided by the largest possible score, so it lies in [0, 1] and stays comparable
    across clients (unlike the per-client normalised weights, which give a single-modality
    client 1 for any quality).
    """
    if keys.STATE_QOM in context.state.metric_records:
        return {k: float(v) for k, v in context.state.metric_records[keys.STATE_QOM].items()}  # type: ignore[arg-type]
    cfg = local.settings.quality
    data = local.partition.unlabeled
    result = compute_client_qom(dict(data.data), local.num_classes, cfg, model=model, device=node_device(context))
    scores = result.bounded_scores(cfg)
    context.state[keys.STATE_QOM] = MetricRecord(scores)  # type: ignore[arg-type]
    logger.info("subject %d: QoM %s (Hopkins %s, clusters %s)", local.partition.subject, scores,
                dict(result.hopkins), dict(result.clusters))
    return scores


def _reply(msg: Message, model: torch.nn.Module, metrics: dict[str, float | int],
           local: _Local | None = None) -> Message:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if local is not None and local.settings.attack.subject == local.partition.subject:
        received = msg.content.array_records[keys.ARRAYS]
        state = local.settings.attack.apply(local.partition.subject, state,
                                            {k: torch.from_numpy(np.array(received[k].numpy())) for k in state})
        logger.warning("subject %d: injected %s attack (x%g)", local.partition.subject, local.settings.attack.kind,
                       local.settings.attack.factor)
    content = RecordDict({keys.ARRAYS: ArrayRecord(state), keys.METRICS: MetricRecord(metrics)})  # type: ignore[arg-type]
    return Message(content=content, reply_to=msg)


def _maybe_fail(settings: ClientSettings, subject: int) -> None:
    """Simulated failure of this round (``federation.inject_failures``): raise, or hang past the timeout (hang, drop)."""
    if not settings.failures.fails(subject, settings.stage, settings.server_round):
        return
    logger.warning("subject %d: injected %s failure in %s round %d", subject, settings.failures.kind, settings.stage,
                   settings.server_round)
    if settings.failures.kind in ("hang", "drop"):
        time.sleep(settings.failures.hang_s)
    raise RuntimeError(f"injected failure (subject {subject}, {settings.stage} round {settings.server_round})")


def _client_seed(settings: ClientSettings, subject: int) -> int:
    return derive_seed(settings.seed, "client", subject, settings.stage, settings.server_round)


@app.query(keys.NORM_STATS_ACTION, mods=[secure_aggregation_mod])
def query_norm_stats(msg: Message, context: Context) -> Message:
    """Normalisation round: moments and per-class row counts of this subject's training rows (its modalities).

    Under secure aggregation the server asks twice: first for the census alone (``census-only``:
    class counts and value counts), then, in the protocol's collect stage (a ``secagg-moments``
    record), for the moments of values clipped to ``dataset.value_bounds``, scaled into the
    fixed-point range; the client mod masks them.
    """
    config = msg.content.config_records[keys.CONFIG]
    settings = parse_config(config)
    subject = resolve_subject(context, settings.train_subjects)
    dataset = load_own_dataset(context, settings, subject)
    modalities = subject_modalities(dataset, settings.dataset, subject)
    metrics = MetricRecord({keys.SUBJECT: subject})
    secure = msg.content.config_records.get(keys.SECAGG_MOMENTS)
    if secure is not None:
        row_scale = secure.get(keys.ROW_SCALE)
        if not isinstance(row_scale, float):
            raise ConfigError(f"{keys.SECAGG_MOMENTS!r} lacks a float {keys.ROW_SCALE!r}", keys.SECAGG_MOMENTS)
        info = dataset.info
        bounds = settings.dataset.bounds_of(info.modalities)
        summary = summarize_subject(dataset, subject, modalities, bounds)
        per_row = {m.name: m.values_per_channel for m in info.modalities}
        # In [-1, 1]: the client mod multiplies by the protocol's clipping range before masking.
        vector = moments_contribution(summary.stats, info.modality_names, per_row, bounds, row_scale, 1.0)
        arrays = ArrayRecord({f"{i:05d}": Array(v) for i, v in enumerate(vector)})
        logger.info("subject %d: secure moments of %d rows, modalities %s", subject, int(summary.class_counts.sum()),
                    list(modalities))
        return Message(content=RecordDict({keys.MOMENTS_CONTRIBUTION: arrays, keys.METRICS: metrics}), reply_to=msg)
    summary = summarize_subject(dataset, subject, modalities)
    census_only = bool(config.get(keys.CENSUS_ONLY, False))
    report = summary.census.to_arrays() if census_only else summary.to_arrays()
    metrics[keys.NUM_EXAMPLES] = int(summary.class_counts.sum())
    logger.info("subject %d: sent %s of %d rows, modalities %s", subject, "the census" if census_only else "statistics",
                int(summary.class_counts.sum()), list(modalities))
    return Message(content=RecordDict({keys.NORM_STATS: ArrayRecord({k: Array(v) for k, v in report.items()}),
                                       keys.METRICS: metrics}), reply_to=msg)


@app.train("pretrain", mods=[secure_aggregation_mod])
def train_pretrain(msg: Message, context: Context) -> Message:
    """Stage 1: local contrastive fusion (or unimodal) pretraining of the global encoders and heads."""
    local = _setup(msg, context)
    part, settings = local.partition, local.settings
    _maybe_fail(settings, part.subject)
    result = local_pretrain(part, _global_arrays(msg), settings.model, settings.pretrain,
                            seed=_client_seed(settings, part.subject), device=node_device(context),
                            fusion_loss=settings.fusion_loss)
    model, metrics = result.model, result.metrics
    metrics.update({f"{keys.QOM_PREFIX}{m}": q for m, q in _qom(local, context, model).items()})
    return _reply(msg, model, metrics, local)


@app.train("finetune", mods=[secure_aggregation_mod])
def train_finetune(msg: Message, context: Context) -> Message:
    """Stage 2: local iterative fusion fine-tuning on the client's own labeled rows."""
    local = _setup(msg, context)
    part, settings = local.partition, local.settings
    _maybe_fail(settings, part.subject)
    result = local_finetune(part, _global_arrays(msg), settings.model, settings.finetune, settings.qom_prior,
                            settings.freeze_encoders, settings.server_round,
                            seed=_client_seed(settings, part.subject), device=node_device(context))
    model, metrics = result.model, result.metrics
    metrics.update({f"{keys.QOM_PREFIX}{m}": q for m, q in _qom(local, context).items()})
    return _reply(msg, model, metrics, local)


def _class_stats_setup(msg: Message, context: Context) -> tuple[_Local, FusionClassifierModel, ClassFeatureStats, int]:
    """This client's model (global encoders) and the class statistics of its labeled rows under them."""
    local = _setup(msg, context)
    part, settings = local.partition, local.settings
    passes = msg.content.config_records[keys.CONFIG].get(keys.CLASS_STATS_PASSES)
    if not isinstance(passes, int) or isinstance(passes, bool) or passes < 0:
        raise ConfigError(f"{keys.CLASS_STATS_PASSES!r} must be an int >= 0, got {passes!r}", keys.CLASS_STATS_PASSES)
    info = part.labeled.info
    model = build_finetune_model(info, part.modalities, settings.model)
    load_global(model, _global_arrays(msg))
    secure = msg.content.config_records.get(keys.SECAGG_CLASS_STATS)  # secure aggregation bounds the rows
    clip = secure.get(keys.FEATURE_CLIP) if secure is not None else None
    stats = class_feature_stats(model, part.labeled, feature_layout_of(info, settings.model), local.num_classes,
                                passes, settings.finetune.augment, seed=_client_seed(settings, part.subject),
                                row_clip=float(clip) if isinstance(clip, (int, float)) else None)
    return local, model, stats, passes


@app.query(keys.CLASS_STATS_ACTION, mods=[secure_aggregation_mod])
def query_class_stats(msg: Message, context: Context) -> Message:
    """Stage 2 from class statistics: per-class counts and feature sums and the scatter of its labeled rows.

    The features are the global encoders' (eval mode) on the clean rows and
    ``class-stats-passes`` augmented copies (``fedhar.train.class_stats``); no row leaves.
    """
    local, _, stats, passes = _class_stats_setup(msg, context)
    part = local.partition
    arrays = ArrayRecord({k: Array(v) for k, v in stats.to_arrays().items()})
    metrics = MetricRecord({keys.SUBJECT: part.subject, keys.NUM_EXAMPLES: part.num_labeled})
    logger.info("subject %d: sent class statistics of %d labeled rows x %d passes", part.subject, part.num_labeled,
                passes + 1)
    return Message(content=RecordDict({keys.CLASS_STATS: arrays, keys.METRICS: metrics}), reply_to=msg)


@app.query(keys.PERSONALISE_ACTION)
def query_personalise(msg: Message, context: Context) -> Message:
    """Personal lda head: the global head with class means moved towards this client's own rows.

    Replies the personal head and the accuracy of the global and the personal head on the
    client's own rows it did not train on (its unlabeled pool).
    """
    local, model, own, _ = _class_stats_setup(msg, context)
    part, config = local.partition, msg.content.config_records[keys.CONFIG]
    shrinkage, strength = config.get(keys.SHRINKAGE), config.get(keys.PERSONAL_STRENGTH)
    if not isinstance(shrinkage, float) or not isinstance(strength, float):
        raise ConfigError(f"{keys.SHRINKAGE!r} and {keys.PERSONAL_STRENGTH!r} must be floats, got {shrinkage!r}, "
                          f"{strength!r}", keys.PERSONAL_STRENGTH)
    record = msg.content.array_records[keys.GLOBAL_STATS]
    global_stats = ClassFeatureStats.from_arrays({k: v.numpy() for k, v in record.items()})
    layout = feature_layout_of(part.labeled.info, local.settings.model)
    personal = fit_personal_lda_head(global_stats, own, layout, shrinkage, strength)
    metrics: dict[str, float | int] = {keys.SUBJECT: part.subject, keys.NUM_EXAMPLES: len(part.unlabeled)}
    if len(part.unlabeled):
        device = node_device(context)
        for suffix, fitted in ((keys.OWN_SUFFIX_GLOBAL, fit_lda_head(global_stats, layout, shrinkage)),
                               (keys.OWN_SUFFIX_PERSONAL, personal)):
            result = evaluate(FusionClassifierModel(model.encoders, fitted), part.unlabeled, device=device)
            metrics[keys.ACCURACY + suffix] = float(result.accuracy)
            metrics[keys.MACRO_F1 + suffix] = float(result.macro_f1)
    head = ArrayRecord({"weight": Array(personal.linear.weight.detach().numpy()),
                        "bias": Array(personal.linear.bias.detach().numpy())})
    content = RecordDict({keys.PERSONAL_HEAD: head, keys.METRICS: MetricRecord(metrics)})  # type: ignore[arg-type]
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_own(msg: Message, context: Context) -> Message:
    """Accuracy of the global fusion classifier on the client's rows it never trained on."""
    local = _setup(msg, context)
    part, settings = local.partition, local.settings
    model = build_finetune_model(part.labeled.info, part.modalities, settings.model, settings.qom_prior)
    load_global(model, _global_arrays(msg))
    result = evaluate(model, part.unlabeled, device=node_device(context))
    metrics = MetricRecord({keys.NUM_EXAMPLES: len(part.unlabeled), keys.SUBJECT: part.subject,
                            keys.ACCURACY: float(result.accuracy), keys.MACRO_F1: float(result.macro_f1)})
    return Message(content=RecordDict({keys.METRICS: metrics}), reply_to=msg)
