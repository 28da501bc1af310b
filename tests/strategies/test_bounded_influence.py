"""What one hostile but well-formed reply can do to QoMFedAvg: scaled and sign-flipped updates,
inflated example counts and quality, a subject claimed by two nodes, an unknown subject."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from flwr.app import ArrayRecord

from fedhar import keys
from fedhar.aggregation import ClientUpdate, InfluenceBounds, bound_influence, robust_combine
from fedhar.errors import ConfigError, FederationError
from fedhar.federated import FailureInjection
from strategies import QoMFedAvg
from strategies.qom_fedavg import check_stage, influence_bounds
from strategies.run_config import compose_config
from strategies.server_app import check_federation

W = "encoders.imu.w"
SHARED = "classifier.b"
HONEST = (1.0, 1.2, 0.8, 1.1, 0.9)  # five honest updates of the same size (global = 0)


def _reference() -> dict[str, np.ndarray]:
    return {W: np.zeros(4, np.float32), SHARED: np.zeros(2, np.float32)}


def _arrays(value: float) -> dict[str, np.ndarray]:
    return {k: np.full_like(v, value) for k, v in _reference().items()}


def _global(arrays: ArrayRecord) -> float:
    return float(arrays[W].numpy()[0])


def _round(strategy: QoMFedAvg, replies: list, configure: Callable) -> tuple[float, dict]:
    configure(strategy, _reference(), node_ids=[11, 12, 13, 14, 15, 16])
    arrays, metrics = strategy.aggregate_train(1, replies)
    weights = {f"weight-{g}-{c}": w for g, clients in strategy.client_weights.get(1, {}).items() for c, w in clients.items()}
    return _global(arrays), {**dict(metrics), **weights}


def _honest(reply: Callable, metrics: Callable) -> list:
    return [reply(10 + s, _arrays(v), metrics(s, 100, imu=0.5)) for s, v in enumerate(HONEST, start=1)]


class TestUpdateClipping:
    def test_scaled_update__clipped_to_three_times_the_median(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        attack = reply(16, _arrays(1e6), metrics(6, 100, imu=0.5))
        undefended, _ = _round(QoMFedAvg(bounds=InfluenceBounds(update_clip=None)), [*_honest(reply, metrics), attack],
                               configure)
        defended, out = _round(QoMFedAvg(), [*_honest(reply, metrics), attack], configure)
        # Undefended the attacker moves the model by 1e6 / 6; defended its update is cut to 3 x the
        # median norm of the six (1.05 x sqrt(4)), so it contributes 3 x 1.05 / 6.
        assert undefended == pytest.approx((sum(HONEST) + 1e6) / 6, rel=1e-5)
        assert defended == pytest.approx((sum(HONEST) + 3 * 1.05) / 6, rel=1e-5)
        assert out[keys.NUM_CLIPPED] == 1

    def test_sign_flipped_update__median_rule_ignores_it(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        flipped = reply(16, _arrays(-50.0), metrics(6, 100, imu=0.5))
        mean, _ = _round(QoMFedAvg(), [*_honest(reply, metrics), flipped], configure)
        median, _ = _round(QoMFedAvg(bounds=InfluenceBounds(rule="median")), [*_honest(reply, metrics), flipped],
                           configure)
        assert mean < 0.5  # the clipped flip (-3) still pulls the mean down
        assert median == pytest.approx(float(np.median([*HONEST, -50.0])), rel=1e-6)

    def test_bound_influence__quality_clipped_into_range(self) -> None:
        updates = [ClientUpdate("subject-1", _arrays(1.0), 10, {"imu": 1.0}),
                   ClientUpdate("subject-2", _arrays(1.0), 10, {"imu": 0.01})]
        bounded, _ = bound_influence(updates, _reference(), InfluenceBounds(qom_range=(0.2, 0.9)))
        assert [u.qom["imu"] for u in bounded] == [0.9, 0.2]

    def test_robust_combine__trimmed_mean_drops_both_ends(self) -> None:
        values = [np.array([v]) for v in (0.0, 1.0, 2.0, 3.0, 100.0)]
        assert robust_combine(values, "trimmed_mean", 0.2)[0] == pytest.approx(2.0)
        assert robust_combine(values, "median", 0.2)[0] == pytest.approx(2.0)

    def test_bounds_config__read_from_the_strategy_group_and_checked(self) -> None:
        bounds = influence_bounds({"bounds": {"qom_range": [0.2, 1.0], "update_clip": None, "rule": "median"}})
        assert bounds == InfluenceBounds(qom_range=(0.2, 1.0), update_clip=None, rule="median")
        assert influence_bounds({}) == InfluenceBounds()
        with pytest.raises(ValueError, match=r"strategy.bounds: unknown keys"):
            influence_bounds({"bounds": {"clip": 3}})
        with pytest.raises(ValueError, match="update_clip must be >= 1"):
            influence_bounds({"bounds": {"update_clip": 0.5}})


class TestClaims:
    def test_inflated_examples__capped_at_what_the_server_knows(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        known = {1: 100, 2: 100}
        replies = [reply(11, _arrays(1.0), metrics(1, 100, imu=0.5)),
                   reply(12, _arrays(2.0), metrics(2, 9_999_999, imu=0.5))]
        value, out = _round(QoMFedAvg(known_examples=known), replies, configure)
        assert value == pytest.approx(1.5) and out["weight-imu-subject-2"] == pytest.approx(0.5)

    def test_inflated_quality__bounded_by_the_range(self, configure: Callable, reply: Callable, metrics: Callable) -> None:
        # Honest scores 0.1, one client claims 1.0: at most 10x their weight (it was 96 % of the
        # modality with an honest 0.01-0.05), here 1.0 / (1.0 + 5 x 0.1) = 2/3.
        replies = [reply(10 + s, _arrays(1.0), metrics(s, 100, imu=0.01)) for s in range(1, 6)]
        replies.append(reply(16, _arrays(1.0), metrics(6, 100, imu=1.0)))
        _, out = _round(QoMFedAvg(), replies, configure)
        assert out["weight-imu-subject-6"] == pytest.approx(1.0 / 1.5)

    def test_subject_claimed_by_two_nodes__both_rejected(
        self, configure: Callable, reply: Callable, metrics: Callable, caplog: pytest.LogCaptureFixture
    ) -> None:
        replies = [reply(11, _arrays(1.0), metrics(1, 100, imu=0.5)),
                   reply(12, _arrays(2.0), metrics(2, 100, imu=0.5)),
                   reply(13, _arrays(9.0), metrics(1, 100, imu=0.5))]  # node 13 claims subject 1 too
        value, out = _round(QoMFedAvg(known_examples={1: 100, 2: 100}), replies, configure)
        assert value == pytest.approx(2.0)  # only subject 2 is left
        assert out[keys.NUM_REJECTED] == 2 and out[keys.NUM_AGGREGATED] == 1
        assert "subject-1 is claimed by nodes [11, 13]" in caplog.text

    def test_unknown_subject_and_node_changing_subject__rejected(
        self, configure: Callable, reply: Callable, metrics: Callable, caplog: pytest.LogCaptureFixture
    ) -> None:
        strategy = QoMFedAvg(known_examples={1: 100, 2: 100})
        _round(strategy, [reply(11, _arrays(1.0), metrics(1, 100, imu=0.5)),
                          reply(12, _arrays(1.0), metrics(7, 100, imu=0.5))], configure)
        assert "subject-7 is not a training subject [1, 2]" in caplog.text
        value, out = _round(strategy, [reply(11, _arrays(5.0), metrics(2, 100, imu=0.5)),
                                       reply(14, _arrays(1.0), metrics(1, 100, imu=0.5))], configure)
        assert "node 11 claims subject-2 but is bound to subject-1" in caplog.text
        # node 14 now claims subject 1, bound to node 11: a conflict, rejected
        assert out[keys.NUM_AGGREGATED] == 0 and value == 0.0


class TestFailedRounds:
    def test_round_without_valid_replies__fails_and_counts_timeouts(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg(known_examples={1: 100, 2: 100, 3: 100})
        configure(strategy, _reference(), node_ids=[11, 12, 13])  # three sent, one answers, with junk
        _, out = strategy.aggregate_train(1, [reply(11, _arrays(float("nan")), metrics(1, 100, imu=0.5))])
        assert out[keys.NUM_TIMEOUTS] == 2 and out[keys.NUM_AGGREGATED] == 0
        assert "0 valid replies of 1 received (2 timed out, 1 rejected or failed; need 1)" in strategy.failed_rounds[1]
        assert "first error: node 11: classifier.b: holds NaN or Inf" in strategy.failed_rounds[1]
        with pytest.raises(FederationError, match=r"stage 1: all 1 rounds failed; round 1: 0 valid replies"):
            check_stage("stage 1", strategy, 1)
        check_stage("stage 1", strategy, 2)  # one of two rounds failed: a warning, not a failure

    def test_node_rejected_for_its_identity__not_sampled_again(
        self, configure: Callable, reply: Callable, metrics: Callable
    ) -> None:
        strategy = QoMFedAvg(known_examples={1: 100, 2: 100})
        configure(strategy, _reference(), node_ids=[11, 12])
        strategy.aggregate_train(1, [reply(11, _arrays(1.0), metrics(1, 100, imu=0.5)),
                                     reply(12, _arrays(1.0), metrics(9, 100, imu=0.5))])
        sent = configure(strategy, _reference(), node_ids=[11, 12])
        assert [m.metadata.dst_node_id for m in sent] == [11] and strategy.excluded == {12}


class TestFederationChecks:
    @pytest.mark.parametrize(("key", "value"), [("stage1_rounds", 0), ("stage1_local_epochs", -1),
                                                ("stage2_rounds", 0), ("min_valid_replies", 0)])
    def test_schedule_that_cannot_train__config_error_naming_the_key(self, key: str, value: int) -> None:
        cfg = compose_config(f"federation.{key}={value}")
        with pytest.raises(ConfigError, match=f"federation.{key} must be an integer >= 1"):
            check_federation(cfg.federation)
        check_federation(compose_config("").federation)

    def test_failure_injection__deterministic_and_about_the_fraction(self) -> None:
        inject = FailureInjection(fraction=0.3, seed=4)
        draws = [inject.fails(s, "pretrain", r) for s in range(1, 11) for r in range(1, 21)]
        assert draws == [inject.fails(s, "pretrain", r) for s in range(1, 11) for r in range(1, 21)]
        assert 0.2 < sum(draws) / len(draws) < 0.4
        assert not any(FailureInjection().fails(s, "pretrain", 1) for s in range(10))
        with pytest.raises(ConfigError, match="kind must be"):
            FailureInjection(kind="vanish")  # type: ignore[arg-type]

    def test_failure_injection__a_dropped_client_stays_away_for_the_rest_of_the_stage(self) -> None:
        drop, once = FailureInjection(fraction=0.1, kind="drop", seed=4), FailureInjection(fraction=0.1, seed=4)
        for subject in range(1, 21):
            rounds = [drop.fails(subject, "pretrain", r) for r in range(1, 31)]
            first = rounds.index(True) if True in rounds else len(rounds)
            # absent from the first round the per-round draw picks, and in every round after it
            assert rounds == [False] * first + [True] * (len(rounds) - first)
            assert first == next((r - 1 for r in range(1, 31) if once.fails(subject, "pretrain", r)), 30)
        # survival after 30 rounds at 10 % per round: (0.9)^30 ~ 4 %
        assert sum(not drop.fails(s, "pretrain", 30) for s in range(1, 201)) < 25

    def test_failure_injection__named_subjects_fail_every_round(self) -> None:
        inject = FailureInjection(subjects=[2, 5])  # type: ignore[arg-type]  (a YAML list)
        assert inject.subjects == (2, 5)
        assert all(inject.fails(s, stage, r) == (s in (2, 5)) for s in range(1, 8) for r in range(1, 6)
                   for stage in ("pretrain", "finetune"))


def test_attack_injection__only_the_attacker_manipulates_its_update() -> None:
    import torch

    from fedhar.federated import AttackInjection

    received = {"w": torch.zeros(3), "n": torch.tensor(5)}
    trained = {"w": torch.ones(3), "n": torch.tensor(6)}
    scale, flip = AttackInjection(subject=2, factor=10.0), AttackInjection(subject=2, kind="sign_flip", factor=1.0)
    assert torch.equal(scale.apply(1, trained, received)["w"], torch.ones(3))  # an honest subject
    assert torch.equal(scale.apply(2, trained, received)["w"], torch.full((3,), 10.0))
    assert torch.equal(flip.apply(2, trained, received)["w"], -torch.ones(3))
    assert int(flip.apply(2, trained, received)["n"]) == 6  # integer buffers untouched


def test_batchnorm_statistics__scaled_with_the_update_and_negative_variance_rejected() -> None:
    # A scaled update also scales BatchNorm running statistics, which poison the model as
    # surely as weights: they are measured apart and the update is scaled as a whole.
    from fedhar.aggregation import validate_update

    ref = {"encoders.imu.bn.weight": np.zeros(2, np.float32), "encoders.imu.bn.running_var": np.ones(2, np.float32)}
    honest = [ClientUpdate(f"subject-{s}", {"encoders.imu.bn.weight": np.full(2, 0.1 * s, np.float32),
                                            "encoders.imu.bn.running_var": np.full(2, 1.0 + 0.1 * s, np.float32)},
                           10, {"imu": 0.5}) for s in (1, 2, 3)]
    attack = ClientUpdate("subject-4", {"encoders.imu.bn.weight": np.full(2, 0.2, np.float32),
                                        "encoders.imu.bn.running_var": np.full(2, 1001.0, np.float32)}, 10, {"imu": 0.5})
    bounded, scaled = bound_influence([*honest, attack], ref, InfluenceBounds())
    # buffer deltas 0.1, 0.2, 0.3, 1000: median 0.25 x sqrt(2), limit 3x -> factor 0.75e-3
    assert scaled == {"subject-4": {"imu": pytest.approx(3 * 0.25 / 1000, rel=1e-5)}}
    np.testing.assert_allclose(bounded[3].arrays["encoders.imu.bn.running_var"], 1.75, rtol=1e-5)
    negative = ClientUpdate("subject-5", {"encoders.imu.bn.weight": np.zeros(2, np.float32),
                                          "encoders.imu.bn.running_var": np.full(2, -1.0, np.float32)}, 10, {"imu": 0.5})
    assert validate_update(negative, ref) == "encoders.imu.bn.running_var: a negative variance"
