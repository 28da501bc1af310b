"""DP in QoMFedAvg: Flower's accountant gives dp-accounting's epsilon, the budget stops rounds, the noise is the formula."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from dp_reference import classical_rdp_epsilon, reference_epsilon
from omegaconf import DictConfig

from fedhar.aggregation import InfluenceBounds
from fedhar.errors import ConfigError, FederationError
from fedhar.privacy import DPConfig
from fedhar.secure_sum import SecureAggregationConfig
from strategies import QoMFedAvg
from strategies.qom_fedavg import check_stage
from strategies.run_config import compose_config
from strategies.run_privacy import RunPrivacy, calibrate_noise
from strategies.server_app import check_privacy

W = "encoders.imu.w"
SIZE = 50_000


def _reference() -> dict[str, np.ndarray]:
    return {W: np.zeros(SIZE, np.float64), "classifier.b": np.zeros(SIZE, np.float64)}


def _replies(reply: Callable, metrics: Callable, n: int = 6) -> list:
    return [reply(10 + s, _reference(), metrics(s, 100, imu=0.5)) for s in range(1, n + 1)]


def test_accountant__epsilon_equals_dp_accounting_and_stays_under_the_textbook_bound() -> None:
    privacy = RunPrivacy(DPConfig(enabled=True, noise_multiplier=1.1, delta=1e-5), population=12, num_sampled=12)
    for _ in range(20):
        privacy.accountant.compose(privacy._event(12))
        privacy.releases.append({})
    assert privacy.epsilon == pytest.approx(reference_epsilon(1.1, 20, 1e-5), rel=1e-9)
    assert privacy.epsilon < classical_rdp_epsilon(1.1, 20, 1e-5)


def test_round__noised_with_the_formula_and_accounted(configure: Callable, reply: Callable, metrics: Callable) -> None:
    cfg = DPConfig(enabled=True, noise_multiplier=0.8, clip_norm=2.0, noise_seed=0)
    privacy = RunPrivacy(cfg, population=6, num_sampled=6)
    strategy = QoMFedAvg(privacy=privacy)
    configure(strategy, _reference(), node_ids=[11, 12, 13, 14, 15, 16])
    arrays, out = strategy.aggregate_train(1, _replies(reply, metrics))
    assert arrays is not None and out is not None and out["num-aggregated"] == 6 and privacy.min_total_weight == 3.0
    # Zero updates: the aggregate is the noise, of std z * 2C / W_min.
    for name in (W, "classifier.b"):
        assert np.std(arrays[name].numpy()) == pytest.approx(0.8 * 2 * 2.0 / 3.0, rel=0.02)
    # imu weights are the clipped qualities (0.5 each) over max(W_min = 3, 6 x 0.5): 1/6 each.
    assert strategy.client_weights[1]["imu"] == pytest.approx({f"subject-{s}": 1 / 6 for s in range(1, 7)})
    assert privacy.summary()["num_releases"] == 1
    assert privacy.epsilon == pytest.approx(reference_epsilon(0.8, 1, 1e-5), rel=1e-9)
    assert privacy.releases[0]["epsilon"] == privacy.epsilon  # recorded after composing its own release


def test_budget__a_round_that_would_exceed_it_is_not_run_and_says_why(
    configure: Callable, reply: Callable, metrics: Callable
) -> None:
    one = reference_epsilon(1.0, 1, 1e-5)
    cfg = DPConfig(enabled=True, noise_multiplier=1.0, max_epsilon=one * 1.01, noise_seed=0)
    privacy = RunPrivacy(cfg, population=6, num_sampled=6)
    strategy = QoMFedAvg(privacy=privacy)
    assert len(configure(strategy, _reference(), node_ids=[11, 12, 13, 14, 15, 16])) == 6
    strategy.aggregate_train(1, _replies(reply, metrics))
    assert configure(strategy, _reference(), node_ids=[11, 12, 13, 14, 15, 16]) == []  # round 1 again: refused
    strategy.aggregate_train(1, [])
    assert "max_epsilon" in strategy.failed_rounds[1] and privacy.summary()["num_releases"] == 1
    with pytest.raises(FederationError, match="not run: one more release would exceed privacy.dp.max_epsilon"):
        check_stage("stage 1", strategy, 1)


def test_config__dp_needs_the_mean_rule_and_a_covered_stage2_mode() -> None:
    privacy = RunPrivacy(DPConfig(enabled=True), population=6, num_sampled=6)
    with pytest.raises(ConfigError, match="weighted mean"):
        QoMFedAvg(privacy=privacy, bounds=InfluenceBounds(rule="median"))
    cfg = compose_config("privacy.dp.enabled=true")
    with pytest.raises(ConfigError, match=r"privacy.dp covers .* stage-2 mode\(s\) \['lda'\]"):
        check_privacy(*_privacy(cfg), cfg.federation)
    cfg = compose_config("privacy.dp.enabled=true federation.stage2_mode=federated")
    check_privacy(*_privacy(cfg), cfg.federation)  # accepted: no error


def test_config__secure_aggregation_needs_a_covered_stage2_mode() -> None:
    cfg = compose_config("privacy.secure_aggregation.enabled=true federation.stage2_compare=[ccvr,local]")
    with pytest.raises(ConfigError, match=r"privacy.secure_aggregation covers .* \['local'\]"):
        check_privacy(*_privacy(cfg), cfg.federation)
    cfg = compose_config("privacy.secure_aggregation.enabled=true federation.class_stats.personalise=true")
    with pytest.raises(ConfigError, match="personalise=false"):
        check_privacy(*_privacy(cfg), cfg.federation)
    for mode in ("federated", "lda", "ccvr"):  # accepted
        cfg = compose_config(f"privacy.secure_aggregation.enabled=true federation.stage2_mode={mode}")
        check_privacy(*_privacy(cfg), cfg.federation)
    cfg = compose_config("privacy.secure_aggregation.enabled=true privacy.dp.enabled=true "
                         "federation.stage2_mode=federated")
    check_privacy(*_privacy(cfg), cfg.federation)  # both: accepted (clients clip, the server noises the sums)
    cfg = compose_config("privacy.secure_aggregation.enabled=true privacy.dp.enabled=true")
    with pytest.raises(ConfigError, match=r"privacy.dp covers .* \['lda'\]"):  # DP's own limits still hold
        check_privacy(*_privacy(cfg), cfg.federation)


def _privacy(cfg: DictConfig) -> tuple[DPConfig, SecureAggregationConfig]:
    return (DPConfig.from_mapping(dict(cfg.privacy.dp)),
            SecureAggregationConfig.from_mapping(dict(cfg.privacy.secure_aggregation)))


@pytest.mark.parametrize(("target", "releases"), [(1.0, 14), (4.0, 14), (8.0, 6)])
def test_calibrate_noise__spends_the_target_epsilon_by_dp_accounting(target: float, releases: int) -> None:
    z = calibrate_noise(target, 1e-5, releases, population=6)
    assert reference_epsilon(z, releases, 1e-5) == pytest.approx(target, rel=2e-3)
    assert reference_epsilon(z, releases, 1e-5) <= target * (1 + 1e-6)  # never above the target


def test_run_privacy__target_epsilon_sets_the_noise_and_is_reported() -> None:
    privacy = RunPrivacy(DPConfig(enabled=True, target_epsilon=4.0, clip_norm=2.0), population=6, num_sampled=6,
                         planned_releases=14)
    z = calibrate_noise(4.0, 1e-5, 14, population=6)
    assert privacy.cfg.noise_multiplier == pytest.approx(z)
    assert privacy.noise_std == pytest.approx(z * 2 * 2.0 / 3.0)  # z * 2C / W_min, W_min = half of 6
    summary = privacy.summary()
    assert summary["target_epsilon"] == 4.0 and summary["planned_releases"] == 14
    with pytest.raises(ValueError, match="planned number of releases"):
        RunPrivacy(DPConfig(enabled=True, target_epsilon=4.0), population=6, num_sampled=6)
    with pytest.raises(ConfigError, match="target_epsilon"):
        DPConfig(target_epsilon=-1.0)
