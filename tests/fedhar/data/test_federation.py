"""The normalisation round's data: client summaries, their validation and merge, the client's partition."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.experiment import prepare_experiment
from fedhar.data.federation import (
    ClientFederation,
    DataSummary,
    FederationData,
    build_client_partition,
    merge_summaries,
    subject_modalities,
    summarize_subject,
    validate_summary,
)
from fedhar.data.loading import load_dataset
from fedhar.data.normalization import ChannelMoments, NormStats
from fedhar.data.protocol import resolve_protocol
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
RTOL = 1e-12  # float64 sums added in another order


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _federate(cfg: DatasetConfig, load: Callable[[int], HARDataset], train_subjects: tuple[int, ...]) -> FederationData:
    """What the server merges when each training subject reads only its own files and replies a summary."""
    summaries = []
    for subject in train_subjects:
        own = load(subject)
        summaries.append(summarize_subject(own, subject, subject_modalities(own, cfg, subject)))
    return merge_summaries(summaries)


def _assert_stats_close(a: NormStats, b: NormStats) -> None:
    assert sorted(a.moments) == sorted(b.moments)
    for name in a.moments:
        assert a.moments[name].count == b.moments[name].count
        np.testing.assert_allclose(a.moments[name].sum, b.moments[name].sum, rtol=RTOL)
        np.testing.assert_allclose(a.moments[name].sum_sq, b.moments[name].sum_sq, rtol=RTOL)
        np.testing.assert_allclose(a.mean(name), b.mean(name), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.std(name), b.std(name), rtol=1e-10)


def _assert_same_experiment(cfg: DatasetConfig, full: HARDataset, load: Callable[[int], HARDataset], rate: float,
                            seed: int) -> None:
    """Federated stats equal the centralised fit; every client partition equals the centralised one."""
    central = prepare_experiment(full, cfg, rate, seed)
    train = central.protocol.train_subjects
    federation = _federate(cfg, load, train)
    _assert_stats_close(federation.stats, central.normalizer.stats)
    for subject in train:
        view = ClientFederation.from_config(federation.for_subject(subject, cfg, rate, seed).to_config())
        assert view is not None
        own = build_client_partition(load(subject), cfg, subject, view)
        ref = central.partitions[subject]
        assert own.modalities == ref.modalities
        for view in ("labeled", "unlabeled"):
            got, want = getattr(own, view), getattr(ref, view)
            assert np.array_equal(got.labels, want.labels) and np.array_equal(got.trials, want.trials)
            for m in own.modalities:
                np.testing.assert_allclose(got.data[m], want.data[m], atol=1e-5)


@pytest.fixture(scope="module")
def synthetic() -> tuple[DatasetConfig, HARDataset]:
    cfg = _config("synthetic")
    return cfg, load_dataset(cfg)


class TestFederatedEqualsCentralised:
    @pytest.mark.parametrize("subsets", [{}, {1: ("imu",), 3: ("noise",)}], ids=["all modalities", "subsets"])
    @pytest.mark.parametrize(("scheme", "rate"), [("fraction", 20), ("per_class", 25)])
    def test_synthetic__stats_and_partitions(self, subsets: dict, scheme: str, rate: float) -> None:
        cfg = _config("synthetic", modality_subsets=subsets, label_scheme=scheme,
                      sequences_per_class=8 if scheme == "per_class" else None)
        full = load_dataset(cfg)
        _assert_same_experiment(cfg, full, lambda s: load_dataset(cfg, subjects=[s]), rate, seed=1)

    def test_synthetic__merged_stats_equal_a_fit_on_the_training_rows(self, synthetic: Any) -> None:
        cfg, full = synthetic
        train = resolve_protocol(cfg, full.info).train_subjects
        federation = _federate(cfg, lambda s: load_dataset(cfg, subjects=[s]), train)
        _assert_stats_close(federation.stats, NormStats.from_dataset(full.subset(full.indices_of_subjects(train))))
        assert federation.subjects == train

    @pytest.mark.realdata
    def test_utd__cosmo_5_percent(self, data_dir: Path, cache_dir: Path) -> None:
        cfg = _config("utd-mhad", root=str(data_dir / "UTD-MHAD"), cache_dir=str(cache_dir))
        full = load_dataset(cfg)
        _assert_same_experiment(cfg, full, lambda s: full.subset(full.indices_of_subjects([s])), 5, seed=0)

    @pytest.mark.realdata
    def test_usc__1_percent_with_subsets(self, data_dir: Path, cache_dir: Path) -> None:
        subsets = {**{s: ("acc",) for s in range(5, 9)}, **{s: ("gyro",) for s in range(9, 15)}}
        cfg = _config("usc-had", root=str(data_dir / "USC-HAD"), cache_dir=str(cache_dir), modality_subsets=subsets)
        full = load_dataset(cfg)
        _assert_same_experiment(cfg, full, lambda s: full.subset(full.indices_of_subjects([s])), 1, seed=0)


def _summary(synthetic: Any, subject: int = 1) -> DataSummary:
    _, full = synthetic
    return summarize_subject(full, subject, full.modalities)


def _with_moment(summary: DataSummary, name: str, **change: Any) -> DataSummary:
    moments = dict(summary.stats.moments)
    moments[name] = dataclasses.replace(moments[name], **change)
    return dataclasses.replace(summary, stats=NormStats(moments))


# (id, how the reply is damaged, words of the rejection)
BAD_SUMMARIES: list[tuple[str, Callable[[DataSummary], DataSummary], str]] = [
    # a NaN in the sums
    ("nan sum", lambda s: _with_moment(s, "imu", sum=np.full(6, np.nan)), "NaN or Inf"),
    # an Inf in the sums of squares
    ("inf sum_sq", lambda s: _with_moment(s, "imu", sum_sq=np.full(6, np.inf)), "NaN or Inf"),
    # a negative sum of squares
    ("negative sum_sq", lambda s: _with_moment(s, "imu", sum_sq=-np.ones(6)), "negative"),
    # no value counted
    ("count 0", lambda s: _with_moment(s, "imu", count=0), "count must be > 0"),
    # a count that does not match the rows reported
    ("count mismatch", lambda s: _with_moment(s, "imu", count=7), "rows x"),
    # moments of 5 channels for a 6-channel modality
    ("wrong channels", lambda s: _with_moment(s, "imu", sum=np.zeros(5), sum_sq=np.zeros(5)), "expected (6,)"),
    # a modality the dataset does not have
    ("unknown modality", lambda s: dataclasses.replace(
        s, stats=NormStats({**s.stats.moments, "gps": s.stats.moments["imu"]})), "unknown modality"),
    # no modality at all
    ("no modality", lambda s: dataclasses.replace(s, stats=NormStats({})), "no modality"),
    # the held-out test subject
    ("test subject", lambda s: dataclasses.replace(s, subject=6), "not a training subject"),
    # class counts for 4 of the 5 classes
    ("short class counts", lambda s: dataclasses.replace(s, class_counts=s.class_counts[:4]), "expected (5,)"),
    # a negative class count
    ("negative class count", lambda s: dataclasses.replace(s, class_counts=s.class_counts - 100), ">= 0"),
]


class TestValidateSummary:
    def test_validate__good_summary_passes(self, synthetic: Any) -> None:
        assert validate_summary(_summary(synthetic), synthetic[1].info, (1, 2, 3, 4, 5)) is None

    @pytest.mark.parametrize(("damage", "words"), [(d, w) for _, d, w in BAD_SUMMARIES],
                             ids=[i for i, _, _ in BAD_SUMMARIES])
    def test_validate__malformed__gives_the_reason(self, synthetic: Any, damage: Callable, words: str) -> None:
        reason = validate_summary(damage(_summary(synthetic)), synthetic[1].info, (1, 2, 3, 4, 5))
        assert reason is not None and words in reason


class TestDataSummaryArrays:
    def test_arrays__round_trip_exactly(self, synthetic: Any) -> None:
        summary = _summary(synthetic, 3)
        back = DataSummary.from_arrays(3, summary.to_arrays())
        assert back.subject == 3 and np.array_equal(back.class_counts, summary.class_counts)
        for name, mom in summary.stats.moments.items():
            got = back.stats.moments[name]
            assert got.count == mom.count and np.array_equal(got.sum, mom.sum)
            assert np.array_equal(got.sum_sq, mom.sum_sq)

    @pytest.mark.parametrize(("edit", "words"), [
        (lambda a: a.pop(keys.CLASS_COUNTS), "is missing"),  # no class counts
        (lambda a: a.pop("imu.sum-sq"), "missing arrays"),  # a modality without its sum of squares
        (lambda a: a.update({"imu.count": np.array([1.5])}), "one integer"),  # a fractional count
        (lambda a: a.update({"imu.sum": np.zeros(5)}), "one shape"),  # sum and sum of squares disagree
        (lambda a: a.update({keys.CLASS_COUNTS: np.ones(5)}), "integer array"),  # float class counts
        (lambda a: a.update({"extra": np.ones(1)}), "unexpected arrays"),  # an array nobody asked for
    ], ids=["no class counts", "missing sum-sq", "float count", "shape mismatch", "float class counts", "extra"])
    def test_from_arrays__malformed__raises(self, synthetic: Any, edit: Callable, words: str) -> None:
        arrays = _summary(synthetic).to_arrays()
        edit(arrays)
        with pytest.raises(ValueError, match=words):
            DataSummary.from_arrays(1, arrays)


class TestMergeAndConfig:
    def test_merge__order_does_not_change_the_bits(self, synthetic: Any) -> None:
        parts = [_summary(synthetic, s) for s in (1, 2, 3, 4, 5)]
        a, b = merge_summaries(parts), merge_summaries(parts[::-1])
        assert a.to_dict() == b.to_dict()

    def test_merge__duplicate_subject__raises(self, synthetic: Any) -> None:
        with pytest.raises(ValueError, match="twice"):
            merge_summaries([_summary(synthetic, 1), _summary(synthetic, 1)])

    def test_client_view__round_trips_exactly_and_holds_only_its_own_counts(self, synthetic: Any) -> None:
        cfg, _ = synthetic
        parts = [_summary(synthetic, s) for s in (2, 4, 5)]
        merged = merge_summaries(parts)
        config = merged.for_subject(4, cfg, 20, 0).to_config()
        assert set(config) == {keys.NORM_STATS, keys.LABEL_SHARE}
        back = ClientFederation.from_config(config)
        assert back is not None and back.share.subject == 4
        assert back.to_config() == config
        assert np.array_equal(back.share.class_counts, parts[1].class_counts)
        assert "2" not in json.loads(config[keys.LABEL_SHARE]) and "5" not in json.loads(config[keys.LABEL_SHARE])
        for name, mom in merged.stats.moments.items():
            assert np.array_equal(back.stats.moments[name].sum_sq, mom.sum_sq)

    def test_client_view__absent__none_and_partial_or_malformed__raises(self, synthetic: Any) -> None:
        cfg, _ = synthetic
        config = merge_summaries([_summary(synthetic)]).for_subject(1, cfg, 20, 0).to_config()
        assert ClientFederation.from_config({}) is None
        with pytest.raises(ConfigError, match="not the other"):
            ClientFederation.from_config({keys.NORM_STATS: config[keys.NORM_STATS]})
        with pytest.raises(ConfigError, match="malformed"):
            ClientFederation.from_config({**config, keys.LABEL_SHARE: json.dumps({"subject": 1})})
        share = json.loads(config[keys.LABEL_SHARE])
        share["positions"][0] = [10_000]  # beyond the subject's rows of class 0
        with pytest.raises(ConfigError, match="not distinct positions"):
            ClientFederation.from_config({**config, keys.LABEL_SHARE: json.dumps(share)})

    def test_partition__another_subjects_share__raises(self, synthetic: Any) -> None:
        cfg, full = synthetic
        merged = merge_summaries(_summary(synthetic, s) for s in (1, 2))
        with pytest.raises(ConfigError, match="label share of subject 2 to subject 1"):
            build_client_partition(full, cfg, 1, merged.for_subject(2, cfg, 20, 0))

    def test_partition__stats_lack_a_modality__raises(self, synthetic: Any) -> None:
        cfg, full = synthetic
        summary = _summary(synthetic)
        merged = merge_summaries([dataclasses.replace(
            summary, stats=NormStats({"imu": summary.stats.moments["imu"]}))])
        with pytest.raises(ConfigError, match=r"lack modalities \['noise'\]"):
            build_client_partition(full, cfg, 1, merged.for_subject(1, cfg, 20, 0))

    def test_summary__subject_without_rows__raises(self, synthetic: Any) -> None:
        _, full = synthetic
        with pytest.raises(ConfigError, match="no rows of subject 9"):
            summarize_subject(full, 9, full.modalities)


def test_channel_moments__merge_is_exact_for_integers() -> None:
    # A hand-worked merge: values 1..4 on one channel, split 1+3.
    a, b = ChannelMoments.from_array(np.array([[1.0]])), ChannelMoments.from_array(np.array([[2.0], [3.0], [4.0]]))
    merged = merge_summaries([
        DataSummary(1, NormStats({"x": a}), np.array([1])), DataSummary(2, NormStats({"x": b}), np.array([3]))])
    mom = merged.stats.moments["x"]
    assert (mom.count, float(mom.sum[0]), float(mom.sum_sq[0])) == (4, 10.0, 30.0)
    assert merged.stats.mean("x")[0] == 2.5 and merged.stats.std("x")[0] == pytest.approx(np.sqrt(1.25))
