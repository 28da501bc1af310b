"""QoMFedAvg on hand-made replies: per-modality weighting, holders only, FedAvg equivalence, rejection."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Error, Message, RecordDict
from flwr.serverapp.strategy import FedAvg

from fedhar import keys
from strategies import QoMFedAvg

IMU, SKEL, SHARED_KEY = "encoders.imu.w", "encoders.skel.w", "classifier.b"
IMU_HEAD = "heads.imu.w"


def _reference() -> dict[str, np.ndarray]:
    return {
        IMU: np.zeros(2, np.float32),
        IMU_HEAD: np.zeros((2, 2), np.float32),
        SKEL: np.zeros(3, np.float32),
        SHARED_KEY: np.zeros(1, np.float32),
    }


def _arrays(value: float, modalities: tuple[str, ...] = ("imu", "skel")) -> dict[str, np.ndarray]:
    """Every key of ``modalities`` plus the shared key, filled with ``value``."""
    ref = _reference()
    keep = {SHARED_KEY} | {k for k in ref for m in modalities if k.split(".")[1] == m}
    return {k: np.full_like(ref[k], value) for k in keep}


def _as_numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


class TestQoMFedAvgConfigure:
    def test_configure_train__sets_stage_and_message_type(self, configure: Callable) -> None:
        # Prepare
        strategy = QoMFedAvg(stage="finetune")
        # Execute
        messages = configure(strategy, _reference(), [4, 5])
        # Assert
        assert {m.metadata.dst_node_id for m in messages} == {4, 5}
        assert all(m.metadata.message_type == "train.finetune" for m in messages)
        assert all(m.content[keys.CONFIG][keys.STAGE] == "finetune" for m in messages)
        assert strategy.bytes_sent == 2 * ArrayRecord({k: Array(v) for k, v in _reference().items()}).count_bytes()

    @pytest.mark.parametrize(("kwargs", "match"), [
        ({"stage": "warmup"}, "stage"),
        ({"weighting": "median"}, "weighting"),
        ({"max_examples": 0}, "max_examples"),
    ])
    def test_init__rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            QoMFedAvg(**kwargs)


class TestQoMFedAvgAggregate:
    def test_aggregate_train__weights_each_modality_by_examples_times_quality(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        # Prepare: s1 (n=10) and s2 (n=30) hold both modalities, s3 (n=20) only imu.
        strategy = QoMFedAvg()
        configure(strategy, _reference())
        replies = [
            reply(1, _arrays(1.0), metrics(1, 10, imu=0.8, skel=0.2)),
            reply(2, _arrays(3.0), metrics(2, 30, imu=0.4, skel=0.6)),
            reply(3, _arrays(5.0, ("imu",)), metrics(3, 20, imu=0.5)),
        ]
        # Execute
        arrays, out = strategy.aggregate_train(1, replies)
        # Assert: imu weights 8 : 12 : 10 (n*q) over 30; skel 2 : 18 over 20 (s3 lacks it);
        # shared 10 : 30 : 20 over 60.
        got = _as_numpy(arrays)
        np.testing.assert_allclose(got[IMU], (8 * 1 + 12 * 3 + 10 * 5) / 30, rtol=1e-6)
        np.testing.assert_allclose(got[IMU_HEAD], (8 * 1 + 12 * 3 + 10 * 5) / 30, rtol=1e-6)
        np.testing.assert_allclose(got[SKEL], (2 * 1 + 18 * 3) / 20, rtol=1e-6)
        np.testing.assert_allclose(got[SHARED_KEY], (10 * 1 + 30 * 3 + 20 * 5) / 60, rtol=1e-6)
        weights = strategy.client_weights[1]
        assert weights["imu"]["subject-3"] == pytest.approx(10 / 30)
        assert weights["skel"]["subject-2"] == pytest.approx(18 / 20)
        assert "subject-3" not in weights["skel"]
        assert weights["shared"]["subject-1"] == pytest.approx(10 / 60)
        assert out[f"{keys.QOM_PREFIX}skel-subject-2"] == pytest.approx(0.6)
        assert out[keys.NUM_REJECTED] == 0 and out[keys.NUM_AGGREGATED] == 3

    def test_aggregate_train__examples_weighting_ignores_quality(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg(weighting="examples")
        configure(strategy, _reference())
        replies = [
            reply(1, _arrays(1.0), metrics(1, 10, imu=0.8, skel=0.2)),
            reply(2, _arrays(3.0), metrics(2, 30, imu=0.4, skel=0.6)),
            reply(3, _arrays(5.0, ("imu",)), metrics(3, 20, imu=0.5)),
        ]
        got = _as_numpy(strategy.aggregate_train(1, replies)[0])
        np.testing.assert_allclose(got[IMU], (10 * 1 + 30 * 3 + 20 * 5) / 60, rtol=1e-6)
        np.testing.assert_allclose(got[SKEL], (10 * 1 + 30 * 3) / 40, rtol=1e-6)

    def test_aggregate_train__modality_without_holders_keeps_previous_arrays(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg()
        reference = _reference()
        reference[SKEL] = np.array([7.0, 8.0, 9.0], np.float32)
        configure(strategy, reference)
        replies = [reply(1, _arrays(2.0, ("imu",)), metrics(1, 5, imu=0.3))]
        got = _as_numpy(strategy.aggregate_train(1, replies)[0])
        np.testing.assert_array_equal(got[SKEL], reference[SKEL])
        np.testing.assert_array_equal(got[IMU], [2.0, 2.0])

    def test_aggregate_train__equal_qualities_match_flower_fedavg_exactly(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        # Prepare: random arrays, every client holds every modality, same quality everywhere.
        rng = np.random.default_rng(0)
        reference = _reference()
        replies = [
            reply(node, {k: rng.normal(size=v.shape).astype(np.float32) for k, v in reference.items()},
                  metrics(node, n, imu=0.37, skel=0.37))
            for node, n in ((11, 7), (12, 19), (13, 3), (14, 31))
        ]
        strategy = QoMFedAvg()
        configure(strategy, reference)
        # Execute
        ours = _as_numpy(strategy.aggregate_train(1, replies)[0])
        theirs = _as_numpy(FedAvg().aggregate_train(1, replies)[0])
        # Assert: bit for bit, dtype included.
        assert ours.keys() == theirs.keys()
        for k in ours:
            assert ours[k].dtype == theirs[k].dtype
            np.testing.assert_array_equal(ours[k], theirs[k])

    def test_aggregate_train__integer_buffers_keep_their_dtype(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        counter = "encoders.imu.bn.num_batches_tracked"
        reference = {**_reference(), counter: np.array(0, np.int64)}
        strategy = QoMFedAvg()
        configure(strategy, reference)
        replies = [
            reply(1, {**_arrays(1.0), counter: np.array(4, np.int64)}, metrics(1, 10, imu=1.0, skel=1.0)),
            reply(2, {**_arrays(1.0), counter: np.array(6, np.int64)}, metrics(2, 10, imu=1.0, skel=1.0)),
        ]
        got = _as_numpy(strategy.aggregate_train(1, replies)[0])
        assert got[counter].dtype == np.int64 and got[counter] == 5

    def test_aggregate_train__no_valid_reply_keeps_previous_arrays(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg()
        reference = {k: np.full_like(v, 4.0) for k, v in _reference().items()}
        configure(strategy, reference)
        bad = _arrays(np.nan)
        arrays, out = strategy.aggregate_train(1, [reply(1, bad, metrics(1, 10, imu=0.5, skel=0.5))])
        for k, v in _as_numpy(arrays).items():
            np.testing.assert_array_equal(v, reference[k])
        assert out[keys.NUM_REJECTED] == 1 and out[keys.NUM_AGGREGATED] == 0

    def test_aggregate_train__error_replies_are_counted(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg()
        configure(strategy, _reference())
        instruction = Message(content=RecordDict(), dst_node_id=9, message_type="train.pretrain")
        failed = Message(Error(code=0, reason="client crashed"), reply_to=instruction)
        arrays, out = strategy.aggregate_train(1, [failed, reply(1, _arrays(1.0), metrics(1, 10, imu=1.0, skel=1.0))])
        assert out[keys.NUM_REJECTED] == 1 and out[keys.NUM_AGGREGATED] == 1
        np.testing.assert_array_equal(_as_numpy(arrays)[IMU], [1.0, 1.0])

    def test_aggregate_train__summation_order_does_not_depend_on_reply_order(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        rng = np.random.default_rng(1)
        reference = _reference()
        replies = [
            reply(100 - s, {k: rng.normal(size=v.shape).astype(np.float32) for k, v in reference.items()},
                  metrics(s, 3 + s, imu=0.1 * s, skel=0.3))
            for s in range(1, 6)
        ]
        strategy = QoMFedAvg()
        configure(strategy, reference)
        forward = _as_numpy(strategy.aggregate_train(1, replies)[0])
        backward = _as_numpy(strategy.aggregate_train(1, replies[::-1])[0])
        for k in forward:
            np.testing.assert_array_equal(forward[k], backward[k])


def _nan(arrays: dict) -> dict:
    arrays[IMU] = np.array([np.nan, 1.0], np.float32)
    return arrays


def _inf(arrays: dict) -> dict:
    arrays[SHARED_KEY] = np.array([np.inf], np.float32)
    return arrays


def _wrong_shape(arrays: dict) -> dict:
    arrays[SKEL] = np.ones(4, np.float32)
    return arrays


def _wrong_dtype(arrays: dict) -> dict:
    arrays[IMU] = arrays[IMU].astype(np.float64)
    return arrays


def _missing_key(arrays: dict) -> dict:
    del arrays[IMU_HEAD]
    return arrays


def _extra_key(arrays: dict) -> dict:
    arrays["encoders.imu.bogus"] = np.ones(1, np.float32)
    return arrays


def _undeclared_modality(arrays: dict) -> dict:
    # Sends skeleton parameters without a qom-skel claim (claims imu only).
    return arrays


# Each row: (description, how the arrays are broken, metrics override). Every malformed
# reply comes from node 9 / subject 9 and must be rejected while subjects 1 and 2 are
# aggregated as if it never came.
MALFORMED = [
    ("NaN in an encoder", _nan, {}),
    ("Inf in a shared parameter", _inf, {}),
    ("wrong shape", _wrong_shape, {}),
    ("wrong dtype (float64 for float32)", _wrong_dtype, {}),
    ("missing key of a claimed modality", _missing_key, {}),
    ("extra key no model has", _extra_key, {}),
    ("arrays of a modality it does not claim", _undeclared_modality, {"drop": f"{keys.QOM_PREFIX}skel"}),
    ("negative num-examples", None, {keys.NUM_EXAMPLES: -5}),
    ("zero num-examples", None, {keys.NUM_EXAMPLES: 0}),
    ("absurd num-examples", None, {keys.NUM_EXAMPLES: 10**12}),
    ("QoM above 1", None, {f"{keys.QOM_PREFIX}imu": 7.5}),
    ("negative QoM", None, {f"{keys.QOM_PREFIX}skel": -0.1}),
    ("NaN QoM", None, {f"{keys.QOM_PREFIX}imu": float("nan")}),
    ("QoM of a modality the model lacks", None, {f"{keys.QOM_PREFIX}depth": 0.5}),
    ("no QoM at all (claims no modality)", None,
     {"drop": [f"{keys.QOM_PREFIX}imu", f"{keys.QOM_PREFIX}skel"]}),
    ("missing num-examples", None, {"drop": keys.NUM_EXAMPLES}),
    ("NaN train loss", None, {keys.TRAIN_LOSS: float("nan")}),
    ("list-valued num-examples", None, {keys.NUM_EXAMPLES: [1, 2]}),
    ("duplicate subject id (impersonates subject 1)", None, {keys.SUBJECT: 1}),
]


@pytest.mark.parametrize(("breakage", "metric_changes"), [row[1:] for row in MALFORMED],
                         ids=[row[0] for row in MALFORMED])
def test_aggregate_train__rejects_malformed_reply_and_aggregates_the_rest(
    breakage: Callable | None, metric_changes: dict, configure: Callable, reply: Callable, metrics: Callable,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    strategy = QoMFedAvg()
    configure(strategy, _reference())
    good = [
        reply(1, _arrays(1.0), metrics(1, 10, imu=0.5, skel=0.5)),
        reply(2, _arrays(3.0), metrics(2, 30, imu=0.5, skel=0.5)),
    ]
    bad_metrics = metrics(9, 10, imu=0.5, skel=0.5)
    changes = dict(metric_changes)
    drops = changes.pop("drop", [])
    for key in [drops] if isinstance(drops, str) else drops:
        del bad_metrics[key]
    bad_metrics.update(changes)
    bad_arrays = breakage(_arrays(100.0)) if breakage else _arrays(100.0)
    bad = reply(9, bad_arrays, bad_metrics)
    # Execute
    with caplog.at_level(logging.WARNING):
        arrays, out = strategy.aggregate_train(1, [*good, bad])
    # Assert: a subject claimed by two nodes is a conflict that rejects both claimants (not
    # "first one wins", which an impersonator arriving first would win)
    got = _as_numpy(arrays)
    conflict = bad_metrics.get(keys.SUBJECT) == 1
    for key in (IMU, SKEL, SHARED_KEY):
        np.testing.assert_allclose(got[key], 3.0 if conflict else (10 * 1 + 30 * 3) / 40, rtol=1e-6)
    assert (out[keys.NUM_REJECTED], out[keys.NUM_AGGREGATED]) == ((2, 1) if conflict else (1, 2))
    assert any("node 9" in r.getMessage() for r in caplog.records)


def test_partial_participation__half_the_nodes_sampled_and_weighted_among_themselves(
    configure: Callable, reply: Callable, metrics: Callable
) -> None:
    # fraction_train 0.5 of six nodes, minimum 3: three are asked; weights and the mean QoM
    # (the stage-2 prior's input) are over the three that replied.
    strategy = QoMFedAvg(fraction_train=0.5, min_train_nodes=3, min_available_nodes=3)
    sent = configure(strategy, _reference(), node_ids=[11, 12, 13, 14, 15, 16])
    asked = sorted(m.metadata.dst_node_id for m in sent)
    assert len(asked) == 3 and set(asked) <= {11, 12, 13, 14, 15, 16}
    replies = [reply(node, _arrays(float(i)), metrics(node - 10, 10 * (i + 1), imu=0.5, skel=0.5))
               for i, node in enumerate(asked)]
    _, out = strategy.aggregate_train(1, replies)
    weights = strategy.client_weights[1]
    assert set(weights["imu"]) == {f"subject-{n - 10}" for n in asked}
    assert sum(weights["shared"].values()) == pytest.approx(1.0)
    assert weights["shared"][f"subject-{asked[2] - 10}"] == pytest.approx(30 / 60)
    assert out[keys.NUM_AGGREGATED] == 3 and out[keys.NUM_TIMEOUTS] == 0
    assert out[f"{keys.QOM_PREFIX}imu"] == pytest.approx(0.5)
