"""Server side of SecAgg+ on the Message API: one secure sum per QoMFedAvg round.

Flower 1.41 runs SecAgg+ only inside its legacy workflow (``SecAggPlusWorkflow``: a
``LegacyContext``, one FedAvg weight per client). This is the same protocol, its four
stages ported to a :class:`flwr.serverapp.Grid` so that QoMFedAvg can use it; the
cryptography, quantisation and masking arithmetic are Flower's own
(``flwr.common.secure_aggregation``), and the clients run Flower's client stages
(:mod:`clients.secure_aggregation`). Differences from Flower's workflow, on purpose:

- the messages have the round's own type (``train.<stage>``), so the ClientApp handler
  that trains is the one whose mod runs the protocol;
- the result is the plain *sum* of the clients' vectors (each already weighted by the
  client, :mod:`fedhar.secure_sum`), not Flower's mean by example count;
- neighbours are drawn with a seeded generator (reruns are identical), and a failed
  stage raises :class:`SecureAggregationError` naming why instead of logging and returning;
- the masks come from :func:`fedhar.secure_sum.mask_stream` (SHAKE-256 of the full secret)
  instead of Flower's ``pseudo_rand_gen`` (a 32-bit seed), on both sides.

Stages: ``setup`` (public keys), ``share_keys`` (encrypted secret shares, forwarded by the
server), ``collect_masked_vectors`` (the train message: each client trains and sends its
masked, quantised vector), ``unmask`` (shares of the survivors' private masks and of the
dropped clients' keys, from which the server removes every mask from the sum).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.secure_aggregation.crypto.shamir import combine_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_extract,
    get_parameters_shape,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.serverapp import Grid
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from fedhar import keys
from fedhar.errors import FederationError
from fedhar.secure_sum import SecureAggregationConfig, mask_stream

__all__ = ["SecureAggregation", "SecureAggregationError", "SecureRound", "message_bytes"]

logger = logging.getLogger(__name__)


class SecureAggregationError(FederationError):
    """A secure-aggregation round that cannot complete (too few clients left, a bad reply)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "privacy.secure_aggregation")


@dataclass(frozen=True)
class SecureAggregation:
    """A run's secure aggregation: the protocol settings and what the server knows of its nodes.

    Parameters
    ----------
    cfg
        ``privacy.secure_aggregation``.
    node_subjects
        Node id -> the subject it was merged as in the normalisation round.
    timeout_s
        Seconds to wait for each key stage's replies.
    seed
        The run's seed (neighbour assignment per round).
    """

    cfg: SecureAggregationConfig
    node_subjects: Mapping[int, int]
    timeout_s: float
    seed: int

    def impostors(self, replies: Iterable[Message]) -> dict[int, str]:
        """Node -> why: replies that claim another subject than the one their node was merged as.

        They are left out of the sum (as dropouts): the server cannot inspect a masked vector,
        but it knows who each node is.
        """
        out = {}
        for msg in replies:
            if msg.has_error():
                continue
            node = msg.metadata.src_node_id
            metrics = msg.content.metric_records.get(keys.METRICS)
            claimed, known = (metrics.get(keys.SUBJECT) if metrics is not None else None), self.node_subjects.get(node)
            if claimed != known:
                out[node] = f"claims subject-{claimed}, the server knows subject {known}"
        return out


_EXPECTED: dict[str, dict[str, object]] = {  # each stage's reply: key -> bytes, or the type of a list
    Stage.SETUP: {Key.PUBLIC_KEY_1: bytes, Key.PUBLIC_KEY_2: bytes},
    Stage.SHARE_KEYS: {Key.DESTINATION_LIST: list[int], Key.CIPHERTEXT_LIST: list[bytes]},
    Stage.UNMASK: {Key.NODE_ID_LIST: list[int], Key.SHARE_LIST: list[bytes]},
}


def _malformed(stage: str, record: ConfigRecord) -> str | None:
    """Why a key stage's reply record breaks the protocol, or ``None``."""
    lengths = set()
    for key, kind in _EXPECTED[stage].items():
        value = record.get(key)
        if kind is bytes:
            if not isinstance(value, bytes) or not value:
                return f"{key!r} must be non-empty bytes"
            continue
        element = int if kind == list[int] else bytes
        if not isinstance(value, list) or any(type(v) is not element for v in value):
            return f"{key!r} must be a list of {element.__name__}"
        lengths.add(len(value))
    return "lists of different lengths" if len(lengths) > 1 else None


