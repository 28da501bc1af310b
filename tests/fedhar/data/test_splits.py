"""Tests of label-rate splits (Cosmo per-class semantics and class-stratified fractions)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.protocol import Protocol, resolve_protocol
from fedhar.data.splits import (
    LabelSplit,
    label_share,
    labeled_count_per_class,
    make_label_split,
    split_from_share,
    split_sizes,
)
from fedhar.data.synthetic import make_synthetic
from fedhar.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"
UTD_TEST_SEQUENCES = 215  # subjects 7-8 of UTD-MHAD (a27_s8_t4 is missing)
UTD_SEQUENCES = 861


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _load_real(name: str, folder: str, data_dir: Path, cache_dir: Path) -> tuple[DatasetConfig, HARDataset]:
    from fedhar.data.loading import load_dataset  # written alongside; imported late on purpose

    cfg = _config(name, root=str(data_dir / folder), cache_dir=str(cache_dir))
    return cfg, load_dataset(cfg)


def _assert_partition_of_rows(split: LabelSplit, n: int) -> None:
    """Labeled, unlabeled and test are sorted, disjoint int64 arrays covering 0..n-1."""
    parts = (split.labeled, split.unlabeled, split.test)
    for arr in parts:
        assert arr.dtype == np.int64 and np.all(np.diff(arr) > 0)
    everything = np.concatenate(parts)
    assert everything.size == n and np.array_equal(np.sort(everything), np.arange(n))


def _stratified_rule(train_labels: np.ndarray, num_classes: int, rate: float) -> np.ndarray:
    """Reference for the 'fraction' scheme: max(1, round-half-up(rate% of each class))."""
    counts = np.bincount(train_labels, minlength=num_classes)
    return np.array([max(1, math.floor(c * rate / 100 + 0.5)) for c in counts])


@pytest.fixture(scope="module")
def synthetic() -> tuple[DatasetConfig, HARDataset, Protocol]:
    cfg = _config("synthetic")
    ds = make_synthetic(cfg)
    return cfg, ds, resolve_protocol(cfg, ds.info)


class TestLabeledCountPerClass:
    @pytest.mark.parametrize(("rate", "n"), [(5, 1), (10, 2), (15, 3), (20, 4), (30, 6), (40, 8), (2.5, 1), (100, 20)])
    def test_per_class__cosmo_rates(self, rate: float, n: int) -> None:
        counts = labeled_count_per_class(np.full(27, 24), rate, "per_class", 20)
        assert counts.tolist() == [n] * 27

    @pytest.mark.parametrize(
        ("rate", "expected"),
        [
            (10, [10, 5, 1]),  # 0.3 of the last class rounds to 0, lifted to 1
            (1, [1, 1, 1]),  # 0.5 rounds half up to 1
            (30, [30, 15, 1]),  # 0.9 rounds to 1
            (50, [50, 25, 2]),  # 1.5 rounds half up to 2
        ],
    )
    def test_fraction__hand_worked(self, rate: float, expected: list[int]) -> None:
        assert labeled_count_per_class(np.array([100, 50, 3]), rate, "fraction").tolist() == expected

    def test_fraction__empty_class_gets_none(self, caplog: pytest.LogCaptureFixture) -> None:
        assert labeled_count_per_class(np.array([10, 0]), 10, "fraction").tolist() == [1, 0]
        assert "no training rows" in caplog.text

    @pytest.mark.parametrize(
        ("rate", "scheme", "spc", "match"),
        [
            (0, "fraction", None, r"\(0, 100\]"),  # zero rate
            (-5, "fraction", None, r"\(0, 100\]"),
            (120, "per_class", 20, r"\(0, 100\]"),
            (2, "per_class", 20, "smallest legal rate is 2.5%"),  # 0.4 sequences per class
            (5, "per_class", None, "sequences_per_class"),
            (50, "per_class", 20, "fewer"),  # 10 per class, 8 available
            (5, "bogus", None, "scheme"),
        ],
    )
    def test_raises__illegal(self, rate: float, scheme: Any, spc: int | None, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            labeled_count_per_class(np.full(3, 8), rate, scheme, spc)

    def test_per_class__warns__inexact_rate(self, caplog: pytest.LogCaptureFixture) -> None:
        assert labeled_count_per_class(np.full(3, 8), 12, "per_class", 20).tolist() == [2, 2, 2]
        assert "rounded" in caplog.text


class TestMakeLabelSplit:
    @pytest.mark.parametrize("rate", [10, 20, 50])
    def test_fraction__disjoint_cover_and_counts(self, synthetic: Any, rate: float) -> None:
        _, ds, protocol = synthetic
        split = make_label_split(ds, protocol, rate, seed=0, scheme="fraction")
        _assert_partition_of_rows(split, len(ds))
        train = ds.indices_of_subjects(protocol.train_subjects)
        expected = _stratified_rule(ds.labels[train], ds.info.num_classes, rate)
        assert np.bincount(ds.labels[split.labeled], minlength=ds.info.num_classes).tolist() == expected.tolist()
        assert split.labeled_per_class.tolist() == expected.tolist()
        assert set(ds.subjects[split.labeled]) <= set(protocol.train_subjects)
        assert set(ds.subjects[split.unlabeled]) <= set(protocol.train_subjects)
        assert np.array_equal(split.test, ds.indices_of_subjects(protocol.test_subjects))
        assert split.num_unlabeled == train.size - split.num_labeled

    def test_per_class__n_per_class(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        split = make_label_split(ds, protocol, 10, seed=3, scheme="per_class", sequences_per_class=20)
        assert np.bincount(ds.labels[split.labeled]).tolist() == [2] * ds.info.num_classes
        _assert_partition_of_rows(split, len(ds))

    def test_seed__same_seed_same_split(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        a = make_label_split(ds, protocol, 10, seed=7, scheme="fraction")
        b = make_label_split(ds, protocol, 10, seed=7, scheme="fraction")
        assert np.array_equal(a.labeled, b.labeled) and np.array_equal(a.unlabeled, b.unlabeled)

    def test_seed__other_seed_other_split(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        a = make_label_split(ds, protocol, 10, seed=7, scheme="fraction")
        b = make_label_split(ds, protocol, 10, seed=8, scheme="fraction")
        assert a.num_labeled == b.num_labeled and not np.array_equal(a.labeled, b.labeled)

    def test_seed__same_split_in_another_process(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        here = make_label_split(ds, protocol, 20, seed=11, scheme="fraction").labeled.tolist()
        code = (
            "import json, yaml; from fedhar.data.config import DatasetConfig; "
            "from fedhar.data.synthetic import make_synthetic; from fedhar.data.protocol import resolve_protocol; "
            "from fedhar.data.splits import make_label_split; "
            f"cfg = DatasetConfig.from_mapping(yaml.safe_load(open({str(CONFIG_DIR / 'synthetic.yaml')!r}))); "
            "ds = make_synthetic(cfg); p = resolve_protocol(cfg, ds.info); "
            "print(json.dumps(make_label_split(ds, p, 20, seed=11, scheme='fraction').labeled.tolist()))"
        )
        env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        assert json.loads(out.stdout) == here

    def test_raises__rows_outside_protocol(self, synthetic: Any) -> None:
        _, ds, _ = synthetic
        with pytest.raises(ConfigError, match=r"subjects \[6\]"):
            make_label_split(ds, Protocol((1, 2, 3, 4), (5,)), 10, seed=0, scheme="fraction")

    def test_raises__no_test_rows(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        train_only = ds.subset(ds.indices_of_subjects(protocol.train_subjects))
        with pytest.raises(ConfigError, match="no rows of the test subjects"):
            make_label_split(train_only, protocol, 10, seed=0, scheme="fraction")

    def test_split__is_read_only(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        split = make_label_split(ds, protocol, 10, seed=0, scheme="fraction")
        with pytest.raises(ValueError, match="read-only"):
            split.labeled[0] = 1


class TestSplitSizes:
    def test_split_sizes__one_row_per_rate(self, synthetic: Any) -> None:
        cfg, ds, protocol = synthetic
        rows = split_sizes(ds, protocol, cfg, seed=0)
        assert [r["label_rate"] for r in rows] == [10.0, 20.0, 50.0]
        assert [r["labeled"] for r in rows] == [30, 60, 150]  # 60 training rows per class
        assert all(r["labeled"] + r["unlabeled"] == 300 and r["test"] == 60 for r in rows)
        assert rows[0]["labeled_per_class_min"] == rows[0]["labeled_per_class_max"] == 6


@pytest.fixture(scope="module")
def utd(data_dir: Path, cache_dir: Path) -> tuple[DatasetConfig, HARDataset, Protocol]:
    cfg, ds = _load_real("utd-mhad", "UTD-MHAD", data_dir, cache_dir)
    return cfg, ds, resolve_protocol(cfg, ds.info)


@pytest.fixture(scope="module")
def usc(data_dir: Path, cache_dir: Path) -> tuple[DatasetConfig, HARDataset, Protocol]:
    cfg, ds = _load_real("usc-had", "USC-HAD", data_dir, cache_dir)
    return cfg, ds, resolve_protocol(cfg, ds.info)


@pytest.mark.realdata
class TestRealUtd:
    def test_cosmo_protocol__215_test_sequences(self, utd: Any) -> None:
        _, ds, protocol = utd
        assert len(ds) == UTD_SEQUENCES
        assert protocol == Protocol((1, 2, 3, 4, 5, 6), (7, 8))
        assert ds.indices_of_subjects(protocol.test_subjects).size == UTD_TEST_SEQUENCES

    def test_split_sizes__every_rate(self, utd: Any) -> None:
        cfg, ds, protocol = utd
        rows = split_sizes(ds, protocol, cfg, seed=0)
        train = UTD_SEQUENCES - UTD_TEST_SEQUENCES
        assert [r["labeled"] for r in rows] == [27, 54, 108, 162, 216]
        assert [r["unlabeled"] for r in rows] == [train - r["labeled"] for r in rows]
        assert all(r["test"] == UTD_TEST_SEQUENCES for r in rows)

    @pytest.mark.parametrize(("rate", "n"), [(5, 1), (10, 2), (15, 3), (20, 4), (30, 6), (40, 8)])
    def test_per_class__exactly_n_per_class(self, utd: Any, rate: float, n: int) -> None:
        cfg, ds, protocol = utd
        split = make_label_split(ds, protocol, rate, 0, cfg.label_scheme, cfg.sequences_per_class)
        assert np.bincount(ds.labels[split.labeled], minlength=27).tolist() == [n] * 27
        assert set(ds.subjects[split.labeled].tolist()) <= set(range(1, 7))
        _assert_partition_of_rows(split, len(ds))

    def test_seed__same_and_other(self, utd: Any) -> None:
        cfg, ds, protocol = utd
        args = (10, cfg.label_scheme, cfg.sequences_per_class)
        a, b, c = (make_label_split(ds, protocol, args[0], s, *args[1:]) for s in (0, 0, 1))
        assert np.array_equal(a.labeled, b.labeled) and not np.array_equal(a.labeled, c.labeled)

    def test_odd_even__sizes(self, utd: Any) -> None:
        cfg, ds, _ = utd
        odd_even = dataclasses.replace(cfg, protocol="odd-even")
        protocol = resolve_protocol(odd_even, ds.info)
        split = make_label_split(ds, protocol, 5, 0, cfg.label_scheme, cfg.sequences_per_class)
        assert protocol == Protocol((1, 3, 5, 7), (2, 4, 6, 8))
        assert split.num_labeled == 27
        assert set(ds.subjects[split.test].tolist()) == {2, 4, 6, 8}
        _assert_partition_of_rows(split, len(ds))


@pytest.mark.realdata
class TestRealUsc:
    def test_split_sizes__stratified_rule(self, usc: Any) -> None:
        cfg, ds, protocol = usc
        train = ds.indices_of_subjects(protocol.train_subjects)
        test = ds.indices_of_subjects(protocol.test_subjects)
        rows = split_sizes(ds, protocol, cfg, seed=0)
        assert [r["label_rate"] for r in rows] == [1.0, 5.0, 10.0, 20.0, 30.0]
        print(f"\nUSC-HAD: {len(ds)} windows, {train.size} train, {test.size} test")
        for row in rows:
            expected = _stratified_rule(ds.labels[train], ds.info.num_classes, row["label_rate"])
            print(f"  {row}")
            assert row["labeled"] == int(expected.sum())
            assert row["unlabeled"] == train.size - row["labeled"]
            assert row["test"] == test.size
            assert (row["labeled_per_class_min"], row["labeled_per_class_max"]) == (expected.min(), expected.max())

    def test_split__stratified_per_class_and_cover(self, usc: Any) -> None:
        cfg, ds, protocol = usc
        split = make_label_split(ds, protocol, 1, 0, cfg.label_scheme, cfg.sequences_per_class)
        train = ds.indices_of_subjects(protocol.train_subjects)
        expected = _stratified_rule(ds.labels[train], ds.info.num_classes, 1)
        assert np.bincount(ds.labels[split.labeled], minlength=ds.info.num_classes).tolist() == expected.tolist()
        assert set(ds.subjects[split.labeled].tolist()) <= set(range(1, 13))
        _assert_partition_of_rows(split, len(ds))

    def test_seed__same_and_other(self, usc: Any) -> None:
        cfg, ds, protocol = usc
        a, b, c = (make_label_split(ds, protocol, 5, s, cfg.label_scheme) for s in (0, 0, 1))
        assert np.array_equal(a.labeled, b.labeled) and not np.array_equal(a.labeled, c.labeled)


def _loop_reference_labeled(ds: HARDataset, protocol: Protocol, rate: float, seed: int, scheme: Any,
                            spc: int | None) -> np.ndarray:
    """The split as first written: one generator, classes in order, a choice among the class's ascending rows."""
    train = ds.indices_of_subjects(protocol.train_subjects)
    labels = ds.labels[train]
    per_class = labeled_count_per_class(np.bincount(labels, minlength=ds.info.num_classes), rate, scheme, spc)
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(train[labels == k], size=int(n), replace=False) for k, n in enumerate(per_class) if n > 0]
    return np.sort(np.concatenate(chosen))


