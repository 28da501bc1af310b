"""Tests of bad raw input: each defect gives its error naming the file, or a skip with a warning.

Bad datasets are built in tmp_path: a tree of symlinks to the real files, in which a few
links are replaced by corrupted copies (the link is removed first, so /work/shared is
never written).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fedhar.data.config import DatasetConfig
from fedhar.data.loading import load_dataset, load_dataset_with_report
from fedhar.data.usc_had import read_usc_had
from fedhar.data.utd_mhad import read_utd_mhad
from fedhar.errors import ConfigError, DataFormatError, DatasetNotFoundError

pytestmark = pytest.mark.realdata

UTD_IMU = Path("Inertial/a1_s1_t1_inertial.mat")
UTD_SKEL = Path("Skeleton/a1_s1_t1_skeleton.mat")
USC_FILE = Path("Subject1/a1t1.mat")


class _LinkTree:
    """A folder mirroring ``src`` with one symlink per file, restorable after each test.

    Creating ~1700 symlinks is slow on a busy disk, so one tree per module is built and
    :meth:`restore` undoes a test's damage (replaced, removed or added files).
    """

    def __init__(self, src: Path, dst: Path) -> None:
        self.src, self.dst = src, dst
        self.files: dict[str, set[str]] = {}
        for folder, _, names in os.walk(src):
            self.files[os.path.relpath(folder, src)] = set(names)
        for rel, names in self.files.items():
            (dst / rel).mkdir(parents=True, exist_ok=True)
            for name in names:
                os.symlink(src / rel / name, dst / rel / name)

    def restore(self) -> None:
        for rel, names in self.files.items():
            folder = self.dst / rel
            folder.mkdir(parents=True, exist_ok=True)
            for name in set(os.listdir(folder)) - names:
                if not (folder / name).is_dir():
                    (folder / name).unlink()
            for name in names:
                link = folder / name
                if link.is_symlink() and os.readlink(link) == str(self.src / rel / name):
                    continue
                link.unlink(missing_ok=True)
                os.symlink(self.src / rel / name, link)


@pytest.fixture(scope="module")
def _utd_tree(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> _LinkTree:
    return _LinkTree(data_dir / "UTD-MHAD", tmp_path_factory.mktemp("bad-utd") / "UTD-MHAD")


@pytest.fixture(scope="module")
def _usc_tree(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> _LinkTree:
    return _LinkTree(data_dir / "USC-HAD", tmp_path_factory.mktemp("bad-usc") / "USC-HAD")


@pytest.fixture
def utd_root(_utd_tree: _LinkTree) -> Iterator[Path]:
    yield _utd_tree.dst
    _utd_tree.restore()


@pytest.fixture
def usc_root(_usc_tree: _LinkTree) -> Iterator[Path]:
    yield _usc_tree.dst
    _usc_tree.restore()


def _replace_bytes(path: Path, content: bytes) -> None:
    path.unlink()  # drop the symlink: never write through it
    path.write_bytes(content)


def _replace_mat(path: Path, fields: dict[str, object]) -> None:
    path.unlink()
    scipy.io.savemat(path, fields)


def _real(path: Path) -> np.ndarray:
    """The numeric field of a real file (read through its symlink)."""
    content = scipy.io.loadmat(path)
    return next(v for k, v in content.items() if k in ("d_iner", "d_skel", "sensor_readings"))


# Axis of channels (IMU) or joints (skeleton) in each raw field: never the time axis.
CHANNEL_AXIS = {"d_iner": 1, "d_skel": 0, "sensor_readings": 1}

# Each defect: (id, how to damage the file, its field, words the error must contain)
Defect = Callable[[Path, str], None]
DEFECTS: list[tuple[str, Defect, str]] = [
    # half of a real file: loadmat fails part-way
    ("truncated", lambda p, f: _replace_bytes(p, p.read_bytes()[: p.stat().st_size // 2]), "not a readable MATLAB"),
    # a text file named .mat
    ("not-matlab", lambda p, f: _replace_bytes(p, b"this is a CSV, not MATLAB\n1,2,3\n"), "not a readable MATLAB"),
    # zero bytes
    ("empty", lambda p, f: _replace_bytes(p, b""), "not a readable MATLAB"),
    # a valid MATLAB file without the expected field
    ("missing-field", lambda p, f: _replace_mat(p, {"other": _real(p)}), "missing"),
    # the field is text
    ("non-numeric", lambda p, f: _replace_mat(p, {f: "abc"}), "not a numeric array"),
    # one channel / joint too few
    ("wrong-shape", lambda p, f: _replace_mat(p, {f: np.delete(_real(p), -1, axis=CHANNEL_AXIS[f])}), "has shape"),
    # flattened to 1-D
    ("wrong-ndim", lambda p, f: _replace_mat(p, {f: _real(p).ravel()}), "has shape"),
    # a NaN reading
    ("nan", lambda p, f: _replace_mat(p, {f: np.where(np.arange(_real(p).size).reshape(_real(p).shape) == 7,
                                                       np.nan, _real(p))}), "NaN/Inf"),
    # an Inf reading
    ("inf", lambda p, f: _replace_mat(p, {f: np.where(np.arange(_real(p).size).reshape(_real(p).shape) == 3,
                                                       np.inf, _real(p))}), "NaN/Inf"),
]


class TestUtdBadFiles:
    @pytest.mark.parametrize(("defect", "words"), [(d, w) for _, d, w in DEFECTS], ids=[i for i, _, _ in DEFECTS])
    @pytest.mark.parametrize(
        ("rel", "field"), [(UTD_IMU, "d_iner"), (UTD_SKEL, "d_skel")], ids=["inertial", "skeleton"]
    )
    def test_read__raises_naming_file(self, utd_root: Path, defect: Defect, words: str, rel: Path, field: str) -> None:
        defect(utd_root / rel, field)
        with pytest.raises(DataFormatError, match=words) as err:
            read_utd_mhad(utd_root)
        assert err.value.culprit == str(utd_root / rel)
        assert str(utd_root / rel) in str(err.value)

    @pytest.mark.parametrize(("rel", "field", "time_axis", "words"), [
        (UTD_IMU, "d_iner", 0, "3 inertial samples, fewer than 0.5 x the target 120"),
        (UTD_SKEL, "d_skel", 2, "3 skeleton frames, fewer than 0.5 x the target 40"),
    ], ids=["inertial", "skeleton"])
    def test_too_short_trial__raises_naming_file_or_is_skipped(
        self, utd_root: Path, rel: Path, field: str, time_axis: int, words: str
    ) -> None:
        # A 3-sample recording would otherwise be stretched to the target length and cached.
        _replace_mat(utd_root / rel, {field: np.take(_real(utd_root / rel), [0, 1, 2], axis=time_axis)})
        with pytest.raises(DataFormatError, match=words) as err:
            read_utd_mhad(utd_root, subjects=(1,))
        assert err.value.culprit == str(utd_root / rel)
        dataset, report = read_utd_mhad(utd_root, skip_bad_files=True, subjects=(1,))
        assert report.num_skipped == 1 and len(dataset) == int(np.sum(dataset.subjects == 1))
        assert not ((dataset.labels == 0) & (dataset.trials == 1)).any()  # a1_s1_t1 left out

    @pytest.mark.parametrize("rel", [UTD_SKEL, UTD_IMU])
    def test_missing_partner__raises_naming_missing_file(self, utd_root: Path, rel: Path) -> None:
        (utd_root / rel).unlink()
        with pytest.raises(DataFormatError, match="a1_s1_t1 is incomplete") as err:
            read_utd_mhad(utd_root)
        assert err.value.culprit == str(utd_root / rel)

    def test_missing_trial__raises_naming_both_files(self, utd_root: Path) -> None:
        for rel in ("Inertial/a5_s2_t3_inertial.mat", "Skeleton/a5_s2_t3_skeleton.mat"):
            (utd_root / rel).unlink()
        with pytest.raises(DataFormatError, match="a5_s2_t3_skeleton.mat") as err:
            read_utd_mhad(utd_root)
        assert err.value.culprit == str(utd_root / "Inertial/a5_s2_t3_inertial.mat")

    def test_out_of_range_name__raises(self, utd_root: Path) -> None:
        (utd_root / "Inertial/a28_s1_t1_inertial.mat").symlink_to((utd_root / UTD_IMU).resolve())
        with pytest.raises(DataFormatError, match=r"outside") as err:
            read_utd_mhad(utd_root)
        assert err.value.culprit == str(utd_root / "Inertial/a28_s1_t1_inertial.mat")

    def test_skip_bad_files__warns_counts_and_drops_trials(
        self, utd_root: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        # Prepare: a truncated inertial file, a NaN skeleton file, a trial without skeleton
        DEFECTS[0][1](utd_root / UTD_IMU, "d_iner")
        DEFECTS[7][1](utd_root / "Skeleton/a5_s2_t3_skeleton.mat", "d_skel")
        (utd_root / "Skeleton/a9_s4_t2_skeleton.mat").unlink()
        # Execute
        with caplog.at_level(logging.WARNING):
            ds, report = read_utd_mhad(utd_root, skip_bad_files=True)
        # Assert
        bad = {"a1_s1_t1_inertial.mat", "a5_s2_t3_skeleton.mat", "a9_s4_t2_skeleton.mat"}
        assert report.num_skipped == 3 and {Path(s.path).name for s in report.skipped} == bad
        assert all(any(name in r.getMessage() for r in caplog.records) for name in bad)
        assert len(ds) == 861 - 3
        present = set(zip(ds.labels + 1, ds.subjects, ds.trials, strict=True))
        assert not present & {(1, 1, 1), (5, 2, 3), (9, 4, 2)}

    def test_skip_bad_files__report_survives_cache(self, utd_root: Path, tmp_path: Path) -> None:
        (utd_root / UTD_SKEL).unlink()
        cfg = DatasetConfig(name="utd-mhad", root=utd_root, skip_bad_files=True, cache_dir=tmp_path / "cache")
        first = load_dataset_with_report(cfg, progress=False)[1]
        second = load_dataset_with_report(cfg, progress=False)[1]
        assert second.from_cache and second.skipped == first.skipped and second.num_skipped == 1


class TestUscBadFiles:
    @pytest.mark.parametrize(("defect", "words"), [(d, w) for _, d, w in DEFECTS], ids=[i for i, _, _ in DEFECTS])
    def test_read__raises_naming_file(self, usc_root: Path, defect: Defect, words: str) -> None:
        defect(usc_root / USC_FILE, "sensor_readings")
        with pytest.raises(DataFormatError, match=words) as err:
            read_usc_had(usc_root)
        assert err.value.culprit == str(usc_root / USC_FILE)

    def test_missing_trial__raises_naming_file(self, usc_root: Path) -> None:
        (usc_root / "Subject2/a3t4.mat").unlink()
        with pytest.raises(DataFormatError, match="not found") as err:
            read_usc_had(usc_root)
        assert err.value.culprit == str(usc_root / "Subject2/a3t4.mat")

    def test_skip_bad_files__warns_and_counts(self, usc_root: Path, caplog: pytest.LogCaptureFixture) -> None:
        DEFECTS[3][1](usc_root / USC_FILE, "sensor_readings")  # missing field
        (usc_root / "Subject2/a3t4.mat").unlink()
        with caplog.at_level(logging.WARNING):
            ds, report = read_usc_had(usc_root, skip_bad_files=True)
        assert report.num_skipped == 2 and report.files_read == 838
        assert any("Subject1/a1t1.mat" in r.getMessage() for r in caplog.records)
        assert len(set(zip(ds.subjects.tolist(), ds.labels.tolist(), ds.trials.tolist(), strict=True))) == 838


class TestWrongFolder:
    @pytest.mark.parametrize("name", ["utd-mhad", "usc-had"])
    def test_root_missing__raises(self, tmp_path: Path, name: str) -> None:
        with pytest.raises(DatasetNotFoundError) as err:
            load_dataset(DatasetConfig(name=name, root=tmp_path / "nowhere"))
        assert err.value.culprit == str(tmp_path / "nowhere")

    @pytest.mark.parametrize("name", ["utd-mhad", "usc-had"])
    def test_root_unset__raises(self, name: str) -> None:
        with pytest.raises(DatasetNotFoundError, match="root"):
            load_dataset(DatasetConfig(name=name, root=None))

    @pytest.mark.parametrize("folder", ["Inertial", "Skeleton"])
    def test_utd_folder_missing__raises(self, tmp_path: Path, folder: str) -> None:
        root = tmp_path / "UTD-MHAD"
        (root / "Inertial").mkdir(parents=True)
        (root / "Skeleton").mkdir()
        (root / folder).rmdir()
        with pytest.raises(DatasetNotFoundError, match=f"{folder}/ is missing") as err:
            read_utd_mhad(root)
        assert err.value.culprit == str(root / folder)

    def test_utd_folder_without_mat__raises(self, tmp_path: Path) -> None:
        for sub in ("Inertial", "Skeleton"):
            (tmp_path / sub).mkdir()
        with pytest.raises(DatasetNotFoundError, match="no .mat file") as err:
            load_dataset(DatasetConfig(name="utd-mhad", root=tmp_path, cache_dir=tmp_path / "cache"))
        assert err.value.culprit == str(tmp_path / "Inertial")

    def test_usc_without_subject_folders__raises(self, data_dir: Path) -> None:
        # the UTD-MHAD folder given as USC-HAD
        with pytest.raises(DatasetNotFoundError, match="Subject") as err:
            read_usc_had(data_dir / "UTD-MHAD")
        assert err.value.culprit == str(data_dir / "UTD-MHAD")

    def test_usc_empty_subject_folder__raises(self, tmp_path: Path) -> None:
        (tmp_path / "Subject1").mkdir()
        with pytest.raises(DatasetNotFoundError, match="no .mat file") as err:
            read_usc_had(tmp_path)
        assert err.value.culprit == str(tmp_path / "Subject1")

    def test_unknown_preprocess_key__raises(self, data_dir: Path) -> None:
        cfg = DatasetConfig(name="utd-mhad", root=data_dir / "UTD-MHAD", preprocess={"window_s": 2.0})
        with pytest.raises(ConfigError, match="window_s"):
            load_dataset(cfg)
