"""The DP aggregation mechanism (fedhar.privacy): clipping, own-reply weights, the noise scale, the sensitivity bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedhar.aggregation import ClientUpdate
from fedhar.errors import ConfigError
from fedhar.privacy import DPConfig, dp_aggregate, dp_noise_std

# Two groups: the imu modality (encoder + head) and the shared parameters.
REFERENCE = {"encoders.imu.w": np.zeros(4, np.float32), "heads.imu.w": np.zeros(2, np.float32),
             "shared.w": np.zeros(3, np.float32)}
QUIET = DPConfig(enabled=True, noise_multiplier=1e-12, clip_norm=1.0)  # noise negligible: the deterministic part


def _update(client: str, value: float, qom: float) -> ClientUpdate:
    return ClientUpdate(client, {k: np.full_like(v, value) for k, v in REFERENCE.items()}, 10, {"imu": qom})


def test_clipping_and_weights__worked_example() -> None:
    # Client a moves every parameter by 10 (quality 0.5), client b stays put (quality 2.0 -> clipped to 1).
    # Each group is clipped to C / sqrt(2) = 0.7071; imu: weights 0.5 and 1 over max(W_min = 1, 1.5);
    # shared: weights 1 and 1 over max(1, 2).
    a, b = _update("a", 10.0, 0.5), _update("b", 0.0, 2.0)
    result = dp_aggregate([a, b], REFERENCE, QUIET, min_total_weight=1.0, rng=np.random.default_rng(0))
    imu = np.concatenate([result.arrays["encoders.imu.w"], result.arrays["heads.imu.w"]])
    assert np.linalg.norm(imu) == pytest.approx(0.5 * (1 / math.sqrt(2)) / 1.5, rel=1e-6)  # 0.2357
    assert np.linalg.norm(result.arrays["shared.w"]) == pytest.approx((1 / math.sqrt(2)) / 2, rel=1e-6)  # 0.3536
    assert result.weights == {"a": {"imu": 0.5 / 1.5, "shared": 0.5}, "b": {"imu": 1 / 1.5, "shared": 0.5}}
    assert result.clipped == ("a",)
    assert result.update_norms == pytest.approx({"a": 10 * math.sqrt(9), "b": 0.0})


def test_noise__std_is_the_formula_for_the_weights_used() -> None:
    cfg = DPConfig(enabled=True, noise_multiplier=1.5, clip_norm=2.0)
    reference = {"encoders.imu.w": np.zeros(200_000, np.float64), "shared.w": np.zeros(100_000, np.float64)}
    updates = [ClientUpdate(c, {k: v.copy() for k, v in reference.items()}, 5, {"imu": 0.3}) for c in "abc"]
    result = dp_aggregate(updates, reference, cfg, min_total_weight=3.0, rng=np.random.default_rng(1))
    assert result.noise_std == dp_noise_std(cfg, 3.0) == 1.5 * 2 * 2.0 / 3.0
    for name in reference:  # zero updates: what moved is the noise alone
        assert np.std(result.arrays[name]) == pytest.approx(result.noise_std, rel=0.01)


def test_sensitivity__adding_one_client_moves_the_aggregate_by_at_most_2C_over_Wmin() -> None:
    rng = np.random.default_rng(2)
    for _ in range(50):
        updates = [ClientUpdate(f"c{i}", {k: rng.normal(0, rng.uniform(0.01, 10), v.shape).astype(np.float32)
                                          for k, v in REFERENCE.items()}, 10, {"imu": float(rng.uniform(0, 1))})
                   for i in range(int(rng.integers(1, 6)))]
        w_min = float(rng.uniform(0.5, 3))
        without = dp_aggregate(updates[:-1] or updates, REFERENCE, QUIET, w_min, np.random.default_rng(0)).arrays
        with_all = dp_aggregate(updates, REFERENCE, QUIET, w_min, np.random.default_rng(0)).arrays
        if len(updates) == 1:  # against no client at all: the reference
            without = REFERENCE
        shift = math.sqrt(sum(float(np.sum((with_all[k].astype(np.float64) - without[k]) ** 2)) for k in REFERENCE))
        assert shift <= 2 * QUIET.clip_norm / w_min + 1e-6


def test_post_processing__running_var_positive_and_counters_kept() -> None:
    reference = {"encoders.imu.bn.running_var": np.full(8, 1e-4, np.float32),
                 "encoders.imu.bn.num_batches_tracked": np.array(7, np.int64)}
    update = ClientUpdate("a", {k: v.copy() for k, v in reference.items()}, 1, {"imu": 1.0})
    loud = DPConfig(enabled=True, noise_multiplier=10.0, clip_norm=1.0)
    result = dp_aggregate([update], reference, loud, 1.0, np.random.default_rng(0))
    assert np.all(result.arrays["encoders.imu.bn.running_var"] >= 1e-3)
    assert int(result.arrays["encoders.imu.bn.num_batches_tracked"]) == 7


@pytest.mark.parametrize("bad", [{"noise_multiplier": 0.0}, {"clip_norm": -1.0}, {"delta": 1.0},
                                 {"on_budget": "ignore"}, {"max_epsilon": 0.0}, {"sigma": 1.0}])
def test_config__bad_values_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DPConfig.from_mapping(bad)


def test_config__default_floor_is_half_the_sampled_clients() -> None:
    assert DPConfig().floor(6) == 3.0 and DPConfig(min_total_weight=2.0).floor(6) == 2.0
