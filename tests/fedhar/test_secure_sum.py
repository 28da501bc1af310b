"""fedhar.secure_sum: the weighted contributions sum back to QoMFedAvg's weighted mean."""

from __future__ import annotations

import numpy as np
import pytest

from fedhar.aggregation import ClientUpdate, aggregate_by_modality
from fedhar.data.config import DatasetConfig
from fedhar.data.normalization import ChannelMoments, NormStats
from fedhar.errors import ConfigError
from fedhar.secure_sum import (
    SecureAggregationConfig,
    SumLayout,
    class_stats_contribution,
    mask_stream,
    moments_contribution,
    secure_contribution,
    unpack_class_stats,
    unpack_moments,
    unpack_sum,
)
from fedhar.train.class_stats import ClassFeatureStats

QOM_RANGE = (0.1, 1.0)


def _reference(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "encoders.acc.w": rng.normal(size=(3, 2)).astype(np.float32),
        "encoders.acc.bn.running_var": np.ones(2, np.float32),
        "encoders.acc.bn.num_batches_tracked": np.array(5, np.int64),
        "heads.gyro.w": rng.normal(size=(4,)).astype(np.float32),
        "classifier.b": rng.normal(size=(2,)).astype(np.float32),
    }


def _clients(reference: dict[str, np.ndarray], rng: np.random.Generator) -> list[ClientUpdate]:
    """Three clients: two hold both modalities, one only acc; different counts and qualities."""
    holdings = [({"acc": 0.9, "gyro": 0.3}, 120), ({"acc": 0.4, "gyro": 0.8}, 60), ({"acc": 0.05}, 90)]
    out = []
    for i, (qom, n) in enumerate(holdings):
        arrays = {k: (v + rng.normal(scale=0.1, size=v.shape).astype(v.dtype) if v.dtype.kind == "f" else v + 3)
                  for k, v in reference.items() if not (k.startswith("heads.gyro") and "gyro" not in qom)}
        arrays["encoders.acc.bn.running_var"] = np.abs(arrays["encoders.acc.bn.running_var"])
        out.append(ClientUpdate(f"subject-{i + 1}", arrays, float(n), qom))
    return out


