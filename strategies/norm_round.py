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

With secure aggregation (``secure``) the server learns each node's census only (class
counts and value counts, checked as above) and the moments' sums through SecAgg+
(:func:`run_secure_moments`): each node clips its values to ``dataset.value_bounds`` and
scales its sums into the fixed-point range; the server divides the summed vector back and
checks the merged means and mean squares against the bounds. A node that drops out of the
secure round is left out of the federation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.data.dataset import DatasetInfo
from fedhar.data.federation import (
    Census,
    DataSummary,
    FederationData,
    merge_summaries,
    validate_census,
    validate_summary,
)
from fedhar.errors import FederationError
from fedhar.secure_sum import unpack_moments
from fedhar.train.seeding import derive_seed
from strategies.secure_aggregation import SecureAggregation, SecureRound

__all__ = ["MESSAGE_TYPE", "NormRoundResult", "parse_census_reply", "parse_summary_reply", "run_norm_round",
           "run_secure_moments"]

logger = logging.getLogger(__name__)

_Reply = TypeVar("_Reply", Census, DataSummary)

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
    secure_sum
        Whether the moments came as a secure sum (the server never held one subject's).
    """

    federation: FederationData
    node_subjects: dict[int, int] = field(default_factory=dict)
    rejected: dict[int, str] = field(default_factory=dict)
    secure_sum: bool = False

    def summary(self) -> dict[str, Any]:
        """For results.json: subjects merged, replies rejected (node id -> reason), whether the moments were a secure sum."""
        return {"subjects": list(self.federation.subjects), "num_merged": len(self.federation.subjects),
                "num_rejected": len(self.rejected), "rejected": {str(n): r for n, r in self.rejected.items()},
                "secure_sum": self.secure_sum}


def parse_summary_reply(msg: Message) -> tuple[DataSummary | None, str | None]:
    """Turn a reply into a :class:`DataSummary`, or give the reason it is malformed."""
    return _parse(msg, DataSummary.from_arrays)


def parse_census_reply(msg: Message) -> tuple[Census | None, str | None]:
    """Turn a census reply (``census-only``) into a :class:`Census`, or give the reason it is malformed."""
    return _parse(msg, Census.from_arrays)


def _parse(msg: Message, build: Callable[[int, dict[str, np.ndarray]], _Reply]) -> tuple[_Reply | None, str | None]:
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
        return build(subject, arrays), None
    except (TypeError, ValueError, OSError) as err:
        return None, str(err)


def run_norm_round(
    grid: Grid, config: ConfigRecord, info: DatasetInfo, train_subjects: tuple[int, ...], timeout: float,
    min_subjects: int = 1, secure: SecureAggregation | None = None, bounds: Mapping[str, np.ndarray] | None = None,
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
    secure
        Secure aggregation (its ``node_subjects`` are filled from the census): the nodes send
        a census, then their moments through :func:`run_secure_moments`.
    bounds
        With ``secure``: modality -> ``(C,)`` value bounds (``dataset.value_bounds``).

    Raises
    ------
    FederationError
        If fewer than ``min_subjects`` replies (or none) are valid, or no valid reply covers
        one of the dataset's modalities.
    """
    if secure is None:
        valid, rejected = _collect(grid, config, timeout, parse_summary_reply,
                                   lambda s: validate_summary(s, info, train_subjects))
        _check_enough(valid, min_subjects)
        federation = merge_summaries(valid.values())
        return _result(federation, valid, rejected, info)
    if bounds is None:
        raise ValueError("secure moments need the value bounds of every modality")
    census_config = ConfigRecord({**dict(config.items()), keys.CENSUS_ONLY: True})
    census, rejected = _collect(grid, census_config, timeout, parse_census_reply,
                                lambda c: validate_census(c, info, train_subjects))
    _check_enough(census, min_subjects)
    federation, dropped = run_secure_moments(grid, config, info, census, bounds, timeout,
                                             replace(secure, node_subjects={n: c.subject for n, c in census.items()}))
    rejected.update(dropped)
    kept = {n: c for n, c in census.items() if n not in dropped}
    _check_enough(kept, min_subjects)
    return replace(_result(federation, kept, rejected, info), secure_sum=True)


def _collect(grid: Grid, config: ConfigRecord, timeout: float, parse: Callable[[Message], tuple[_Reply | None, str | None]],
             validate: Callable[[_Reply], str | None]) -> tuple[dict[int, _Reply], dict[int, str]]:
    """Query every node; node -> valid reply, node -> why rejected (subjects claimed twice reject both)."""
    node_ids = sorted(grid.get_node_ids())
    messages = [Message(content=RecordDict({keys.CONFIG: config}), dst_node_id=node, message_type=MESSAGE_TYPE)
                for node in node_ids]
    replies = grid.send_and_receive(messages, timeout=timeout)
    valid: dict[int, _Reply] = {}
    rejected: dict[int, str] = {}
    for msg in replies:
        node = msg.metadata.src_node_id
        reply: _Reply | None
        reason: str | None
        if msg.has_error():
            reply, reason = None, f"error reply: {msg.error.reason}"
        else:
            reply, reason = parse(msg)
        if reply is not None:
            reason = validate(reply)
        if reply is None or reason is not None:
            rejected[node] = str(reason)
            logger.warning("normalisation round: rejected the reply of node %d: %s", node, reason)
            continue
        valid[node] = reply
    claims: dict[int, list[int]] = {}
    for node, reply in valid.items():
        claims.setdefault(reply.subject, []).append(node)
    for subject, nodes in claims.items():
        if len(nodes) > 1:
            for node in nodes:
                rejected[node] = f"subject {subject} is claimed by nodes {sorted(nodes)}: a conflict, both rejected"
                logger.warning("normalisation round: rejected the reply of node %d: %s", node, rejected[node])
                del valid[node]
    unanswered = sorted(set(node_ids) - {m.metadata.src_node_id for m in replies})
    for node in unanswered:
        rejected[node] = f"no reply within {timeout:g} s"
        logger.warning("normalisation round: node %d did not reply within %g s", node, timeout)
    if not valid:
        raise FederationError(f"no valid reply in the normalisation round from nodes {node_ids}; see the log for "
                              "each node's reason", "normalisation round")
    return valid, rejected


def _check_enough(valid: Mapping[int, Census | DataSummary], min_subjects: int) -> None:
    if len(valid) < min_subjects:
        raise FederationError(f"{len(valid)} valid repl{'y' if len(valid) == 1 else 'ies'} in the normalisation "
                              f"round (subjects {sorted(s.subject for s in valid.values())}), fewer than "
                              f"privacy.min_merged_subjects={min_subjects}: merged statistics of so few subjects would "
                              "let a client read another's", "privacy.min_merged_subjects")


def _result(federation: FederationData, valid: Mapping[int, Census | DataSummary], rejected: dict[int, str],
            info: DatasetInfo) -> NormRoundResult:
    unseen = [m for m in info.modality_names if m not in federation.stats.moments]
    if unseen:
        raise FederationError(f"no valid reply has statistics of modalities {unseen} (subjects "
                              f"{list(federation.subjects)} replied); they cannot be normalised", "normalisation round")
    logger.info("normalisation round: merged subjects %s, rejected %d repl%s", list(federation.subjects),
                len(rejected), "y" if len(rejected) == 1 else "ies")
    return NormRoundResult(federation, {n: s.subject for n, s in valid.items()}, rejected)


def run_secure_moments(grid: Grid, config: ConfigRecord, info: DatasetInfo, census: Mapping[int, Census],
                       bounds: Mapping[str, np.ndarray], timeout: float,
                       secure: SecureAggregation) -> tuple[FederationData, dict[int, str]]:
    """The moments of the census's nodes as a secure sum; the merged data and node -> why dropped.

    The row scale is the most rows any node holds (from the census); the merged counts are
    those of the nodes the sum holds.

    Raises
    ------
    FederationError
        If the protocol fails (too few nodes left) or the sum holds moments beyond the bounds.
    """
    rows = max(float(c.class_counts.sum()) for c in census.values())
    record = ConfigRecord({keys.ROW_SCALE: rows})
    messages = [Message(content=RecordDict({keys.CONFIG: config, keys.SECAGG_MOMENTS: record}), dst_node_id=node,
                        message_type=MESSAGE_TYPE) for node in sorted(census)]
    protocol = SecureRound(secure.cfg, secure.timeout_s, derive_seed(secure.seed, "secagg", "norm-moments"))
    collect = protocol.open(grid, messages)
    replies = list(grid.send_and_receive(collect, timeout=timeout))
    total, count = protocol.close(grid, replies, secure.impostors(replies))
    members = {n: census[n] for n in sorted(protocol.active)}
    counts: dict[str, int] = {}
    for c in members.values():
        for name, n in c.counts.items():
            counts[name] = counts.get(name, 0) + n
    per_row = {m.name: m.values_per_channel for m in info.modalities}
    try:
        stats = unpack_moments(total, info.modality_names, counts, per_row, bounds, rows,
                               secure.cfg.clipping_range, count)
    except ValueError as err:
        raise FederationError(f"secure normalisation round: {err}", "normalisation round") from err
    dropped = {int(n): f"secure normalisation round: {why}" for n, why in protocol.dropped.items()}
    dropped.update({n: "secure normalisation round: not in the sum" for n in census
                    if n not in members and n not in dropped})
    logger.info("normalisation round (secure aggregation): moments of subjects %s, dropped %d",
                sorted(c.subject for c in members.values()), len(dropped))
    return FederationData(stats, {c.subject: c.class_counts.copy() for c in members.values()}), dropped
