"""QoMFedAvg: FedAvg that averages each modality over its holders, weighted by examples x quality."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Literal

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from omegaconf import DictConfig, OmegaConf

from fedhar import keys
from fedhar.aggregation import (
    DEFAULT_MAX_EXAMPLES,
    WEIGHTINGS,
    ClientUpdate,
    InfluenceBounds,
    Weighting,
    aggregate_by_modality,
    bound_influence,
    validate_update,
)
from fedhar.errors import ConfigError, FederationError
from fedhar.secure_sum import unpack_sum
from fedhar.train import derive_seed
from strategies.run_privacy import RunPrivacy
from strategies.secure_aggregation import SecureAggregation, SecureAggregationError, SecureRound

__all__ = ["STAGES", "QoMFedAvg", "check_stage", "influence_bounds", "parse_reply"]

logger = logging.getLogger(__name__)

Stage = Literal["pretrain", "finetune"]
STAGES: tuple[str, ...] = ("pretrain", "finetune")


class QoMFedAvg(FedAvg):
    """Federated averaging per modality, weighted by each client's quality of modality (QoM).

    Cosmo's QoM (Ouyang et al., MobiCom 2022) moved into the aggregation: for each
    modality ``m``, client ``k``'s encoder and head count with weight proportional to
    ``n_k * q_k,m`` among the clients that hold ``m``; shared parameters by ``n_k``
    (see :mod:`fedhar.aggregation`). Equal qualities give exactly FedAvg.

    Client contract: a reply holds one ArrayRecord ``"arrays"`` with the state-dict
    keys of the modalities it holds plus every shared key, and one MetricRecord
    ``"metrics"`` with ``num-examples`` (> 0), ``qom-<modality>`` in [0, 1] for each
    modality it holds, and optionally ``subject-id`` and ``train-loss``. The train
    ConfigRecord carries ``stage``; the message type is ``train.<stage>``.

    Parameters
    ----------
    stage
        ``"pretrain"`` (stage 1) or ``"finetune"`` (stage 2): sets the message type.
    weighting
        ``"qom"`` (examples x quality) or ``"examples"`` (plain FedAvg, for ablation).
    max_examples
        Replies claiming more examples than this are rejected.
    bounds
        Limits on one client's influence (quality range, update-norm clipping, robust
        rule); default :class:`fedhar.aggregation.InfluenceBounds` (clipping on).
    known_examples
        Subject -> the number of examples the server knows it holds (from the
        normalisation round and the label split). When given, a reply from another
        subject, or without one, is rejected, and a larger claimed count is capped to it.
        Each node is bound to the first subject it claims; a subject claimed by two nodes
        is a conflict: the replies of both are rejected for the rest of the stage. A node
        rejected for who it claims to be is not sampled again (a warning says so).
    min_valid_replies
        A round with fewer valid replies fails: the global arrays stay as they were and the
        round is listed in :attr:`failed_rounds` with its first error.
    round_offset
        Rounds already done before this start (a resumed stage): round ``r`` of
        :meth:`start` is round ``r + round_offset`` of the stage for the clients (their
        seeds), :attr:`failed_rounds`, :attr:`client_weights` and :attr:`round_metrics`.
    privacy
        Client-level differential privacy: every aggregation is clipped, weighted and
        noised by :func:`fedhar.privacy.dp_aggregate` and accounted; a round the budget
        does not allow is not run (it fails, naming the budget). Needs ``bounds.rule``
        ``mean``.
    secure
        Secure aggregation (SecAgg+, :mod:`strategies.secure_aggregation`): the server
        learns only the sum of the clients' weighted updates and weights
        (:mod:`fedhar.secure_sum`). Each client weights itself, with the example scale the
        server sends from ``known_examples`` and its own quality clipped to
        ``bounds.qom_range``; the per-client checks that need one client's update
        (``bounds.update_clip``, the robust rules, per-client weights in the record) cannot
        run; the weight sums are checked. With ``privacy`` each client clips its own update
        to the DP clip norm before weighting it, and the server noises the sum's floored
        mean (:func:`fedhar.privacy.dp_release_from_mean`).
    **fedavg_kwargs
        Passed to :class:`flwr.serverapp.strategy.FedAvg` (sampling fractions, minimum
        nodes, metric aggregation functions).

    Raises
    ------
    ValueError
        If ``stage``, ``weighting`` or ``max_examples`` is invalid.
    """

    def __init__(
        self,
        stage: Stage = "pretrain",
        weighting: Weighting = "qom",
        max_examples: float = DEFAULT_MAX_EXAMPLES,
        bounds: InfluenceBounds | None = None,
        known_examples: Mapping[int, float] | None = None,
        min_valid_replies: int = 1,
        privacy: RunPrivacy | None = None,
        round_offset: int = 0,
        secure: SecureAggregation | None = None,
        **fedavg_kwargs: object,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}; 'examples' is plain FedAvg")
        if not max_examples > 0:
            raise ValueError(f"max_examples must be > 0, got {max_examples}")
        if min_valid_replies < 1:
            raise ValueError(f"min_valid_replies must be >= 1, got {min_valid_replies}")
        super().__init__(weighted_by_key=keys.NUM_EXAMPLES, arrayrecord_key=keys.ARRAYS,
                         configrecord_key=keys.CONFIG, **fedavg_kwargs)  # type: ignore[arg-type]
        self.stage: Stage = stage
        self.weighting: Weighting = weighting
        self.max_examples = max_examples
        self.bounds = InfluenceBounds() if bounds is None else bounds
        if privacy is not None and self.bounds.rule != "mean":
            raise ConfigError(f"differential privacy needs the weighted mean, not strategy.bounds.rule="
                              f"{self.bounds.rule!r} (the noise is calibrated to it)", "strategy.bounds.rule")
        self.privacy = privacy
        if secure is not None:
            if self.bounds.rule != "mean":
                raise ConfigError(f"secure aggregation sums the weighted mean; strategy.bounds.rule="
                                  f"{self.bounds.rule!r} needs every client's update", "strategy.bounds.rule")
            if known_examples is None:
                raise ValueError("secure aggregation needs known_examples (the example scale the server sends)")
        self.secure = secure
        self._secure_round: SecureRound | None = None
        self._secure_grid: Grid | None = None
        self._secure_failure: str | None = None
        #: Round -> what secure aggregation did (bytes per client, dropped nodes, survivors).
        self.secure_rounds: dict[int, dict[str, Any]] = {}
        self.round_offset = int(round_offset)
        #: Absolute round -> the aggregated train metrics of that round.
        self.round_metrics: dict[int, dict[str, Any]] = {}
        self.known_examples = None if known_examples is None else {int(k): float(v) for k, v in known_examples.items()}
        self._node_subject: dict[int, str] = {}
        self._subject_nodes: dict[str, set[int]] = {}
        self.min_valid_replies = min_valid_replies
        #: Nodes excluded from sampling: rejected for the subject they claim.
        self.excluded: set[int] = set()
        #: Round -> why it failed (fewer than ``min_valid_replies`` valid replies).
        self.failed_rounds: dict[int, str] = {}
        self._sent: dict[int, int] = {}
        #: Round -> group (modality or ``shared``) -> client id -> its normalised aggregation weight.
        self.client_weights: dict[int, dict[str, dict[str, float]]] = {}
        self._global: ArrayRecord | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    @property
    def message_type(self) -> str:
        """Message type of the train instructions, ``train.<stage>``."""
        return f"{MessageType.TRAIN}.{self.stage}"

    def summary(self) -> None:
        """Log every setting of the strategy."""
        logger.info("QoMFedAvg: stage %s (message type %s), weighting %s, max examples %g, bounds %s, known "
                    "subjects %s", self.stage, self.message_type, self.weighting, self.max_examples, self.bounds,
                    None if self.known_examples is None else sorted(self.known_examples))
        super().summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays, add the stage and the absolute round to the config, send ``train.<stage>``."""
        self._global = arrays
        config[keys.STAGE] = self.stage
        messages = [m for m in super().configure_train(server_round, arrays, config, grid)
                    if m.metadata.dst_node_id not in self.excluded]
        server_round += self.round_offset
        for m in messages:  # FedAvg set the round it counts; the clients derive their seeds from the stage's
            m.content.config_records[keys.CONFIG][keys.SERVER_ROUND] = server_round
        if self.privacy is not None and not self.privacy.allows(self.stage, server_round, len(messages)):
            messages = []
        self._sent[server_round] = len(messages)
        out = [Message(content=m.content, dst_node_id=m.metadata.dst_node_id, message_type=self.message_type)
               for m in messages]
        if self.secure is not None:
            return self._open_secure(server_round, out, grid)
        self.bytes_sent += arrays.count_bytes() * len(messages)
        return out

    def _open_secure(self, server_round: int, messages: list[Message], grid: Grid) -> list[Message]:
        """Key stages of secure aggregation; the train messages with each node's weighting and key shares."""
        assert self.secure is not None and self.known_examples is not None
        self._secure_round, self._secure_grid = None, grid
        if not messages:
            self._secure_failure = "no node was sampled"
            return []
        top = max(self.known_examples.values())
        low, high = self.bounds.qom_range
        for msg in messages:
            node = msg.metadata.dst_node_id
            subject = self.secure.node_subjects.get(node)
            if subject is None or subject not in self.known_examples:
                raise FederationError(f"node {node} has no known subject / example count for secure aggregation",
                                      "privacy.secure_aggregation")
            msg.content = RecordDict(dict(msg.content.items()))  # FedAvg gives every node the same RecordDict
            weighting: dict[str, float | str] = {
                keys.EXAMPLE_SCALE: float(self.known_examples[subject] / top), keys.WEIGHTING: self.weighting,
                keys.QOM_LOW: float(low), keys.QOM_HIGH: float(high)}
            if self.privacy is not None:  # DP under secure aggregation: the client clips its own update
                weighting[keys.DP_CLIP_NORM] = float(self.privacy.cfg.clip_norm)
            msg.content[keys.SECAGG_WEIGHTING] = ConfigRecord(weighting)  # type: ignore[arg-type]
        self._secure_failure = None
        self._secure_round = SecureRound(self.secure.cfg, self.secure.timeout_s,
                                         derive_seed(self.secure.seed, "secagg", self.stage, server_round))
        try:
            out = self._secure_round.open(grid, messages)
        except SecureAggregationError as err:
            self._secure_failure = str(err)
            logger.warning("round %d: secure aggregation stopped before training: %s", server_round, err)
            return []
        return out

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Validate each reply per modality group, drop bad ones, aggregate the rest."""
        server_round += self.round_offset
        if self.secure is not None:
            arrays, metrics = self._aggregate_secure(server_round, replies)
        else:
            arrays, metrics = self._aggregate(server_round, replies)
        if metrics is not None:
            self.round_metrics[server_round] = dict(metrics)
        return arrays, metrics

    def _aggregate(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train: no global arrays to validate against")
        reference = {k: v.numpy() for k, v in self._global.items()}
        failures, updates = 0, list[tuple[ClientUpdate, int]]()
        replies = list(replies)
        first_error: str | None = None
        for msg in replies:  # every claim of the round first: a conflict rejects every claimant
            if not msg.has_error():
                self._claim(msg.metadata.src_node_id, _claimed_client(msg))
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error():
                failures += 1
                first_error = first_error or f"node {node}: {_last_line(msg.error.reason)}"
                logger.warning("round %d: node %d replied with an error: %s", server_round, node, msg.error.reason)
                continue
            self.bytes_received += sum(r.count_bytes() for r in msg.content.array_records.values())
            update, reason = parse_reply(msg)
            if update is not None:
                reason = validate_update(update, reference, self.max_examples)
            if update is not None and reason is None:
                update, reason = self._check_identity(update, node)
                if reason is not None:
                    self.excluded.add(node)
                    logger.warning("round %d: node %d is excluded from later rounds of this stage", server_round,
                                   node)
            if reason is not None or update is None:
                failures += 1
                first_error = first_error or f"node {node}: {reason}"
                logger.warning("round %d: rejected the reply of node %d: %s", server_round, node, reason)
                continue
            if any(u.client_id == update.client_id for u, _ in updates):
                failures += 1
                logger.warning("round %d: rejected the reply of node %d: %s already replied", server_round, node,
                               update.client_id)
                continue
            updates.append((update, node))
        # A fixed summation order (subject, then node id) makes reruns bit-identical.
        updates.sort(key=lambda pair: (_subject_order(pair[0].client_id), pair[1]))
        timeouts = max(self._sent.get(server_round, len(replies)) - len(replies), 0)
        metrics = MetricRecord({keys.NUM_REJECTED: failures, keys.NUM_AGGREGATED: len(updates),
                                keys.NUM_TIMEOUTS: timeouts})
        refused = self.privacy.refused.get(f"{self.stage} {server_round}") if self.privacy is not None else None
        if refused is not None:
            self.failed_rounds[server_round] = f"not run: {refused}"
            return self._global, metrics
        if len(updates) < self.min_valid_replies:
            reason = (f"{len(updates)} valid repl{'y' if len(updates) == 1 else 'ies'} of {len(replies)} received "
                      f"({timeouts} timed out, {failures} rejected or failed; need {self.min_valid_replies})"
                      + (f"; first error: {first_error}" if first_error else ""))
            self.failed_rounds[server_round] = reason
            logger.warning("round %d failed: %s; the global model keeps its previous arrays", server_round, reason)
            return self._global, metrics
        if self.privacy is not None:
            # Qualities clipped as always; the DP mechanism's own clipping replaces the median-relative one.
            bounded, _ = bound_influence([u for u, _ in updates], reference, replace(self.bounds, update_clip=None))
            private = self.privacy.aggregate(self.stage, server_round, bounded, reference, self.weighting,
                                             self.bounds.qom_range)
            new_arrays, weights, num_clipped = private.arrays, private.weights, len(private.clipped)
        else:
            bounded, clipped = bound_influence([u for u, _ in updates], reference, self.bounds)
            result = aggregate_by_modality(bounded, reference, self.weighting, self.bounds.rule,
                                           self.bounds.trim_fraction)
            new_arrays, weights, num_clipped = result.arrays, result.weights, len(clipped)
        metrics[keys.NUM_CLIPPED] = num_clipped
        self.client_weights[server_round] = {
            group: {client: groups[group] for client, groups in weights.items() if group in groups}
            for group in sorted({g for groups in weights.values() for g in groups})}
        _add_client_metrics(metrics, bounded)
        arrays = ArrayRecord({k: Array(v) for k, v in new_arrays.items()})
        return arrays, metrics

    def _aggregate_secure(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Unmask the sum of the round's masked vectors; QoMFedAvg's arrays from it (fedhar.secure_sum)."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train: no global arrays")
        reference = {k: v.numpy() for k, v in self._global.items()}
        replies, secure = list(replies), self._secure_round
        sent = self._sent.get(server_round, len(replies))
        metrics = MetricRecord({keys.NUM_TIMEOUTS: max(sent - len(replies), 0)})
        reason = self._secure_failure or (None if secure is not None else "no secure round was opened")
        if secure is not None and reason is None:
            try:
                total, count = secure.close(self._secure_grid, replies,  # type: ignore[arg-type]
                                            self.secure.impostors(replies))  # type: ignore[union-attr]
                result = unpack_sum(total, reference, self.weighting, count, self.secure.cfg.clipping_range)  # type: ignore[union-attr]
            except (SecureAggregationError, ValueError) as err:
                reason = str(err)
            else:
                if count < self.min_valid_replies:
                    reason = f"{count} contributions in the sum, need {self.min_valid_replies}"
        dropped = dict(secure.dropped) if secure is not None else {}
        record: dict[str, Any] = {"dropped": dropped,
                  "bytes_sent": secure.bytes_sent if secure is not None else 0,
                  "bytes_received": secure.bytes_received if secure is not None else 0}
        if secure is not None:
            self.bytes_sent += secure.bytes_sent
            self.bytes_received += secure.bytes_received
        metrics[keys.NUM_REJECTED] = len(dropped)
        refused = self.privacy.refused.get(f"{self.stage} {server_round}") if self.privacy is not None else None
        if refused is not None:
            self.failed_rounds[server_round] = f"not run: {refused}"
            metrics[keys.NUM_AGGREGATED] = 0
            return self._global, metrics
        if reason is not None:
            self.secure_rounds[server_round] = {**record, "failed": reason}
            self.failed_rounds[server_round] = f"secure aggregation: {reason}"
            metrics[keys.NUM_AGGREGATED] = 0
            logger.warning("round %d failed: secure aggregation: %s; the global model keeps its previous arrays",
                           server_round, reason)
            return self._global, metrics
        metrics[keys.NUM_AGGREGATED] = count
        metrics[keys.NUM_CLIPPED] = 0
        for modality, score in result.mean_qom.items():
            metrics[f"{keys.QOM_PREFIX}{modality}"] = score
        self.secure_rounds[server_round] = {**record, "num_summed": count, "weight_sums": result.weight_sums}
        if record["dropped"]:
            logger.warning("round %d: secure aggregation summed %d clients; dropped: %s", server_round, count,
                           record["dropped"])
        new_arrays = result.arrays
        if self.privacy is not None:
            new_arrays = self.privacy.release_sum(self.stage, server_round, result.arrays, result.weight_sums,
                                                  reference, count)
        return ArrayRecord({k: Array(v) for k, v in new_arrays.items()}), metrics

    def _claim(self, node: int, client: str) -> None:
        """Bind ``node`` to its first claimed client; record the nodes that claim each client."""
        if self._node_subject.setdefault(node, client) == client:
            self._subject_nodes.setdefault(client, set()).add(node)

    def _check_identity(self, update: ClientUpdate, node: int) -> tuple[ClientUpdate | None, str | None]:
        """Check the node's binding, that its subject is known and claimed by no other node; cap its example count."""
        client = update.client_id
        bound = self._node_subject.get(node, client)
        if bound != client:
            return None, f"node {node} claims {client} but is bound to {bound} (its first claim)"
        nodes = self._subject_nodes.get(client, {node})
        if len(nodes) > 1:
            return None, f"{client} is claimed by nodes {sorted(nodes)}: a conflict, every claimant is rejected"
        if self.known_examples is None:
            return update, None
        subject = _subject_of(client)
        if subject is None or subject not in self.known_examples:
            return None, f"{client} is not a training subject {sorted(self.known_examples)}"
        known = self.known_examples[subject]
        if float(update.num_examples) > known:
            logger.warning("node %d (%s) claims %g examples, the server knows %g: capped", node, client,
                           float(update.num_examples), known)
            update = ClientUpdate(update.client_id, update.arrays, known, update.qom, update.train_loss)
        return update, None