def _last_line(reason: str | None) -> str:
    lines = [line.strip(" '>") for line in str(reason).splitlines() if line.strip(" '>")]
    return (lines[-1] if lines else str(reason))[:200]


def message_bytes(msg: Message) -> int:
    """Bytes of a message's payload: arrays, metrics and the protocol's records (the masked vectors travel
    as config bytes); the run's own ``config`` record is left out, as QoMFedAvg counts arrays only."""
    content = msg.content
    return (sum(r.count_bytes() for records in (content.array_records, content.metric_records)
                for r in records.values())
            + sum(_config_bytes(r) for name, r in content.config_records.items() if name != keys.CONFIG))


def _config_bytes(record: ConfigRecord) -> int:
    """As ``ConfigRecord.count_bytes``, which fails on an empty list (Flower 1.41)."""
    def size(value: object) -> int:
        return len(value) if isinstance(value, (bytes, str)) else 8
    return sum(len(k) + (sum(size(x) for x in v) if isinstance(v, list) else size(v)) for k, v in record.items())


@dataclass
class SecureRound:
    """One round of SecAgg+: :meth:`open` runs the key stages, :meth:`close` sums and unmasks.

    Parameters
    ----------
    cfg
        ``privacy.secure_aggregation``.
    timeout
        Seconds to wait for each key stage's replies.
    seed
        Seeds the neighbour assignment.
    """

    cfg: SecureAggregationConfig
    timeout: float
    seed: int
    sampled: set[int] = field(default_factory=set)
    active: set[int] = field(default_factory=set)
    num_shares: int = 0
    threshold: int = 0
    quantization: int = 0
    neighbours: dict[int, set[int]] = field(default_factory=dict)
    public_keys: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)
    forwarded: dict[int, tuple[list[int], list[bytes]]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0

    def open(self, grid: Grid, messages: Sequence[Message]) -> list[Message]:
        """Run ``setup`` and ``share_keys`` with the destinations of ``messages``; return the collect messages.

        Each returned message is the train message of a node still in the round with the
        forwarded key shares added.

        Raises
        ------
        SecureAggregationError
            If fewer than two nodes are sampled or too few stay to reach the threshold.
        """
        by_node = {m.metadata.dst_node_id: m for m in messages}
        message_type = messages[0].metadata.message_type if messages else ""
        nodes = sorted(by_node)
        if len(nodes) < 2:
            raise SecureAggregationError(f"{len(nodes)} node(s) sampled: secure aggregation needs at least 2")
        try:
            self.quantization = self.cfg.quantization_for(len(nodes))
        except ValueError as err:
            raise SecureAggregationError(str(err)) from err
        self._configure(nodes)
        setup = {Key.STAGE: Stage.SETUP, Key.SAMPLE_NUMBER: len(nodes), Key.SHARE_NUMBER: self.num_shares,
                 Key.THRESHOLD: self.threshold, Key.CLIPPING_RANGE: float(self.cfg.clipping_range),
                 Key.TARGET_RANGE: int(self.quantization), Key.MOD_RANGE: int(self.cfg.modulus_range),
                 Key.MAX_WEIGHT: 1.0}
        replies = self._exchange(grid, {n: ConfigRecord(dict(setup)) for n in nodes}, message_type, Stage.SETUP)  # type: ignore[arg-type]
        for node, record in replies.items():
            self.public_keys[node] = (cast(bytes, record[Key.PUBLIC_KEY_1]), cast(bytes, record[Key.PUBLIC_KEY_2]))
        self._check_threshold(Stage.SETUP)

        def share_keys(node: int) -> ConfigRecord:
            record = ConfigRecord({str(n): list(self.public_keys[n]) for n in self.neighbours[node] & self.active})
            record[Key.STAGE] = Stage.SHARE_KEYS
            return record

        replies = self._exchange(grid, {n: share_keys(n) for n in sorted(self.active)}, message_type,
                                 Stage.SHARE_KEYS)
        self.forwarded = {n: ([], []) for n in self.active}
        for src in sorted(replies):
            record = replies[src]
            for dst, ciphertext in zip(cast(list[int], record[Key.DESTINATION_LIST]),
                                       cast(list[bytes], record[Key.CIPHERTEXT_LIST]), strict=True):
                if dst in self.forwarded:
                    self.forwarded[dst][0].append(src)
                    self.forwarded[dst][1].append(ciphertext)
        # From here on the round is the nodes that shared their keys: one that dropped earlier left no
        # mask in anyone's vector, so there is nothing of it to remove (and nobody holds its key shares).
        self.sampled = set(self.active)
        self._check_threshold(Stage.SHARE_KEYS)
        out = []
        for node in sorted(self.active):
            msg = by_node[node]
            srcs, ciphertexts = self.forwarded[node]
            content = RecordDict(dict(msg.content.items()))
            content[RECORD_KEY_CONFIGS] = ConfigRecord({Key.STAGE: Stage.COLLECT_MASKED_VECTORS,
                                                        Key.CIPHERTEXT_LIST: ciphertexts, Key.SOURCE_LIST: srcs})  # type: ignore[dict-item]
            out.append(Message(content=content, dst_node_id=node, message_type=message_type))
        self.bytes_sent += sum(message_bytes(m) for m in out)
        return out

    def close(self, grid: Grid, replies: Iterable[Message],
              rejected: dict[int, str] | None = None) -> tuple[list[np.ndarray], int]:
        """Sum the masked vectors of ``replies``, run ``unmask``; return the plain sum and how many it holds.

        A node in ``rejected`` (node -> why) is left out as if it had dropped: its masks
        are removed through its neighbours' shares, its vector never enters the sum.

        Raises
        ------
        SecureAggregationError
            If too few clients sent a vector or answered ``unmask``, or a reply is malformed.
        """
        replies = list(replies)
        message_type = ""
        masked: list[np.ndarray] | None = None
        survivors: set[int] = set()
        for msg in replies:
            node = msg.metadata.src_node_id
            if msg.has_error() or node not in self.active or node in (rejected or {}):
                self.dropped[str(node)] = "collect: " + (_last_line(msg.error.reason) if msg.has_error()
                                                        else (rejected or {}).get(node, "not in the round"))
                continue
            self.bytes_received += message_bytes(msg)
            message_type = msg.metadata.message_type
            try:
                arrays = msg.content.array_records[keys.SECAGG_MASKED]
                vector = [np.asarray(arrays[name].numpy(), dtype=np.int64) for name in sorted(arrays)]
                if masked is not None and get_parameters_shape(vector) != get_parameters_shape(masked):
                    raise ValueError(f"shapes {get_parameters_shape(vector)[:3]}... differ from the others'")
            except (KeyError, TypeError, ValueError) as err:
                self.dropped[str(node)] = f"collect: malformed masked vector: {err}"
                continue
            masked = vector if masked is None else parameters_addition(masked, vector)
            survivors.add(node)
        timed_out = self.active - survivors - {int(n) for n in self.dropped}
        for node in timed_out:
            self.dropped[str(node)] = "collect: no reply before the timeout"
        self.active = survivors
        if masked is None:
            raise SecureAggregationError(f"no masked vector received ({len(replies)} replies; dropped: "
                                         f"{self.dropped})")
        self._check_threshold(Stage.COLLECT_MASKED_VECTORS)
        masked = parameters_mod(masked, self.cfg.modulus_range)
        dead = self.sampled - self.active

        def unmask(node: int) -> ConfigRecord:
            return ConfigRecord({Key.STAGE: Stage.UNMASK,  # type: ignore[dict-item]
                                 Key.ACTIVE_NODE_ID_LIST: sorted(self.neighbours[node] & self.active),
                                 Key.DEAD_NODE_ID_LIST: sorted(self.neighbours[node] & dead)})

        shares_of = self._exchange(grid, {n: unmask(n) for n in sorted(self.active)}, message_type or "train",
                                   Stage.UNMASK)
        collected: dict[int, list[bytes]] = {n: [] for n in self.sampled}
        for shares_record in shares_of.values():
            for owner, share in zip(cast(list[int], shares_record[Key.NODE_ID_LIST]),
                                    cast(list[bytes], shares_record[Key.SHARE_LIST]), strict=True):
                if owner in collected:
                    collected[owner].append(share)
        shape = get_parameters_shape(masked)
        for node in sorted(self.sampled):
            shares = collected[node]
            if len(shares) < self.threshold:
                raise SecureAggregationError(f"unmask: {len(shares)} shares of node {node}'s secret, "
                                             f"{self.threshold} needed")
            try:
                secret = combine_shares(shares)
            except (ValueError, TypeError, IndexError) as err:
                raise SecureAggregationError(f"unmask: node {node}'s secret cannot be rebuilt from its shares: "
                                             f"{err}") from err
            if node in self.active:  # its private mask
                masked = parameters_subtraction(masked, mask_stream(secret, self.cfg.modulus_range, shape))
                continue
            for other in sorted(self.neighbours[node] - {node}):  # a dropped node: the pairwise masks it left
                if other not in self.public_keys:
                    continue
                shared = generate_shared_key(bytes_to_private_key(secret),
                                             bytes_to_public_key(self.public_keys[other][0]))
                mask = mask_stream(shared, self.cfg.modulus_range, shape)
                masked = (parameters_addition(masked, mask) if node > other
                          else parameters_subtraction(masked, mask))
        total = parameters_mod(masked, self.cfg.modulus_range)
        factor, quantized = factor_extract(total)
        count = int(factor) // int(self.quantization)
        if count != len(self.active):
            raise SecureAggregationError(f"unmask: the sum holds {count} contributions, {len(self.active)} were "
                                         "expected (a mask was not removed)")
        summed = dequantize(quantized, self.cfg.clipping_range, self.quantization)
        offset = -(count - 1) * self.cfg.clipping_range  # each contribution was shifted by +clipping_range
        return [np.asarray(v, np.float64) + offset for v in summed], count

    def _configure(self, nodes: list[int]) -> None:
        """Shares, threshold and neighbours as Flower's SecAggPlusWorkflow sets them (seeded shuffle)."""
        num, cfg = len(nodes), self.cfg
        if cfg.num_shares <= 1.0:
            shares = round(cfg.num_shares * num)
            if shares < num and shares % 2 == 0:
                shares += 1
            shares = num if shares <= 2 else shares
        else:
            shares = int(cfg.num_shares)
        self.num_shares = min(shares, num)
        threshold = cfg.reconstruction_threshold
        self.threshold = max(round(threshold * self.num_shares), 2) if threshold <= 1.0 else int(threshold)
        if self.threshold > self.num_shares:
            raise SecureAggregationError(f"reconstruction_threshold {self.threshold} exceeds the {self.num_shares} "
                                         f"shares of a round with {num} nodes")
        order = list(nodes)
        random.Random(self.seed).shuffle(order)
        half = self.num_shares >> 1
        self.neighbours = {n: {order[(i + off) % num] for off in range(-half, half + 1)} for i, n in enumerate(order)}
        self.sampled = set(nodes)
        self.active = set(nodes)

    def _exchange(self, grid: Grid, records: dict[int, ConfigRecord], message_type: str,
                  stage: str) -> dict[int, ConfigRecord]:
        """Send each node its protocol record; keep the nodes that answered; their reply records."""
        messages = [Message(content=RecordDict({RECORD_KEY_CONFIGS: r}), dst_node_id=n, message_type=message_type)
                    for n, r in records.items()]
        self.bytes_sent += sum(message_bytes(m) for m in messages)
        out: dict[int, ConfigRecord] = {}
        for msg in grid.send_and_receive(messages, timeout=self.timeout):
            node = msg.metadata.src_node_id
            if msg.has_error():
                self.dropped[str(node)] = f"{stage}: " + _last_line(msg.error.reason)
                continue
            record = msg.content.config_records.get(RECORD_KEY_CONFIGS) if node in records else None
            reason = "no protocol record" if record is None else _malformed(stage, record)
            if reason is not None:  # a reply that breaks the protocol: the node is out of the round
                self.dropped[str(node)] = f"{stage}: malformed reply: {reason}"
                continue
            self.bytes_received += message_bytes(msg)
            out[node] = record  # type: ignore[assignment]
        for node in set(records) - set(out):
            self.dropped.setdefault(str(node), f"{stage}: no reply before the timeout")
        self.active = set(out)
        return out

    def _check_threshold(self, stage: str) -> None:
        # Every sampled node, dropped ones too: a dropped node's key is rebuilt from its active neighbours' shares.
        for node in sorted(self.sampled):
            if len(self.neighbours[node] & self.active) < self.threshold:
                raise SecureAggregationError(
                    f"{stage}: node {node} has {len(self.neighbours[node] & self.active)} active neighbours, the "
                    f"threshold is {self.threshold} ({len(self.active)} of {len(self.sampled)} nodes left; "
                    f"dropped: {self.dropped})")
