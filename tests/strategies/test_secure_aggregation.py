"""Secure aggregation end to end in one process: QoMFedAvg's SecAgg+ rounds against the client mod.

A loopback grid hands every message to :func:`clients.secure_aggregation.secure_aggregation_mod`
of its node (each node with its own Context), whose handler "trains" by returning the
global arrays plus a known update. What reaches the strategy is recorded and inspected.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.quantization import dequantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key

from clients.secure_aggregation import secure_aggregation_mod
from fedhar import keys
from fedhar.aggregation import InfluenceBounds
from fedhar.privacy import DPConfig, clip_update
from fedhar.secure_sum import SecureAggregationConfig, secure_contribution
from fedhar.train.class_stats import ClassFeatureStats
from strategies.class_stats_round import run_class_stats_round
from strategies.qom_fedavg import QoMFedAvg
from strategies.run_privacy import RunPrivacy
from strategies.secure_aggregation import SecureAggregation
from tests.strategies.conftest import Handler, LoopbackGrid, client_metrics, make_reply

REFERENCE = {
    "encoders.acc.w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "heads.acc.b": np.zeros(3, np.float32),
    "encoders.gyro.w": np.linspace(0, 2, 6, dtype=np.float32),
    "classifier.b": np.ones(2, np.float32),
}
NODE_SUBJECT = {101: 1, 102: 2, 103: 3, 104: 4, 105: 5, 106: 6}
KNOWN = {1: 100.0, 2: 80.0, 3: 60.0, 4: 120.0, 5: 90.0, 6: 70.0}
QOM = {1: {"acc": 0.9, "gyro": 0.2}, 2: {"acc": 0.5, "gyro": 0.7}, 3: {"acc": 0.3},
       4: {"acc": 0.8, "gyro": 0.9}, 5: {"acc": 0.6, "gyro": 0.4}, 6: {"acc": 0.05, "gyro": 0.5}}


def _trained(subject: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(subject)
    return {k: (v + rng.normal(scale=0.2, size=v.shape)).astype(v.dtype) for k, v in REFERENCE.items()
            if not k.startswith("encoders.gyro") or "gyro" in QOM[subject]}


def _handler(subject: int, fail: bool = False, claim: int | None = None) -> Handler:
    def train(msg: Message, ctxt: Context) -> Message:
        if fail:
            raise RuntimeError(f"subject {subject} lost power mid-round")
        metrics = client_metrics(claim or subject, int(KNOWN[subject]), **QOM[subject])
        content = RecordDict({keys.ARRAYS: ArrayRecord({k: Array(v) for k, v in _trained(subject).items()}),
                              keys.METRICS: MetricRecord(metrics)})
        return Message(content, reply_to=msg)
    return train


def _strategy(secure: SecureAggregationConfig | None, nodes: list[int], privacy: RunPrivacy | None = None) -> QoMFedAvg:
    setting = None if secure is None else SecureAggregation(secure, {n: NODE_SUBJECT[n] for n in nodes}, 5.0, 0)
    return QoMFedAvg(bounds=InfluenceBounds(update_clip=None), secure=setting, privacy=privacy,
                     known_examples={NODE_SUBJECT[n]: KNOWN[NODE_SUBJECT[n]] for n in nodes},
                     min_train_nodes=len(nodes), min_available_nodes=len(nodes))


def _secure_round(grid: LoopbackGrid, cfg: SecureAggregationConfig | None = None,
                  privacy: RunPrivacy | None = None) -> tuple[QoMFedAvg, dict]:
    nodes = sorted(grid.handlers)
    strategy = _strategy(cfg or SecureAggregationConfig(enabled=True), nodes, privacy)
    messages = strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in REFERENCE.items()}), ConfigRecord(),
                                        grid)
    replies = grid.send_and_receive(list(messages))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return strategy, {k: v.numpy() for k, v in arrays.items()}


def _plain_round(nodes: list[int]) -> dict[str, np.ndarray]:
    strategy = _strategy(None, nodes)
    record = ArrayRecord({k: Array(v) for k, v in REFERENCE.items()})
    grid = LoopbackGrid({n: _handler(NODE_SUBJECT[n]) for n in nodes})
    list(strategy.configure_train(1, record, ConfigRecord(), grid))
    replies = [make_reply(n, _trained(NODE_SUBJECT[n]), client_metrics(NODE_SUBJECT[n], int(KNOWN[NODE_SUBJECT[n]]),
                                                                       **QOM[NODE_SUBJECT[n]])) for n in nodes]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    return {k: v.numpy() for k, v in arrays.items()}


def _assert_close(secure: dict[str, np.ndarray], plain: dict[str, np.ndarray]) -> None:
    # Quantisation: at most one step (16 / 2**22) per client per entry, divided by the group's weight sum.
    for name, value in plain.items():
        np.testing.assert_allclose(secure[name], value, atol=3e-5, err_msg=name)


def test_secure_round__equals_the_plain_aggregate_within_quantisation_error() -> None:
    grid = LoopbackGrid({n: _handler(s) for n, s in NODE_SUBJECT.items()})
    strategy, arrays = _secure_round(grid)
    plain = _plain_round(sorted(NODE_SUBJECT))
    _assert_close(arrays, plain)
    moved = max(float(np.abs(arrays[k] - REFERENCE[k]).max()) for k in REFERENCE)
    assert moved > 0.05  # the round did move the model: not a no-op that "matches"
    record = strategy.secure_rounds[1]
    assert record["num_summed"] == 6 and not record["dropped"]
    assert strategy.round_metrics[1][f"{keys.QOM_PREFIX}gyro"] == pytest.approx(
        sum(KNOWN[s] * max(q["gyro"], 0.1) for s, q in QOM.items() if "gyro" in q)
        / sum(KNOWN[s] for s, q in QOM.items() if "gyro" in q), rel=1e-4)


def test_secure_round__the_strategy_never_holds_one_clients_update() -> None:
    grid = LoopbackGrid({n: _handler(s) for n, s in NODE_SUBJECT.items()})
    strategy, _ = _secure_round(grid)
    cfg = SecureAggregationConfig(enabled=True)
    for reply in grid.received:
        assert set(reply.content.array_records) <= {keys.SECAGG_MASKED}  # no weights in the clear
        metrics = reply.content.metric_records.get(keys.METRICS)
        assert metrics is None or set(metrics) == {keys.SUBJECT}  # no quality, loss or example count
    collected = [r for r in grid.received if keys.SECAGG_MASKED in r.content.array_records]
    assert len(collected) == 6
    for reply in collected:
        subject = NODE_SUBJECT[reply.metadata.src_node_id]
        record = reply.content.array_records[keys.SECAGG_MASKED]
        masked = [record[name].numpy() for name in sorted(record)]
        # Read as if unmasked, the vector has nothing to do with the client's contribution.
        levels = cfg.quantization_for(6)
        decoded = dequantize([m % levels for m in masked[1:]], cfg.clipping_range, levels)
        own = secure_contribution(_trained(subject), REFERENCE, QOM[subject], KNOWN[subject] / 120.0, "qom",
                                  (0.1, 1.0))
        error = np.concatenate([np.ravel(d - o) for d, o in zip(decoded, own, strict=True)])
        assert float(np.abs(error).mean()) > 1.0  # uniform over [-8, 8]: mean distance ~4
    assert strategy.client_weights == {}  # no per-client weights in the server's record


def test_secure_round_with_dp__clients_clip_the_server_noises_the_floored_sum() -> None:
    # C = 0.4 over 3 groups (acc, gyro, shared): every client's group of norm ~0.7 is clipped to 0.23 by the
    # client itself; the server releases A / max(W_min, B) and accounts one Gaussian release of 6 clients.
    dp = DPConfig(enabled=True, noise_multiplier=1e-9, clip_norm=0.4, noise_seed=0)
    privacy = RunPrivacy(dp, population=6, num_sampled=6)
    grid = LoopbackGrid({n: _handler(s) for n, s in NODE_SUBJECT.items()})
    strategy, arrays = _secure_round(grid, privacy=privacy)
    # The same release from the clipped updates in the clear (B for acc: sum of s_k * clip(q) < W_min = 3).
    total = [sum(parts) for parts in zip(*(secure_contribution(
        clip_update(_trained(s), REFERENCE, 0.4)[0], REFERENCE, QOM[s], KNOWN[s] / 120.0, "qom", (0.1, 1.0))
        for s in NODE_SUBJECT.values()), strict=True)]
    mean = {k: REFERENCE[k] + total[i] / total[-1][-1 if k == "classifier.b" else (0 if "acc" in k else 1)]
            for i, k in enumerate(sorted(REFERENCE))}
    weights = strategy.secure_rounds[1]["weight_sums"]
    assert weights["acc"] < 3.0 and weights["shared"] == pytest.approx(sum(KNOWN.values()) / 120.0, rel=1e-6)
    for k, value in mean.items():
        group = "shared" if k == "classifier.b" else ("acc" if "acc" in k else "gyro")
        expected = REFERENCE[k] + (value - REFERENCE[k]) * weights[group] / max(3.0, weights[group])
        np.testing.assert_allclose(arrays[k], expected, atol=3e-5, err_msg=k)
    # Clipped by the clients: each group moved by at most its bound C / sqrt(3).
    for group in ("encoders.acc", "encoders.gyro"):
        moved = np.concatenate([np.ravel(arrays[k] - REFERENCE[k]) for k in REFERENCE if k.startswith(group)])
        assert 0.01 < np.linalg.norm(moved) <= 0.4 / np.sqrt(3) + 1e-5
    assert [r["clients"] for r in privacy.releases] == [6] and privacy.epsilon > 0
    assert strategy.client_weights == {}  # still no per-client record
    for reply in grid.received:  # what reached the server: masked vectors, no update in the clear
        assert set(reply.content.array_records) <= {keys.SECAGG_MASKED}


@pytest.mark.parametrize("dropped", [[103], [102, 105]])
def test_secure_round__clients_dropping_mid_round__sum_of_the_rest(dropped: list[int]) -> None:
    grid = LoopbackGrid({n: _handler(s, fail=n in dropped) for n, s in NODE_SUBJECT.items()})
    strategy, arrays = _secure_round(grid)
    _assert_close(arrays, _plain_round([n for n in sorted(NODE_SUBJECT) if n not in dropped]))
    record = strategy.secure_rounds[1]
    assert record["num_summed"] == 6 - len(dropped)
    assert sorted(int(n) for n in record["dropped"]) == dropped
    assert all("lost power" in why for why in record["dropped"].values())


def test_secure_round__silent_in_collect_counts_as_dropped() -> None:
    grid = LoopbackGrid({n: _handler(s) for n, s in NODE_SUBJECT.items()}, silent=[104],
                        silent_stage="collect_masked_vectors")
    strategy, arrays = _secure_round(grid)
    _assert_close(arrays, _plain_round([n for n in sorted(NODE_SUBJECT) if n != 104]))
    assert strategy.secure_rounds[1]["dropped"] == {"104": "collect: no reply before the timeout"}


def test_secure_round__below_the_threshold__round_fails_and_keeps_the_model() -> None:
    grid = LoopbackGrid({n: _handler(s, fail=n in (101, 102, 103, 104)) for n, s in NODE_SUBJECT.items()})
    strategy, arrays = _secure_round(grid)  # threshold: half of 6 shares = 3; 2 survivors
    for name, value in REFERENCE.items():
        np.testing.assert_array_equal(arrays[name], value)
    assert "threshold is 3" in strategy.failed_rounds[1]


def test_secure_round__a_node_claiming_another_subject__left_out_of_the_sum() -> None:
    handlers = {n: _handler(s, claim=1 if n == 106 else None) for n, s in NODE_SUBJECT.items()}
    strategy, arrays = _secure_round(LoopbackGrid(handlers))
    _assert_close(arrays, _plain_round([n for n in sorted(NODE_SUBJECT) if n != 106]))
    assert "claims subject-1" in strategy.secure_rounds[1]["dropped"]["106"]


def test_secure_with_a_robust_rule__refused() -> None:
    from fedhar.errors import ConfigError
    with pytest.raises(ConfigError, match="bounds.rule"):
        QoMFedAvg(bounds=InfluenceBounds(rule="median"), known_examples=KNOWN,
                  secure=SecureAggregation(SecureAggregationConfig(enabled=True), NODE_SUBJECT, 5.0, 0))


def test_mod__message_without_the_protocol_record__passes_through() -> None:
    msg = Message(RecordDict({keys.CONFIG: ConfigRecord({"x": 1})}), dst_node_id=101, message_type="train.pretrain")
    context = Context(run_id=1, node_id=101, node_config={}, state=RecordDict(), run_config={})
    reply = secure_aggregation_mod(msg, context, _handler(1))
    assert keys.ARRAYS in reply.content.array_records


def test_secure_round__one_node__fails_clearly_without_training() -> None:
    grid = LoopbackGrid({101: _handler(1)})
    strategy, arrays = _secure_round(grid)
    assert "1 node(s) sampled: secure aggregation needs at least 2" in strategy.failed_rounds[1]
    assert not any(keys.SECAGG_MASKED in r.content.array_records for r in grid.received if not r.has_error())
    for name, value in REFERENCE.items():
        np.testing.assert_array_equal(arrays[name], value)


LABELED = {s: np.array([s % 3, 1, 2]) for s in NODE_SUBJECT.values()}  # labeled rows per class of each subject


def _subject_stats(subject: int, passes: int, dim: int = 4, scale: float = 3.0) -> ClassFeatureStats:
    rng = np.random.default_rng(100 + subject)
    counts = (1 + passes) * LABELED[subject]
    rows = [(c, rng.normal(scale=scale, size=dim)) for c, n in enumerate(counts) for _ in range(int(n))]
    sums = np.zeros((3, dim))
    for c, x in rows:
        sums[c] += x
    xs = np.array([x for _, x in rows])
    return ClassFeatureStats(counts.astype(np.float64), sums, xs.T @ xs)


def _stats_handler(subject: int, fail: bool = False, dim: int = 4, scale: float = 3.0, passes: int = 1) -> Handler:
    def query(msg: Message, ctxt: Context) -> Message:
        if fail:
            raise RuntimeError(f"subject {subject} lost power mid-round")
        stats = _subject_stats(subject, passes=passes, dim=dim, scale=scale)
        content = RecordDict({keys.CLASS_STATS: ArrayRecord({k: Array(v) for k, v in stats.to_arrays().items()}),
                              keys.METRICS: MetricRecord({keys.SUBJECT: subject})})
        return Message(content, reply_to=msg)
    return query


@pytest.mark.parametrize("dropped", [[], [104]])
def test_secure_class_stats_round__equals_the_merge_of_the_survivors(dropped: list[int]) -> None:
    grid = LoopbackGrid({n: _stats_handler(s, fail=n in dropped) for n, s in NODE_SUBJECT.items()})
    setting = SecureAggregation(SecureAggregationConfig(enabled=True, feature_clip=100.0), NODE_SUBJECT, 5.0, 0)
    result = run_class_stats_round(grid, ConfigRecord(), ArrayRecord(), LABELED, passes=1, dim=4, timeout=5.0,
                                   secure=setting)
    survivors = [s for n, s in NODE_SUBJECT.items() if n not in dropped]
    plain = ClassFeatureStats.merge([_subject_stats(s, passes=1) for s in survivors])
    assert result.subjects == tuple(survivors) and sorted(result.rejected) == dropped
    np.testing.assert_array_equal(result.stats.counts, plain.counts)
    # at most one quantisation step (16 / 2**22 / 8 of the range) per client, in units of
    # row scale (10 rows) x feature clip (100), and x 100 again for the scatter
    np.testing.assert_allclose(result.stats.sums, plain.sums, atol=6 * 2**-21 * 10 * 100)
    np.testing.assert_allclose(result.stats.scatter, plain.scatter, atol=6 * 2**-21 * 10 * 100**2)
    for reply in grid.received:  # the server saw no client's statistics
        assert reply.has_error() or set(reply.content.array_records) <= {keys.SECAGG_MASKED}


def test_secure_class_stats_round__rank_deficient_covariance_stays_positive_definite() -> None:
    # Many features, few rows (as lda on UTD-MHAD: 1408 features, ~300 rows, up to 110 per client): the pooled covariance
    # is the shrunk within-class scatter, and quantisation noise must stay below the shrinkage.
    # Fixed 2^22 levels left it indefinite (lda at 0 % on UTD-MHAD); the default levels do not.
    dim, scale = 1000, 10 / np.sqrt(1000)  # feature rows of norm ~10 against feature_clip 32
    grid = LoopbackGrid({n: _stats_handler(s, dim=dim, scale=scale, passes=10) for n, s in NODE_SUBJECT.items()})
    setting = SecureAggregation(SecureAggregationConfig(enabled=True), NODE_SUBJECT, 5.0, 0)
    result = run_class_stats_round(grid, ConfigRecord(), ArrayRecord(), LABELED, passes=10, dim=dim, timeout=5.0,
                                   secure=setting)
    plain = ClassFeatureStats.merge([_subject_stats(s, 10, dim, scale) for s in NODE_SUBJECT.values()])
    assert plain.counts.sum() < dim  # rank-deficient scatter
    secure_cov, plain_cov = result.stats.pooled_covariance(0.3), plain.pooled_covariance(0.3)
    assert np.linalg.eigvalsh(secure_cov).min() > 0.5 * np.linalg.eigvalsh(plain_cov).min() > 0
    np.testing.assert_allclose(secure_cov, plain_cov, atol=1e-3 * np.abs(plain_cov).max())


def test_secure_round__a_client_breaking_the_protocol__dropped_not_a_crash() -> None:
    # A node whose share_keys reply lacks its ciphertexts is taken out of the round (as a dropout);
    # the others' sum is still exact.
    handlers = {n: _handler(s) for n, s in NODE_SUBJECT.items()}
    grid = LoopbackGrid(handlers)
    deliver = grid.send_and_receive

    def tamper(messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        replies = list(deliver(messages, timeout=timeout))
        for reply in replies:
            record = None if reply.has_error() else reply.content.config_records.get(RECORD_KEY_CONFIGS)
            if reply.metadata.src_node_id == 102 and record is not None and Key.CIPHERTEXT_LIST in record:
                del record[Key.CIPHERTEXT_LIST]
        return replies

    grid.send_and_receive = tamper  # type: ignore[method-assign]
    strategy, arrays = _secure_round(grid)
    assert "malformed reply" in strategy.secure_rounds[1]["dropped"]["102"]
    _assert_close(arrays, _plain_round([n for n in sorted(NODE_SUBJECT) if n != 102]))
