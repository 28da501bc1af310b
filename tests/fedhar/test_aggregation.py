"""fedhar.aggregation: key grouping, per-modality weighted mean against a loop reference, validation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fedhar.aggregation import (
    SHARED,
    ClientUpdate,
    aggregate_by_modality,
    group_keys,
    modality_of,
    validate_update,
)

REF = {
    "encoders.acc.w": np.zeros((2, 2), np.float32),
    "heads.acc.w": np.zeros(3, np.float32),
    "encoders.gyro.w": np.zeros(2, np.float32),
    "classifier.fc.b": np.zeros(1, np.float32),
}


def _update(cid: str, n: float, rng: np.random.Generator, **qom: float) -> ClientUpdate:
    keep = [k for k in REF if modality_of(k) in (None, *qom)]
    return ClientUpdate(cid, {k: rng.normal(size=REF[k].shape).astype(np.float32) for k in keep}, n, qom)


def _loop_reference(updates: list[ClientUpdate], key: str, use_qom: bool) -> np.ndarray:
    """Weighted mean of ``key`` over the clients that sent it, written as a plain loop."""
    modality = modality_of(key)
    num, den = np.zeros(REF[key].shape, np.float64), 0.0
    for u in updates:
        if key in u.arrays:
            w = u.num_examples * (u.qom[modality] if use_qom and modality else 1.0)
            num += w * u.arrays[key].astype(np.float64)
            den += w
    return num / den


class TestGroupKeys:
    def test_modality_of__prefixes(self) -> None:
        assert modality_of("encoders.acc.conv.0.weight") == "acc"
        assert modality_of("heads.gyro.net.1.bias") == "gyro"
        assert modality_of("classifier.gru.weight_ih_l0") is None
        assert modality_of("encoders_extra.x") is None

    def test_group_keys__shared_and_modalities(self) -> None:
        assert group_keys(REF) == {
            "acc": ["encoders.acc.w", "heads.acc.w"], "gyro": ["encoders.gyro.w"], SHARED: ["classifier.fc.b"]}

    def test_group_keys__reserved_name_raises(self) -> None:
        with pytest.raises(ValueError, match="reserved"):
            group_keys(["encoders.shared.w"])


class TestAggregateByModality:
    @pytest.mark.parametrize("weighting", ["qom", "examples"])
    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_aggregate__matches_loop_reference(self, weighting: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        updates = [
            _update("a", 12, rng, acc=0.9, gyro=0.1),
            _update("b", 40, rng, acc=0.3),
            _update("c", 7, rng, gyro=0.6),
            _update("d", 25, rng, acc=0.5, gyro=0.5),
        ]
        result = aggregate_by_modality(updates, REF, weighting)  # type: ignore[arg-type]
        for key in REF:
            np.testing.assert_allclose(result.arrays[key], _loop_reference(updates, key, weighting == "qom"),
                                       rtol=1e-5, atol=1e-6)
        for group in ("acc", "gyro", SHARED):
            assert sum(w[group] for w in result.weights.values() if group in w) == pytest.approx(1.0)
        assert "gyro" not in result.weights["b"] and "acc" not in result.weights["c"]

    def test_aggregate__all_zero_quality_falls_back_to_examples(self) -> None:
        rng = np.random.default_rng(0)
        updates = [_update("a", 10, rng, gyro=0.0), _update("b", 30, rng, gyro=0.0)]
        result = aggregate_by_modality(updates, REF)
        assert result.fallback == ("gyro",)
        assert result.weights["b"]["gyro"] == pytest.approx(0.75)
        np.testing.assert_array_equal(result.arrays["encoders.acc.w"], REF["encoders.acc.w"])

    def test_aggregate__empty_or_duplicate_raises(self) -> None:
        rng = np.random.default_rng(0)
        with pytest.raises(ValueError, match="no client update"):
            aggregate_by_modality([], REF)
        with pytest.raises(ValueError, match="unique"):
            aggregate_by_modality([_update("a", 1, rng, acc=1.0), _update("a", 2, rng, acc=1.0)], REF)


class TestValidateUpdate:
    def test_validate__good_update_passes(self) -> None:
        assert validate_update(_update("a", 3, np.random.default_rng(0), acc=0.2), REF) is None

    @pytest.mark.parametrize(("n", "qom", "match"), [
        (-1, {"acc": 0.5}, "num-examples"),
        (float("inf"), {"acc": 0.5}, "num-examples"),
        (5e9, {"acc": 0.5}, "cap"),
        (3, {"acc": 1.5}, r"\[0, 1\]"),
        (3, {}, "claims no modality"),
        (3, {"depth": 0.5}, "lacks"),
    ])
    def test_validate__bad_numbers_give_reason(self, n: float, qom: dict, match: str) -> None:
        update = ClientUpdate("a", {}, n, qom)
        reason = validate_update(update, REF, max_examples=1e9)
        assert reason is not None and re.search(match, reason)