def _census(ds: HARDataset, subjects: tuple[int, ...]) -> dict[int, np.ndarray]:
    return {s: np.bincount(ds.labels[ds.subjects == s], minlength=ds.info.num_classes) for s in subjects}


def _assert_subject_shares(ds: HARDataset, protocol: Protocol, rate: float, seed: int, scheme: Any,
                           spc: int | None) -> None:
    """Each subject, holding only its own rows and the census, draws exactly its rows of the global split."""
    split = make_label_split(ds, protocol, rate, seed, scheme, spc)
    census = _census(ds, protocol.train_subjects)
    for subject in protocol.train_subjects:
        rows = ds.indices_of_subjects([subject])
        own = split_from_share(ds.subset(rows), label_share(census, subject, rate, seed, scheme, spc))
        assert np.array_equal(rows[own.labeled], split.labeled[ds.subjects[split.labeled] == subject])
        assert np.array_equal(rows[own.unlabeled], split.unlabeled[ds.subjects[split.unlabeled] == subject])
        assert own.num_test == 0 and int(own.labeled_per_class.sum()) == own.num_labeled


class TestSubjectLabelSplit:
    @pytest.mark.parametrize(("rate", "scheme", "spc"), [(10, "fraction", None), (50, "fraction", None),
                                                         (25, "per_class", 8)])
    @pytest.mark.parametrize("seed", [0, 3])
    def test_make_label_split__matches_loop_reference(self, synthetic: Any, rate: float, scheme: Any,
                                                      spc: int | None, seed: int) -> None:
        _, ds, protocol = synthetic
        split = make_label_split(ds, protocol, rate, seed, scheme, spc)
        assert np.array_equal(split.labeled, _loop_reference_labeled(ds, protocol, rate, seed, scheme, spc))

    @pytest.mark.parametrize(("rate", "scheme", "spc"), [(10, "fraction", None), (50, "fraction", None),
                                                         (25, "per_class", 8)])
    @pytest.mark.parametrize("seed", [0, 3])
    def test_subject_split__equals_the_global_split_of_that_subject(self, synthetic: Any, rate: float, scheme: Any,
                                                                     spc: int | None, seed: int) -> None:
        _, ds, protocol = synthetic
        _assert_subject_shares(ds, protocol, rate, seed, scheme, spc)

    def test_subject_split__rows_disagree_with_census__raises(self, synthetic: Any) -> None:
        _, ds, protocol = synthetic
        census = _census(ds, protocol.train_subjects)
        census[2] = census[2] + 1
        with pytest.raises(ConfigError, match="its data changed"):
            split_from_share(ds, label_share(census, 2, 10, 0, "fraction"))

    def test_subject_split__subject_not_in_census__raises(self, synthetic: Any) -> None:
        _, ds, _ = synthetic
        census = _census(ds, (1, 3))
        with pytest.raises(ConfigError, match="not in the class counts"):
            split_from_share(ds, label_share(census, 2, 10, 0, "fraction"))

    @pytest.mark.realdata
    def test_real_utd__cosmo_5_percent(self, utd: Any) -> None:
        cfg, ds, protocol = utd
        assert np.array_equal(make_label_split(ds, protocol, 5, 0, cfg.label_scheme, cfg.sequences_per_class).labeled,
                              _loop_reference_labeled(ds, protocol, 5, 0, cfg.label_scheme, cfg.sequences_per_class))
        _assert_subject_shares(ds, protocol, 5, 0, cfg.label_scheme, cfg.sequences_per_class)

    @pytest.mark.realdata
    def test_real_usc__1_percent(self, usc: Any) -> None:
        cfg, ds, protocol = usc
        assert np.array_equal(make_label_split(ds, protocol, 1, 0, cfg.label_scheme).labeled,
                              _loop_reference_labeled(ds, protocol, 1, 0, cfg.label_scheme, None))
        _assert_subject_shares(ds, protocol, 1, 0, cfg.label_scheme, None)
