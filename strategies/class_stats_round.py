"""Class-statistics round of stage 2 (``lda`` / ``ccvr``): query, validate and merge each node's feature statistics.

Each node replies an ArrayRecord ``class-stats`` (:class:`fedhar.train.class_stats.ClassFeatureStats`:
``counts``, ``sums``, ``scatter``) and a MetricRecord ``metrics`` with its ``subject-id``. The
server knows every training subject's labeled rows per class, so a reply whose counts are not
exactly ``(1 + passes)`` times those, whose shapes or values are malformed, whose subject is not
a training subject or has replied already, is rejected and logged with its node id. The round
fails only if no valid reply remains. With secure aggregation the nodes' statistics are
summed by SecAgg+ and only the sum is checked (its counts against the label split).

Personalisation (after the ``lda`` head, ``federation.class_stats.personalise``): the server
sends the merged statistics; each client replies its personal head (``personal-head``:
``weight`` (K, D), ``bias`` (K,)) and the accuracy of the global and the personal head on its
own held-out rows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.errors import FederationError
from fedhar.secure_sum import unpack_class_stats
from fedhar.train import derive_seed
from fedhar.train.class_stats import ClassFeatureStats, check_class_stats
from strategies.secure_aggregation import SecureAggregation, SecureRound

__all__ = [
    "MESSAGE_TYPE",
    "PERSONALISE_MESSAGE_TYPE",
    "ClassStatsRoundResult",
    "PersonalHead",
    "parse_class_stats_reply",
    "run_class_stats_round",
    "run_personalise_round",
]

logger = logging.getLogger(__name__)

MESSAGE_TYPE = f"{MessageType.QUERY}.{keys.CLASS_STATS_ACTION}"


@dataclass(frozen=True)
class ClassStatsRoundResult:
    """The merged statistics and what happened to each reply.

    Parameters
    ----------
    stats
        Sum of the accepted replies' statistics.
    subjects
        The subjects merged, ascending.
    rejected
        Node id -> why its reply was rejected (error replies and timeouts included).
    bytes_up_per_client
        Mean bytes of an accepted reply's arrays.
    """

    stats: ClassFeatureStats
    subjects: tuple[int, ...]
    rejected: dict[int, str] = field(default_factory=dict)
    bytes_up_per_client: float = 0.0

    def summary(self) -> dict[str, Any]:
        """For results.json."""
        return {"subjects": list(self.subjects), "num_merged": len(self.subjects), "num_rejected": len(self.rejected),
                "rejected": {str(n): r for n, r in self.rejected.items()},
                "bytes_up_per_client": self.bytes_up_per_client, "rows_per_class": self.stats.counts.tolist()}


def parse_class_stats_reply(msg: Message) -> tuple[int | None, ClassFeatureStats | None, str | None]:
    """A reply's subject and statistics, or the reason it is malformed."""
    content = msg.content
    if keys.CLASS_STATS not in content.array_records:
        return None, None, f"expected an ArrayRecord {keys.CLASS_STATS!r}, got {list(content.array_records)}"
    if keys.METRICS not in content.metric_records:
        return None, None, f"expected a MetricRecord {keys.METRICS!r}, got {list(content.metric_records)}"
    subject = content.metric_records[keys.METRICS].get(keys.SUBJECT)
    if not isinstance(subject, int) or isinstance(subject, bool):
        return None, None, f"metric {keys.SUBJECT!r} must be an integer, got {subject!r}"
    try:
        arrays = {k: v.numpy() for k, v in content.array_records[keys.CLASS_STATS].items()}
        return subject, ClassFeatureStats.from_arrays(arrays), None
    except (TypeError, ValueError, OSError) as err:
        return subject, None, str(err)