@pytest.mark.parametrize("weighting", ["qom", "examples"])
def test_sum_of_contributions__unpacks_to_the_weighted_mean_of_aggregate_by_modality(weighting: str) -> None:
    rng = np.random.default_rng(0)
    reference = _reference(rng)
    clients = _clients(reference, rng)
    top = max(u.num_examples for u in clients)
    parts = [secure_contribution(u.arrays, reference, u.qom, u.num_examples / top, weighting, QOM_RANGE)  # type: ignore[arg-type]
             for u in clients]
    total = [sum(p[i] for p in parts) for i in range(len(parts[0]))]
    result = unpack_sum(total, reference, weighting, len(clients))  # type: ignore[arg-type]
    clipped = [ClientUpdate(u.client_id, u.arrays, u.num_examples, {m: max(q, 0.1) for m, q in u.qom.items()})
               for u in clients]
    plain = aggregate_by_modality(clipped, reference, weighting)  # type: ignore[arg-type]
    for name, value in plain.arrays.items():
        if name.endswith("num_batches_tracked"):
            assert result.arrays[name] == reference[name]  # integer counters keep the global value
            continue
        np.testing.assert_allclose(result.arrays[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        assert result.arrays[name].dtype == reference[name].dtype
    # gyro's holders are clients 1 and 2 (n 120, 60; q 0.3, 0.8): the example-weighted mean quality
    assert result.mean_qom["gyro"] == pytest.approx((120 * 0.3 + 60 * 0.8) / 180)
    assert result.mean_qom["acc"] == pytest.approx((120 * 0.9 + 60 * 0.4 + 90 * 0.1) / 270)
    assert result.weight_sums["shared"] == pytest.approx(270 / 120)


def test_contribution__zeros_for_a_modality_not_held_and_weights_last() -> None:
    rng = np.random.default_rng(1)
    reference = _reference(rng)
    client = _clients(reference, rng)[2]  # acc only, quality 0.05 -> clipped to 0.1
    parts = secure_contribution(client.arrays, reference, client.qom, 0.5, "qom", QOM_RANGE)
    layout = SumLayout.of(reference)
    assert "encoders.acc.bn.num_batches_tracked" not in layout.keys
    gyro = layout.keys.index("heads.gyro.w")
    assert not parts[gyro].any()
    np.testing.assert_allclose(parts[-1], [0.5 * 0.1, 0.0, 0.5, 0.0, 0.5])  # a_acc, a_gyro, b_acc, b_gyro, b
    acc = layout.keys.index("encoders.acc.w")
    np.testing.assert_allclose(parts[acc], 0.05 * (client.arrays["encoders.acc.w"] - reference["encoders.acc.w"]),
                               rtol=1e-6)


def test_unpack__a_weight_sum_no_honest_clients_can_reach__raises() -> None:
    rng = np.random.default_rng(2)
    reference = _reference(rng)
    parts = secure_contribution(_clients(reference, rng)[0].arrays, reference, {"acc": 1.0, "gyro": 1.0}, 1.0, "qom",
                                QOM_RANGE)
    parts[-1] = parts[-1] * 5  # a client that claims five times the largest weight
    with pytest.raises(ValueError, match="impossible for 2 clients"):
        unpack_sum(parts, reference, "qom", num_clients=2)


def test_contribution__bad_scale_or_modality__raises() -> None:
    rng = np.random.default_rng(3)
    reference = _reference(rng)
    arrays = _clients(reference, rng)[0].arrays
    with pytest.raises(ValueError, match="example scale"):
        secure_contribution(arrays, reference, {"acc": 1.0}, 1.5, "qom", QOM_RANGE)
    with pytest.raises(ValueError, match="not in the global model"):
        secure_contribution(arrays, reference, {"depth": 1.0}, 1.0, "qom", QOM_RANGE)


@pytest.mark.parametrize(("key", "value"), [("num_shares", 2), ("reconstruction_threshold", 1.5),
                                            ("clipping_range", 0.0), ("modulus_range", 3 * 2**22),
                                            ("timeout_s", -1.0)])
def test_config__bad_value__names_the_key(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=key):
        SecureAggregationConfig.from_mapping({key: value})


def test_config__quantisation_step_and_client_capacity() -> None:
    cfg = SecureAggregationConfig()
    assert cfg.quantization_for(6) == 2**29 and cfg.quantization_for(12) == 2**28  # n x levels < 2^32
    assert cfg.quantization_for(2) == 2**30 and cfg.quantization_for(4) == 2**29 and cfg.quantization_for(1000) == 2**22
    assert cfg.quantization_step(6) == pytest.approx(16 / (2**29 - 1))
    fixed = SecureAggregationConfig(quantization_range=2**22)
    assert fixed.quantization_for(1023) == 2**22
    with pytest.raises(ValueError, match="overflow"):
        fixed.quantization_for(1024)


def test_unpack__an_entry_beyond_what_clipped_clients_can_send__raises() -> None:
    rng = np.random.default_rng(4)
    reference = _reference(rng)
    parts = secure_contribution(_clients(reference, rng)[0].arrays, reference, {"acc": 1.0, "gyro": 1.0}, 1.0, "qom",
                                QOM_RANGE)
    unpack_sum(parts, reference, "qom", num_clients=1, entry_bound=8.0)  # honest: accepted
    parts[0] = parts[0] + 20.0  # a client that skipped clipping (it quantises its own vector)
    with pytest.raises(ValueError, match="exceeds 2 clients x the clipping range 8"):
        unpack_sum(parts, reference, "qom", num_clients=2, entry_bound=8.0)


def _class_stats(rng: np.random.Generator, counts: list[int], dim: int = 5) -> ClassFeatureStats:
    rows = [(c, rng.normal(scale=2.0, size=dim)) for c, n in enumerate(counts) for _ in range(n)]
    sums = np.zeros((len(counts), dim))
    for c, x in rows:
        sums[c] += x
    xs = np.array([x for _, x in rows])
    return ClassFeatureStats(np.asarray(counts, np.float64), sums, xs.T @ xs)


def test_class_stats__scaled_contributions_sum_back_to_the_merged_statistics() -> None:
    rng = np.random.default_rng(5)
    parts = [_class_stats(rng, [3, 0, 2]), _class_stats(rng, [1, 4, 0]), _class_stats(rng, [0, 2, 2])]
    scale, bound, clip = 6.0, 50.0, 8.0
    vectors = [class_stats_contribution(p, scale, bound, clip) for p in parts]
    assert all(float(np.abs(v).max()) <= clip for vec in vectors for v in vec)  # inside the fixed-point range
    total = [sum(v[i] for v in vectors) for i in range(3)]
    merged = unpack_class_stats(total, scale, bound, clip, np.array([4, 6, 4]), num_clients=3)
    plain = ClassFeatureStats.merge(parts)
    np.testing.assert_array_equal(merged.counts, plain.counts)
    np.testing.assert_allclose(merged.sums, plain.sums, rtol=1e-12)
    np.testing.assert_allclose(merged.scatter, plain.scatter, rtol=1e-12)


def test_class_stats__counts_other_than_the_label_split__raise() -> None:
    rng = np.random.default_rng(6)
    vector = class_stats_contribution(_class_stats(rng, [2, 1]), 4.0, 50.0, 8.0)
    with pytest.raises(ValueError, match=r"differ from the \[2, 2\]"):
        unpack_class_stats(vector, 4.0, 50.0, 8.0, np.array([2, 2]), num_clients=1)
    with pytest.raises(ValueError, match="exceed the row scale"):
        class_stats_contribution(_class_stats(rng, [3, 3]), 4.0, 50.0, 8.0)


def test_mask_stream__deterministic_per_secret_uniform_and_shaped() -> None:
    shapes = [(3, 4), (), (1000,)]
    a = mask_stream(b"k" * 32, 2**32, shapes)
    assert [m.shape for m in a] == shapes
    np.testing.assert_array_equal(np.concatenate([m.ravel() for m in a]),
                                  np.concatenate([m.ravel() for m in mask_stream(b"k" * 32, 2**32, shapes)]))
    other = mask_stream(b"k" * 31 + b"l", 2**32, shapes)  # one byte of the secret changes every word
    assert np.mean(a[2] == other[2]) < 0.01
    small = mask_stream(b"k" * 32, 2**22, [(100_000,)])[0]
    assert small.min() >= 0 and small.max() < 2**22
    assert abs(small.mean() / 2**22 - 0.5) < 0.01  # uniform over [0, 2^22)
    # Flower's generator folds the secret into 32 bits: secrets equal after folding give equal masks;
    # the SHAKE-256 stream does not.
    folded_twin = b"k" * 28 + bytes(4) + b"k" * 4  # folds to the same 32 bits (checked against Flower 1.41)
    assert not np.array_equal(mask_stream(folded_twin, 2**32, [(8,)])[0], mask_stream(b"k" * 32, 2**32, [(8,)])[0])


MODALITIES = ("acc", "skel")
PER_ROW = {"acc": 10, "skel": 40}  # values per channel in one row
BOUNDS = {"acc": np.array([8.0, 8.0, 1000.0]), "skel": np.array([5.0])}


def _client_moments(rng: np.random.Generator, rows: int, skeleton: bool = True) -> NormStats:
    acc = np.clip(rng.normal(size=(rows * PER_ROW["acc"], 3)) * [1.0, 0.5, 200.0] + [0.3, -1.0, 5.0], -BOUNDS["acc"],
                  BOUNDS["acc"])
    moments = {"acc": ChannelMoments.from_array(acc)}
    if skeleton:
        moments["skel"] = ChannelMoments.from_array(rng.uniform(-5, 5, size=(rows * PER_ROW["skel"], 1)))
    return NormStats(moments)


def test_moments__contributions_in_range_sum_back_to_the_merged_moments() -> None:
    rng = np.random.default_rng(0)
    clients = [_client_moments(rng, rows, skeleton=i != 1) for i, rows in enumerate((30, 50, 20))]
    parts = [moments_contribution(c, MODALITIES, PER_ROW, BOUNDS, 50.0, 8.0) for c in clients]
    assert all(np.abs(a).max() <= 8.0 for p in parts for a in p)
    np.testing.assert_array_equal(parts[1][2], 0.0)  # client 1 holds no skeleton: zeros
    total = [sum(p[i] for p in parts) for i in range(4)]
    merged = NormStats.merge(clients)
    counts = {m: merged.moments[m].count for m in MODALITIES}
    got = unpack_moments(total, MODALITIES, counts, PER_ROW, BOUNDS, 50.0, 8.0, num_clients=3)
    for m in MODALITIES:
        np.testing.assert_allclose(got.moments[m].sum, merged.moments[m].sum, rtol=1e-9)
        np.testing.assert_allclose(got.moments[m].sum_sq, merged.moments[m].sum_sq, rtol=1e-9)
        assert got.moments[m].count == counts[m]


def test_moments__more_rows_than_the_row_scale__raises() -> None:
    with pytest.raises(ValueError, match="row scale"):
        moments_contribution(_client_moments(np.random.default_rng(0), 60), MODALITIES, PER_ROW, BOUNDS, 50.0, 8.0)


def test_moments__a_mean_beyond_the_bounds__fails_the_sum() -> None:
    # One client claiming few values but sending the largest sums it can: the mean exceeds what clipped values allow.
    total = [np.full(3, 8.0), np.zeros(3), np.zeros(1), np.zeros(1)]
    with pytest.raises(ValueError, match="value bounds"):
        unpack_moments(total, MODALITIES, {"acc": 100, "skel": 0}, PER_ROW, BOUNDS, 50.0, 8.0, num_clients=1)
    with pytest.raises(ValueError, match="exceeds"):
        unpack_moments([np.full(3, 9.0)] + total[1:], MODALITIES, {"acc": 500}, PER_ROW, BOUNDS, 50.0, 8.0, 1)


def test_dataset_value_bounds__scalar_or_per_channel_and_named_when_missing() -> None:
    cfg = DatasetConfig.from_mapping({"name": "synthetic", "value_bounds": {"imu": 10, "skel": [1, 2, 3]}})
    np.testing.assert_array_equal(cfg.channel_bounds("imu", 4), [10.0] * 4)
    np.testing.assert_array_equal(cfg.channel_bounds("skel", 3), [1.0, 2.0, 3.0])
    with pytest.raises(ConfigError, match="noise"):
        cfg.channel_bounds("noise", 3)
    with pytest.raises(ConfigError, match="one per channel"):
        cfg.channel_bounds("skel", 4)
    with pytest.raises(ConfigError, match="positive"):
        DatasetConfig.from_mapping({"name": "synthetic", "value_bounds": {"imu": -1}})
