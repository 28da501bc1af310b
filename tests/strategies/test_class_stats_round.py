"""Class-statistics round of stage 2: valid replies merged, each malformed one rejected and logged with its node id."""

from __future__ import annotations

from collections.abc import Callable
from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.errors import FederationError
from fedhar.train.class_stats import ClassFeatureStats
from strategies.class_stats_round import (
    MESSAGE_TYPE,
    PERSONALISE_MESSAGE_TYPE,
    run_class_stats_round,
    run_personalise_round,
)

DIM, K, PASSES = 4, 3, 1
# Subject -> its labeled rows per class, as the server's label split has them.
LABELED = {1: np.array([1, 1, 0]), 2: np.array([0, 1, 2]), 3: np.array([2, 0, 0])}


def subject_stats(subject: int) -> ClassFeatureStats:
    """Statistics of (1 + PASSES) x the subject's labeled rows, with made-up features."""
    rng = np.random.default_rng(subject)
    y = np.repeat(np.arange(K), (1 + PASSES) * LABELED[subject])
    x = rng.normal(size=(len(y), DIM))
    sums = np.stack([x[y == c].sum(axis=0) for c in range(K)])
    return ClassFeatureStats(np.bincount(y, minlength=K).astype(float), sums, x.T @ x)


def _instruction(node: int) -> Message:
    return Message(content=RecordDict(), dst_node_id=node, message_type=MESSAGE_TYPE)


def stats_reply(node: int, arrays: dict[str, np.ndarray], subject: object) -> Message:
    content = RecordDict({keys.CLASS_STATS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
                          keys.METRICS: MetricRecord({keys.SUBJECT: subject})})  # type: ignore[dict-item]
    return Message(content=content, reply_to=_instruction(node))


def _grid(replies: list[Message], nodes: list[int] | None = None) -> Mock:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = nodes or [m.metadata.src_node_id for m in replies]
    grid.send_and_receive.return_value = replies
    return grid


def _run(grid: Mock) -> object:
    return run_class_stats_round(grid, ConfigRecord({keys.CLASS_STATS_PASSES: PASSES}), ArrayRecord(), LABELED,
                                 PASSES, DIM, timeout=5.0)


def _good(subject: int) -> dict[str, np.ndarray]:
    return subject_stats(subject).to_arrays()


BAD_REPLIES: list[tuple[str, Callable[[], Message], str]] = [
    # counts that do not match what the server knows of subject 3's labels (inflated weight)
    ("inflated counts", lambda: stats_reply(13, {**_good(3), "counts": np.array([400.0, 0.0, 0.0])}, 3),
     "differ from the expected [4, 0, 0]"),
    # a NaN in the sums
    ("nan", lambda: stats_reply(13, {**_good(3), "sums": np.full((K, DIM), np.nan)}, 3), "finite"),
    # features of another model
    ("wrong dim", lambda: stats_reply(13, {**_good(3), "sums": np.zeros((K, 5)), "scatter": np.eye(5)}, 3),
     "expected 3 x 4"),
    # an asymmetric scatter
    ("asymmetric", lambda: stats_reply(13, {**_good(3), "scatter": np.triu(np.ones((DIM, DIM)))}, 3), "symmetric"),
    # a missing array
    ("missing array", lambda: stats_reply(13, {"counts": _good(3)["counts"]}, 3), "expected arrays"),
    # subject 1 again, from another node
    ("duplicate", lambda: stats_reply(13, _good(1), 1), "already replied"),
    # not a training subject
    ("unknown subject", lambda: stats_reply(13, _good(3), 9), "not a training subject"),
    # the client crashed
    ("error", lambda: Message(Error(code=0, reason="disk on fire"), reply_to=_instruction(13)), "disk on fire"),
]