def run_class_stats_round(
    grid: Grid,
    config: ConfigRecord,
    arrays: ArrayRecord,
    labeled_counts: Mapping[int, np.ndarray],
    passes: int,
    dim: int,
    timeout: float,
    secure: SecureAggregation | None = None,
) -> ClassStatsRoundResult:
    """Ask every connected node for its class statistics under ``arrays``' encoders; validate; merge.

    With ``secure`` the statistics are summed by secure aggregation (:func:`_secure_round`):
    the server learns only the merged statistics.

    Parameters
    ----------
    grid
        The run's grid.
    config
        Sent to every node (the shared entries plus ``class-stats-passes``).
    arrays
        The global model (the nodes load their modalities' encoders from it).
    labeled_counts
        Training subject -> labeled rows per class, as the server's label split has them.
    passes
        Augmented passes per row the nodes were asked for.
    dim
        The flattened feature size of the model.
    timeout
        Seconds to wait for the replies.

    Raises
    ------
    FederationError
        If no reply is valid.
    """
    node_ids = sorted(grid.get_node_ids())
    messages = [Message(content=RecordDict({keys.CONFIG: config, keys.ARRAYS: arrays}), dst_node_id=node,
                        message_type=MESSAGE_TYPE) for node in node_ids]
    if secure is not None:
        return _secure_round(grid, messages, labeled_counts, passes, timeout, secure)
    replies = grid.send_and_receive(messages, timeout=timeout)
    accepted: dict[int, ClassFeatureStats] = {}
    rejected: dict[int, str] = {}
    sizes: list[int] = []
    for msg in replies:
        node = msg.metadata.src_node_id
        subject, stats, reason = (None, None, f"error reply: {msg.error.reason}") if msg.has_error() \
            else parse_class_stats_reply(msg)
        if stats is not None and subject is not None:
            if subject not in labeled_counts:
                reason = f"subject {subject} is not a training subject {sorted(labeled_counts)}"
            elif subject in accepted:
                reason = f"subject {subject} already replied"
            else:
                reason = check_class_stats(stats, labeled_counts[subject], passes, dim)
        if stats is None or subject is None or reason is not None:
            rejected[node] = str(reason)
            logger.warning("class-statistics round: rejected the reply of node %d: %s", node, reason)
            continue
        accepted[subject] = stats
        sizes.append(sum(a.nbytes for a in stats.to_arrays().values()))
    for node in sorted(set(node_ids) - {m.metadata.src_node_id for m in replies}):
        rejected[node] = f"no reply within {timeout:g} s"
        logger.warning("class-statistics round: node %d did not reply within %g s", node, timeout)
    if not accepted:
        raise FederationError(f"no valid reply in the class-statistics round from nodes {node_ids}; see the log for "
                              "each node's reason", "stage 2 class statistics")
    subjects = tuple(sorted(accepted))
    logger.info("class-statistics round: merged subjects %s, rejected %d", list(subjects), len(rejected))
    return ClassStatsRoundResult(ClassFeatureStats.merge([accepted[s] for s in subjects]), subjects, rejected,
                                 float(np.mean(sizes)))


def _secure_round(grid: Grid, messages: list[Message], labeled_counts: Mapping[int, np.ndarray], passes: int,
                  timeout: float, secure: SecureAggregation) -> ClassStatsRoundResult:
    """The class-statistics round as a secure sum: each node scales its statistics into the fixed-point range.

    The row scale is the most rows any node holds (the server knows every subject's labeled
    counts); the summed counts must equal those of the nodes summed.
    """
    rows = {node: (1 + passes) * float(np.sum(labeled_counts[s])) for node, s in secure.node_subjects.items()
            if s in labeled_counts}
    scale = max(rows.values(), default=1.0) or 1.0
    record = ConfigRecord({keys.ROW_SCALE: float(scale), keys.FEATURE_CLIP: float(secure.cfg.feature_clip)})
    for msg in messages:
        msg.content[keys.SECAGG_CLASS_STATS] = record
    protocol = SecureRound(secure.cfg, secure.timeout_s, derive_seed(secure.seed, "secagg", "class-stats"))
    collect = protocol.open(grid, messages)
    replies = list(grid.send_and_receive(collect, timeout=timeout))
    total, count = protocol.close(grid, replies, secure.impostors(replies))
    subjects = tuple(sorted(secure.node_subjects[n] for n in protocol.active))
    expected = (1 + passes) * np.sum([np.asarray(labeled_counts[s], np.float64) for s in subjects], axis=0)
    try:
        stats = unpack_class_stats(total, scale, secure.cfg.feature_clip, secure.cfg.clipping_range, expected, count)
    except ValueError as err:
        raise FederationError(f"secure class-statistics round: {err}", "stage 2 class statistics") from err
    dropped = {int(n): why for n, why in protocol.dropped.items()}
    logger.info("class-statistics round (secure aggregation): merged subjects %s, dropped %d", list(subjects),
                len(dropped))
    return ClassStatsRoundResult(stats, subjects, dropped, protocol.bytes_received / max(1, len(subjects)))


