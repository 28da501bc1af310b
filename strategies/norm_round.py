"""Normalisation round: query every node's data summary, validate each reply, merge the valid ones.

Runs once before stage 1 (``query.norm_stats``). Each client replies an ArrayRecord
``norm-stats`` (``class-counts`` and ``<modality>.count|.sum|.sum-sq``, see
:class:`fedhar.data.federation.DataSummary`) and a MetricRecord ``metrics`` with its
``subject-id``. A malformed reply (missing record, wrong shapes, NaN, count 0, unknown
subject or modality) is rejected and logged with its node id; a subject claimed by two
nodes is a conflict that rejects both. The round fails if fewer valid replies remain than
the configured minimum (``privacy.min_merged_subjects``: with fewer subjects a client could
subtract its own statistics from the merged ones and read another subject's), or the valid
ones leave a modality without statistics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.data.dataset import DatasetInfo
from fedhar.data.federation import DataSummary, FederationData, merge_summaries, validate_summary
from fedhar.errors import FederationError

__all__ = ["MESSAGE_TYPE", "NormRoundResult", "parse_summary_reply", "run_norm_round"]

logger = logging.getLogger(__name__)

MESSAGE_TYPE = f"{MessageType.QUERY}.{keys.NORM_STATS_ACTION}"


@dataclass(frozen=True)
class NormRoundResult:
    """The merged data and what happened to each reply.

    Parameters
    ----------
    federation
        Merged statistics and class counts of the accepted replies.
    node_subjects
        Node id -> subject, for every accepted reply: the federation's members.
    rejected
        Node id -> why its reply was rejected (an error reply included).
    """

    federation: FederationData
    node_subjects: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """For results.json: subjects merged, replies rejected (node id -> reason)."""
        return {"subjects": list(self.federation.subjects), "num_merged": len(self.federation.subjects),
                "num_rejected": len(self.rejected), "rejected": {str(n): r for n, r in self.rejected.items()}}


def parse_summary_reply(msg: Message) -> tuple[DataSummary | None, str | None]:
    """Turn a reply into a :class:`DataSummary`, or give the reason it is malformed."""
    content = msg.content
    if keys.NORM_STATS not in content.array_records:
        return None, f"expected an ArrayRecord {keys.NORM_STATS!r}, got {list(content.array_records)}"
    if keys.METRICS not in content.metric_records:
        return None, f"expected a MetricRecord {keys.METRICS!r}, got {list(content.metric_records)}"
    subject = content.metric_records[keys.METRICS].get(keys.SUBJECT)
    if not isinstance(subject, int):
        return None, f"metric {keys.SUBJECT!r} must be an integer, got {subject!r}"
    try:
        arrays = {k: v.numpy() for k, v in content.array_records[keys.NORM_STATS].items()}
        return DataSummary.from_arrays(subject, arrays), None
    except (TypeError, ValueError, OSError) as err:
        return None, str(err)


def run_norm_round(
    grid: Grid, config: ConfigRecord, info: DatasetInfo, train_subjects: tuple[int, ...], timeout: float,
    min_subjects: int = 1,
) -> NormRoundResult:
    """Ask every connected node for its :class:`DataSummary`, validate, merge.

    Parameters
    ----------
    grid
        The run's grid.
    config
        Sent to every node (``setup``, ``seed``, ``train-subjects``).
    info
        Dataset metadata the replies are checked against (modalities, channels, classes).
    train_subjects
        The protocol's training subjects; a reply from another subject is rejected.
    timeout
        Seconds to wait for the replies.
    min_subjects
        Fewest valid replies whose statistics may be merged and sent back.

    Raises
    ------
    FederationError
        If fewer than ``min_subjects`` replies (or none) are valid, or no valid reply covers
        one of the dataset's modalities.
    """
    node_ids = sorted(grid.get_node_ids())
    messages = [Message(content=RecordDict({keys.CONFIG: config}), dst_node_id=node, message_type=MESSAGE_TYPE)
                for node in node_ids]
    replies = grid.send_and_receive(messages, timeout=timeout)
    valid: dict[int, DataSummary] = {}
    rejected: dict[int, str] = {}
    for msg in replies:
        node = msg.metadata.src_node_id
        summary: DataSummary | None
        reason: str | None
        if msg.has_error():
            summary, reason = None, f"error reply: {msg.error.reason}"
        else:
            summary, reason = parse_summary_reply(msg)
        if summary is not None:
            reason = validate_summary(summary, info, train_subjects)
        if summary is None or reason is not None:
            rejected[node] = str(reason)
            logger.warning("normalisation round: rejected the reply of node %d: %s", node, reason)
            continue
        valid[node] = summary
    claims: dict[int, list[int]] = {}
    for node, summary in valid.items():
        claims.setdefault(summary.subject, []).append(node)
    for subject, nodes in claims.items():
        if len(nodes) > 1:
            for node in nodes:
                rejected[node] = f"subject {subject} is claimed by nodes {sorted(nodes)}: a conflict, both rejected"
                logger.warning("normalisation round: rejected the reply of node %d: %s", node, rejected[node])
                del valid[node]
    accepted = [valid[n] for n in sorted(valid)]
    unanswered = sorted(set(node_ids) - {m.metadata.src_node_id for m in replies})
    for node in unanswered:
        rejected[node] = f"no reply within {timeout:g} s"
        logger.warning("normalisation round: node %d did not reply within %g s", node, timeout)
    if not accepted:
        raise FederationError(f"no valid reply in the normalisation round from nodes {node_ids}; see the log for "
                              "each node's reason", "normalisation round")
    if len(accepted) < min_subjects:
        raise FederationError(f"{len(accepted)} valid repl{'y' if len(accepted) == 1 else 'ies'} in the normalisation "
                              f"round (subjects {sorted(s.subject for s in accepted)}), fewer than "
                              f"privacy.min_merged_subjects={min_subjects}: merged statistics of so few subjects would "
                              "let a client read another's", "privacy.min_merged_subjects")
    federation = merge_summaries(accepted)
    unseen = [m for m in info.modality_names if m not in federation.stats.moments]
    if unseen:
        raise FederationError(f"no valid reply has statistics of modalities {unseen} (subjects "
                              f"{list(federation.subjects)} replied); they cannot be normalised", "normalisation round")
    logger.info("normalisation round: merged subjects %s, rejected %d repl%s", list(federation.subjects),
                len(rejected), "y" if len(rejected) == 1 else "ies")
    return NormRoundResult(federation, {n: s.subject for n, s in valid.items()}, rejected)