def check_stage(stage: str, strategy: QoMFedAvg, num_rounds: int) -> None:
    """Fail a stage whose every round failed (no model was ever aggregated), naming the first reason.

    Raises
    ------
    FederationError
        If each of the ``num_rounds`` rounds failed.
    """
    failed = strategy.failed_rounds
    if num_rounds > 0 and len(failed) >= num_rounds:
        first = min(failed)
        raise FederationError(f"all {num_rounds} rounds failed; round {first}: {failed[first]}", stage)
    if failed:
        logger.warning("%s: %d of %d rounds failed: %s", stage, len(failed), num_rounds, failed)


def _last_line(text: str | None, limit: int = 300) -> str:
    """The last non-empty line of an error reason (a client's streamed traceback ends with its message)."""
    lines = [line.strip(" '>") for line in str(text).splitlines() if line.strip(" '>")]
    last = lines[-1] if lines else str(text)
    return last if len(last) <= limit else last[:limit] + "..."


def _claimed_client(msg: Message) -> str:
    """The client id a reply claims (``subject-<id>`` from its metrics, else ``node-<id>``), as parse_reply names it."""
    record = msg.content.metric_records.get(keys.METRICS)
    subject = record.get(keys.SUBJECT) if record is not None else None
    return f"subject-{int(subject)}" if isinstance(subject, int) else f"node-{msg.metadata.src_node_id}"