PERSONALISE_MESSAGE_TYPE = f"{MessageType.QUERY}.{keys.PERSONALISE_ACTION}"


@dataclass(frozen=True)
class PersonalHead:
    """One client's personal lda head and what it reported about its own held-out rows."""

    subject: int
    weight: np.ndarray
    bias: np.ndarray
    own: dict[str, float]


def run_personalise_round(
    grid: Grid,
    config: ConfigRecord,
    arrays: ArrayRecord,
    global_stats: ClassFeatureStats,
    train_subjects: tuple[int, ...],
    timeout: float,
) -> tuple[list[PersonalHead], dict[int, str]]:
    """Send the merged statistics; collect each client's personal head and own-row accuracies.

    A reply is rejected (and logged with its node id) when its head has the wrong shape or
    non-finite values, its accuracies lie outside [0, 1], or its subject is unknown or repeated.
    """
    node_ids = sorted(grid.get_node_ids())
    stats_record = ArrayRecord({k: Array(v) for k, v in global_stats.to_arrays().items()})
    messages = [Message(content=RecordDict({keys.CONFIG: config, keys.ARRAYS: arrays, keys.GLOBAL_STATS: stats_record}),
                        dst_node_id=node, message_type=PERSONALISE_MESSAGE_TYPE) for node in node_ids]
    heads: dict[int, PersonalHead] = {}
    rejected: dict[int, str] = {}
    k, d = global_stats.num_classes, global_stats.dim
    for msg in grid.send_and_receive(messages, timeout=timeout):
        node = msg.metadata.src_node_id
        head, reason = (None, f"error reply: {msg.error.reason}") if msg.has_error() else _parse_head(msg, k, d)
        if head is not None and head.subject not in train_subjects:
            reason = f"subject {head.subject} is not a training subject {list(train_subjects)}"
        elif head is not None and head.subject in heads:
            reason = f"subject {head.subject} already replied"
        if head is None or reason is not None:
            rejected[node] = str(reason)
            logger.warning("personalisation round: rejected the reply of node %d: %s", node, reason)
            continue
        heads[head.subject] = head
    return [heads[s] for s in sorted(heads)], rejected


def _parse_head(msg: Message, k: int, d: int) -> tuple[PersonalHead | None, str | None]:
    content = msg.content
    if keys.PERSONAL_HEAD not in content.array_records or keys.METRICS not in content.metric_records:
        return None, f"expected records {keys.PERSONAL_HEAD!r} and {keys.METRICS!r}, got {list(content.keys())}"
    metrics = content.metric_records[keys.METRICS]
    subject = metrics.get(keys.SUBJECT)
    if not isinstance(subject, int) or isinstance(subject, bool):
        return None, f"metric {keys.SUBJECT!r} must be an integer, got {subject!r}"
    record = content.array_records[keys.PERSONAL_HEAD]
    if set(record) != {"weight", "bias"}:
        return None, f"expected arrays weight, bias; got {sorted(record)}"
    weight, bias = record["weight"].numpy(), record["bias"].numpy()
    if weight.shape != (k, d) or bias.shape != (k,):
        return None, f"head of shape {weight.shape}, {bias.shape}, expected ({k}, {d}), ({k},)"
    if not (np.isfinite(weight).all() and np.isfinite(bias[bias > -1e8]).all()):
        return None, "head weights must be finite"
    own = {str(name): float(v) for name, v in metrics.items() if name.startswith((keys.ACCURACY, keys.MACRO_F1))}  # type: ignore[arg-type]
    if any(not 0.0 <= v <= 1.0 for v in own.values()):
        return None, f"own-row metrics outside [0, 1]: {own}"
    return PersonalHead(int(subject), weight, bias, own), None
