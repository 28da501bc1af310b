"""The DP aggregation mechanism (fedhar.privacy): clipping, own-reply weights, the noise scale, the sensitivity bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedhar.aggregation import ClientUpdate
from fedhar.errors import ConfigError
from fedhar.privacy import DPConfig, clip_update, dp_aggregate, dp_noise_std, dp_release_from_mean

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


def test_clip_update__every_group_to_C_over_sqrtG_integers_untouched() -> None:
    # imu moves by 3 on 6 entries (norm 7.35), shared by 0.1 on 3 (norm 0.17): C = 2, two groups, C_g = 1.414.
    reference = {**REFERENCE, "encoders.imu.bn.num_batches_tracked": np.array(4, np.int64)}
    arrays = {k: (np.full_like(v, 3.0) if k.startswith(("encoders.imu.w", "heads")) else v + 0.1)
              for k, v in REFERENCE.items()}
    arrays["encoders.imu.bn.num_batches_tracked"] = np.array(9, np.int64)
    clipped, norm, was_clipped = clip_update(arrays, reference, 2.0)
    imu = np.concatenate([clipped["encoders.imu.w"], clipped["heads.imu.w"]])
    assert np.linalg.norm(imu) == pytest.approx(2.0 / math.sqrt(2), rel=1e-6)
    np.testing.assert_allclose(imu, np.full(6, 2.0 / math.sqrt(2) / math.sqrt(6)), rtol=1e-6)  # direction kept
    np.testing.assert_allclose(clipped["shared.w"], np.full(3, 0.1), rtol=1e-6)  # under its bound: unchanged
    assert int(clipped["encoders.imu.bn.num_batches_tracked"]) == 9 and was_clipped
    assert norm == pytest.approx(math.sqrt(6 * 9 + 3 * 0.01), rel=1e-6)
    assert clip_update(clipped, reference, 2.0)[2] is False  # a clipped update needs no more clipping


def test_release_from_mean__a_secure_sum_of_client_clipped_updates_is_dp_aggregate() -> None:
    # What the server recovers from the secure sum (the weighted mean A / B and B) released with the floor
    # and the noise equals the server-side mechanism on the same clipped, weighted updates.
    rng = np.random.default_rng(3)
    updates = [ClientUpdate(c, {k: rng.normal(0, 2.0, v.shape).astype(np.float32) for k, v in REFERENCE.items()}, 10,
                            {"imu": q}) for c, q in (("a", 0.2), ("b", 0.9), ("c", 0.4))]
    for w_min in (1.0, 4.0):  # 4 > every weight sum: the floor shrinks the mean
        expected = dp_aggregate(updates, REFERENCE, QUIET, w_min, np.random.default_rng(0)).arrays
        clipped = [clip_update(u.arrays, REFERENCE, QUIET.clip_norm)[0] for u in updates]
        weights = {"imu": [0.2, 0.9, 0.4], "shared": [1.0, 1.0, 1.0]}
        mean = {}
        for k in REFERENCE:
            w = weights["shared" if k.startswith("shared") else "imu"]
            mean[k] = sum(wi * c[k].astype(np.float64) for wi, c in zip(w, clipped, strict=True)) / sum(w)
        released, sigma = dp_release_from_mean(mean, {g: sum(w) for g, w in weights.items()}, REFERENCE, QUIET, w_min,
                                               np.random.default_rng(0))
        assert sigma == dp_noise_std(QUIET, w_min)
        for k in REFERENCE:
            np.testing.assert_allclose(released[k], expected[k], atol=1e-6, err_msg=k)
        if w_min == 4.0:  # shared: B = 3 < 4, so the mean shrinks by 3 / 4
            np.testing.assert_allclose(released["shared.w"], mean["shared.w"] * 0.75, rtol=1e-5)


def test_release_from_mean__noise_is_the_formula_and_every_group_needs_its_weight_sum() -> None:
    cfg = DPConfig(enabled=True, noise_multiplier=0.7, clip_norm=3.0)
    reference = {"encoders.imu.w": np.zeros(200_000, np.float64), "shared.w": np.zeros(100_000, np.float64)}
    released, sigma = dp_release_from_mean(reference, {"imu": 2.0, "shared": 3.0}, reference, cfg, 2.0,
                                           np.random.default_rng(4))
    assert sigma == pytest.approx(0.7 * 2 * 3.0 / 2.0)
    for name in reference:
        assert np.std(released[name]) == pytest.approx(sigma, rel=0.01)
    with pytest.raises(ValueError, match="no weight sum for group 'shared'"):
        dp_release_from_mean(reference, {"imu": 2.0}, reference, cfg, 2.0, np.random.default_rng(4))


@pytest.mark.parametrize("bad", [{"noise_multiplier": 0.0}, {"clip_norm": -1.0}, {"delta": 1.0},
                                 {"on_budget": "ignore"}, {"max_epsilon": 0.0}, {"sigma": 1.0}])
def test_config__bad_values_rejected(bad: dict) -> None:
    with pytest.raises(ConfigError):
        DPConfig.from_mapping(bad)


def test_config__default_floor_is_half_the_sampled_clients() -> None:
    assert DPConfig().floor(6) == 3.0 and DPConfig(min_total_weight=2.0).floor(6) == 2.0