def influence_bounds(strategy: Mapping[str, Any]) -> InfluenceBounds:
    """The ``bounds`` of a ``strategy`` config group as :class:`InfluenceBounds` (its defaults if absent).

    Raises
    ------
    ConfigError
        If a key is unknown or a value invalid.
    """
    raw = strategy.get("bounds") or {}
    raw = OmegaConf.to_container(raw, resolve=True) if isinstance(raw, DictConfig) else dict(raw)
    try:
        return InfluenceBounds.from_mapping(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err), "strategy.bounds") from err


def _subject_of(client_id: str) -> int | None:
    prefix = "subject-"
    return int(client_id[len(prefix):]) if client_id.startswith(prefix) else None


def parse_reply(msg: Message) -> tuple[ClientUpdate | None, str | None]:
    """Turn a reply into a :class:`ClientUpdate`, or give the reason it is malformed."""
    content = msg.content
    if len(content.array_records) != 1 or keys.ARRAYS not in content.array_records:
        return None, f"expected exactly one ArrayRecord {keys.ARRAYS!r}, got {list(content.array_records)}"
    if len(content.metric_records) != 1 or keys.METRICS not in content.metric_records:
        return None, f"expected exactly one MetricRecord {keys.METRICS!r}, got {list(content.metric_records)}"
    metrics = content.metric_records[keys.METRICS]
    if keys.NUM_EXAMPLES not in metrics:
        return None, f"metric {keys.NUM_EXAMPLES!r} is missing"
    try:
        arrays = {k: v.numpy() for k, v in content.array_records[keys.ARRAYS].items()}
    except (TypeError, ValueError, OSError) as err:
        return None, f"an array cannot be decoded: {err}"
    qom = {k[len(keys.QOM_PREFIX):]: v for k, v in metrics.items() if k.startswith(keys.QOM_PREFIX)}
    subject = metrics.get(keys.SUBJECT)
    client = f"subject-{int(subject)}" if isinstance(subject, int) else f"node-{msg.metadata.src_node_id}"
    num_examples = metrics[keys.NUM_EXAMPLES]
    loss = metrics.get(keys.TRAIN_LOSS)
    if any(isinstance(v, list) for v in (num_examples, loss, *qom.values())):
        return None, f"{keys.NUM_EXAMPLES}, {keys.TRAIN_LOSS} and {keys.QOM_PREFIX}* must be single numbers"
    update = ClientUpdate(client_id=client, arrays=arrays, num_examples=num_examples,  # type: ignore[arg-type]
                          qom=qom, train_loss=loss)  # type: ignore[arg-type]
    return update, None


def _add_client_metrics(metrics: MetricRecord, updates: list[ClientUpdate]) -> None:
    """Per-client QoM, example-weighted train loss and the example-weighted mean QoM per modality."""
    total = sum(float(u.num_examples) for u in updates)
    losses = [(float(u.num_examples), float(u.train_loss)) for u in updates if u.train_loss is not None]
    if losses:
        metrics[keys.TRAIN_LOSS] = sum(n * v for n, v in losses) / sum(n for n, _ in losses)
    mean_qom: dict[str, list[tuple[float, float]]] = {}
    for u in updates:
        for modality, score in u.qom.items():
            metrics[f"{keys.QOM_PREFIX}{modality}-{u.client_id}"] = float(score)
            mean_qom.setdefault(modality, []).append((float(u.num_examples), float(score)))
    for modality, pairs in mean_qom.items():
        metrics[f"{keys.QOM_PREFIX}{modality}"] = sum(n * q for n, q in pairs) / sum(n for n, _ in pairs)
    metrics[keys.NUM_EXAMPLES] = total


def _subject_order(client_id: str) -> tuple[int, str]:
    prefix = "subject-"
    return (0, f"{int(client_id[len(prefix):]):012d}") if client_id.startswith(prefix) else (1, client_id)