class TestRunClassStatsRound:
    def test_round__merges_every_valid_reply_and_sends_the_query(self) -> None:
        grid = _grid([stats_reply(10 + s, _good(s), s) for s in (3, 1, 2)])
        result = _run(grid)
        expected = ClassFeatureStats.merge([subject_stats(s) for s in (1, 2, 3)])
        assert result.subjects == (1, 2, 3) and result.rejected == {}  # type: ignore[attr-defined]
        np.testing.assert_allclose(result.stats.scatter, expected.scatter)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(result.stats.counts, [6, 4, 4])  # type: ignore[attr-defined]
        sent = grid.send_and_receive.call_args.args[0]
        assert sorted(m.metadata.dst_node_id for m in sent) == [11, 12, 13]
        assert {m.metadata.message_type for m in sent} == {"query.class_stats"}
        assert sent[0].content[keys.CONFIG][keys.CLASS_STATS_PASSES] == PASSES

    @pytest.mark.parametrize(("bad", "words"), [(b, w) for _, b, w in BAD_REPLIES], ids=[i for i, _, _ in BAD_REPLIES])
    def test_round__malformed_reply__rejected_counted_and_logged(
        self, bad: Callable[[], Message], words: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        result = _run(_grid([stats_reply(11, _good(1), 1), stats_reply(12, _good(2), 2), bad()]))
        assert result.subjects == (1, 2)  # type: ignore[attr-defined]
        assert list(result.rejected) == [13] and words in result.rejected[13]  # type: ignore[attr-defined]
        assert "rejected the reply of node 13" in caplog.text
        summary = result.summary()  # type: ignore[attr-defined]
        assert summary["num_rejected"] == 1 and summary["rows_per_class"] == [2.0, 4.0, 4.0]  # 2 x (1, 1, 0) + 2 x (0, 1, 2)

    def test_round__no_valid_reply__raises(self) -> None:
        with pytest.raises(FederationError, match="no valid reply"):
            _run(_grid([stats_reply(11, {**_good(1), "counts": np.zeros(K)}, 1)]))

    def test_round__silent_node__counted_as_rejected(self) -> None:
        result = _run(_grid([stats_reply(11, _good(1), 1)], nodes=[11, 12]))
        assert result.rejected == {12: "no reply within 5 s"}  # type: ignore[attr-defined]


def head_reply(node: int, subject: object, weight: np.ndarray | None = None, accuracy: float = 0.5) -> Message:
    arrays = {"weight": np.zeros((K, DIM)) if weight is None else weight, "bias": np.zeros(K)}
    content = RecordDict({keys.PERSONAL_HEAD: ArrayRecord({k: Array(v) for k, v in arrays.items()}),
                          keys.METRICS: MetricRecord({keys.SUBJECT: subject, "accuracy-global": 0.4,  # type: ignore[dict-item]
                                                      "accuracy-personal": accuracy})})
    instruction = Message(content=RecordDict(), dst_node_id=node, message_type=PERSONALISE_MESSAGE_TYPE)
    return Message(content=content, reply_to=instruction)


class TestRunPersonaliseRound:
    @pytest.mark.parametrize(("bad", "words"), [
        (lambda: head_reply(13, 3, weight=np.zeros((K, DIM + 1))), "expected (3, 4), (3,)"),
        (lambda: head_reply(13, 3, weight=np.full((K, DIM), np.inf)), "finite"),
        (lambda: head_reply(13, 3, accuracy=1.5), "outside [0, 1]"),
        (lambda: head_reply(13, 9), "not a training subject"),
        (lambda: head_reply(13, 1), "already replied"),
    ], ids=["shape", "inf", "accuracy", "subject", "duplicate"])
    def test_round__valid_heads_kept_malformed_rejected(self, bad: Callable[[], Message], words: str) -> None:
        grid = _grid([head_reply(11, 1), head_reply(12, 2, accuracy=0.9), bad()])
        merged = ClassFeatureStats.merge([subject_stats(s) for s in (1, 2, 3)])
        heads, rejected = run_personalise_round(grid, ConfigRecord(), ArrayRecord(), merged, (1, 2, 3), 5.0)
        assert [h.subject for h in heads] == [1, 2] and heads[1].own == {"accuracy-global": 0.4,
                                                                          "accuracy-personal": 0.9}
        assert list(rejected) == [13] and words in rejected[13]
        sent = grid.send_and_receive.call_args.args[0][0]
        assert sent.metadata.message_type == "query.personalise"
        np.testing.assert_array_equal(sent.content[keys.GLOBAL_STATS]["scatter"].numpy(), merged.scatter)
