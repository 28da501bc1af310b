"""Tests of the on-disk cache: identical reloads, keys, corrupted entries, atomic writes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np
import pytest
import scipy.io
import yaml

from fedhar.data.cache import DatasetCache, compute_cache_key, fingerprint_files
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import DatasetInfo, HARDataset, ModalitySpec
from fedhar.data.loading import load_dataset_with_report

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "dataset"


def _config(name: str, **override: Any) -> DatasetConfig:
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
    return DatasetConfig.from_mapping({**raw, **override})


def _assert_same(a: HARDataset, b: HARDataset) -> None:
    assert a.info == b.info
    assert a.data.keys() == b.data.keys() and a.extra.keys() == b.extra.keys()
    for x, y in [*zip(a.data.values(), b.data.values()), *zip(a.extra.values(), b.extra.values())]:
        assert x.dtype == y.dtype and np.array_equal(x, y)
    for name in ("labels", "subjects", "trials"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and np.array_equal(x, y)


def _tiny_dataset() -> HARDataset:
    rng = np.random.default_rng(0)
    info = DatasetInfo("usc-had", (ModalitySpec("acc", (4, 3), 100.0, ("x", "y", "z")),), ("a", "b"), (1, 2))
    return HARDataset(
        info=info,
        data={"acc": rng.normal(size=(6, 4, 3)).astype(np.float32)},
        labels=np.array([0, 1, 0, 1, 0, 1]),
        subjects=np.array([1, 1, 1, 2, 2, 2]),
        trials=np.array([1, 1, 2, 1, 1, 2]),
        extra={"start_index": np.arange(6)},
    )


def _forbid_raw_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Spy: any raw-file read fails the test (a cache hit must not read the raw files)."""

    def boom(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError(f"raw file read during a cached load: {args[:1]}")

    monkeypatch.setattr(scipy.io, "loadmat", boom)


def _no_temp_files(folder: Path) -> bool:
    return all(p.suffix == ".npz" and not p.name.startswith(".") for p in folder.iterdir())


@pytest.mark.realdata
class TestCachedLoad:
    @pytest.mark.parametrize(("name", "folder"), [("utd-mhad", "UTD-MHAD"), ("usc-had", "USC-HAD")])
    def test_second_load__bit_identical_and_from_cache(
        self, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str
    ) -> None:
        # Prepare
        cfg = _config(name, root=str(data_dir / folder), cache_dir=str(tmp_path))
        first, first_report = load_dataset_with_report(cfg, progress=False)
        _forbid_raw_reads(monkeypatch)
        # Execute
        second, second_report = load_dataset_with_report(cfg, progress=False)
        # Assert
        assert not first_report.from_cache and second_report.from_cache
        assert first_report.cache_path == second_report.cache_path
        _assert_same(first, second)
        assert _no_temp_files(tmp_path) and len(list(tmp_path.iterdir())) == 1

    def test_preprocess_change__new_entry(self, data_dir: Path, tmp_path: Path) -> None:
        root, cache = str(data_dir / "UTD-MHAD"), str(tmp_path)
        load_dataset_with_report(_config("utd-mhad", root=root, cache_dir=cache), progress=False)
        cfg = _config("utd-mhad", root=root, cache_dir=cache, preprocess={"imu_length": 60, "skeleton_frames": 40})
        ds, report = load_dataset_with_report(cfg, progress=False)
        assert not report.from_cache and ds.data["inertial"].shape[1] == 60
        assert len(list(tmp_path.glob("utd-mhad-*.npz"))) == 2

    @pytest.mark.parametrize(
        "damage",
        [
            pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
            pytest.param(lambda b: b[: len(b) // 2] + bytes([b[len(b) // 2] ^ 0xFF]) + b[len(b) // 2 + 1 :],
                         id="flipped-byte-in-array"),
            pytest.param(lambda b: b"not an npz file", id="garbage"),
            pytest.param(lambda b: b"", id="empty"),
        ],
    )
    def test_corrupted_entry__logged_deleted_rebuilt(
        self, data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Any
    ) -> None:
        # Prepare
        cfg = _config("utd-mhad", root=str(data_dir / "UTD-MHAD"), cache_dir=str(tmp_path))
        original, report = load_dataset_with_report(cfg, progress=False)
        entry = Path(report.cache_path or "")
        entry.write_bytes(damage(entry.read_bytes()))
        # Execute
        with caplog.at_level(logging.WARNING, logger="fedhar.data.cache"):
            rebuilt, rebuilt_report = load_dataset_with_report(cfg, progress=False)
        # Assert
        assert not rebuilt_report.from_cache
        assert any(str(entry) in r.getMessage() and "rebuild" in r.getMessage() for r in caplog.records)
        _assert_same(original, rebuilt)
        assert load_dataset_with_report(cfg, progress=False)[1].from_cache
        assert _no_temp_files(tmp_path)


class TestCacheKey:
    BASE: ClassVar[dict[str, Any]] = {
        "dataset": "utd-mhad",
        "reader_version": 1,
        "preprocess": {"imu_length": 120, "skeleton_frames": 40},
        "skip_bad_files": False,
        "fingerprint": [("Inertial/a1_s1_t1_inertial.mat", 100, 5)],
    }

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("dataset", "usc-had"),
            ("reader_version", 2),
            ("preprocess", {"imu_length": 60, "skeleton_frames": 40}),
            ("skip_bad_files", True),
            ("fingerprint", [("Inertial/a1_s1_t1_inertial.mat", 101, 5)]),  # size
            ("fingerprint", [("Inertial/a1_s1_t1_inertial.mat", 100, 6)]),  # mtime
            ("fingerprint", [("Inertial/a1_s1_t2_inertial.mat", 100, 5)]),  # name
        ],
    )
    def test_key__changes__with_each_input(self, field: str, value: Any) -> None:
        assert compute_cache_key(**{**self.BASE, field: value}) != compute_cache_key(**self.BASE)

    def test_key__stable__same_inputs_any_dict_order(self) -> None:
        reordered = {**self.BASE, "preprocess": {"skeleton_frames": 40, "imu_length": 120}}
        assert compute_cache_key(**reordered) == compute_cache_key(**self.BASE)

    def test_fingerprint__follows_file_size_and_mtime(self, tmp_path: Path) -> None:
        f = tmp_path / "sub" / "x.mat"
        f.parent.mkdir()
        f.write_bytes(b"1234")
        os.utime(f, ns=(1_000_000_000, 1_000_000_000))
        assert fingerprint_files(tmp_path, [f]) == [("sub/x.mat", 4, 1_000_000_000)]
        os.utime(f, ns=(2_000_000_000, 2_000_000_000))
        assert fingerprint_files(tmp_path, [f]) == [("sub/x.mat", 4, 2_000_000_000)]


class TestDatasetCache:
    def test_roundtrip__arrays_extra_and_meta(self, tmp_path: Path) -> None:
        cache, ds = DatasetCache(tmp_path / "new"), _tiny_dataset()
        path = cache.save("k" * 64, ds, {"report": {"x": 1}})
        hit = cache.load("usc-had", "k" * 64)
        assert hit is not None and hit.path == path and hit.meta == {"report": {"x": 1}}
        _assert_same(ds, hit.dataset)
        assert cache.load("usc-had", "j" * 64) is None

    def test_load__rejects_entry_of_another_key(self, tmp_path: Path) -> None:
        # Prepare: an entry whose stored key differs from its file name's key
        cache = DatasetCache(tmp_path)
        cache.save("a" * 64, _tiny_dataset())
        cache.entry_path("usc-had", "a" * 64).rename(cache.entry_path("usc-had", "a" * 24 + "b" * 40))
        # Execute / Assert: same file name, other full key -> treated as bad and deleted
        assert cache.load("usc-had", "a" * 24 + "b" * 40) is None
        assert not list(tmp_path.iterdir())

    def test_save__write_failure__no_crash_no_temp_file(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        def failing_savez(*args: Any, **kwargs: Any) -> NoReturn:
            raise OSError("disk full")

        monkeypatch.setattr(np, "savez", failing_savez)
        assert DatasetCache(tmp_path).save("k" * 64, _tiny_dataset()) is None
        assert not list(tmp_path.iterdir())
