"""Tests of fedhar.data.manifest: building, reading and verifying SHA-256 manifests."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import pytest

from fedhar.data.manifest import (
    Manifest,
    build_manifest,
    check_folder,
    load_manifest,
    read_manifest,
    verify_folder,
)
from fedhar.data.sources import get_source
from fedhar.errors import DataFormatError, DatasetNotFoundError, ManifestMismatchError

TRIALS = ("a1_s1_t1", "a1_s1_t2", "a2_s3_t4")


@pytest.fixture()
def small_utd(tmp_path: Path, data_dir: Path) -> Path:
    """A few real UTD-MHAD files (inertial + skeleton + joint order + SOURCE.txt) as published."""
    src, root = data_dir / "UTD-MHAD", tmp_path / "UTD-MHAD"
    for folder, suffix in (("Inertial", "inertial"), ("Skeleton", "skeleton")):
        (root / folder).mkdir(parents=True)
        for trial in TRIALS:
            shutil.copyfile(src / folder / f"{trial}_{suffix}.mat", root / folder / f"{trial}_{suffix}.mat")
    shutil.copyfile(src / "Skeleton" / "Skeleton_joint_order.txt", root / "Skeleton" / "Skeleton_joint_order.txt")
    (root / "SOURCE.txt").write_text("a mirror\n")
    return root


def _flip_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


class TestBuildManifest:
    def test_build__lists_every_file_with_its_sha256_and_size(self, small_utd: Path) -> None:
        # Prepare / Execute
        manifest = build_manifest("utd-mhad", small_utd, optional=get_source("utd-mhad").optional)
        # Assert
        assert manifest.folder == "UTD-MHAD"
        assert len(manifest.entries) == 2 * len(TRIALS) + 1
        for entry in manifest.entries:
            data = (small_utd / entry.path).read_bytes()
            assert entry.sha256 == hashlib.sha256(data).hexdigest()
            assert entry.size == len(data)

    def test_build__excludes_source_txt_and_marks_optional_files(self, small_utd: Path) -> None:
        manifest = build_manifest("utd-mhad", small_utd, optional=["Skeleton/*.txt"])
        assert "SOURCE.txt" not in manifest.paths
        assert "Inertial/a1_s1_t1_inertial.mat" in manifest.paths
        optional = [e.path for e in manifest.entries if e.optional]
        assert optional == ["Skeleton/Skeleton_joint_order.txt"]

    def test_save_and_read__round_trip(self, small_utd: Path, tmp_path: Path) -> None:
        manifest = build_manifest("utd-mhad", small_utd, optional=["Skeleton/*.txt"], note="test copy")
        again = read_manifest(manifest.save(tmp_path / "m" / "utd-mhad.json"))
        assert again == manifest

    def test_build__not_a_folder(self, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError):
            build_manifest("utd-mhad", tmp_path / "absent")


class TestReadManifest:
    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            # wrong format version
            json.dumps({"format": 99, "algorithm": "sha256", "name": "x", "folder": "X", "files": {}}),
            # another hash algorithm
            json.dumps({"format": 1, "algorithm": "md5", "name": "x", "folder": "X", "files": {}}),
            # a path escaping the dataset folder
            json.dumps({"format": 1, "algorithm": "sha256", "name": "x", "folder": "X",
                        "files": {"../etc/passwd": {"size": 1, "sha256": "00"}}}),
            # an absolute path
            json.dumps({"format": 1, "algorithm": "sha256", "name": "x", "folder": "X",
                        "files": {"/etc/passwd": {"size": 1, "sha256": "00"}}}),
            # an entry without a size
            json.dumps({"format": 1, "algorithm": "sha256", "name": "x", "folder": "X",
                        "files": {"a.mat": {"sha256": "00"}}}),
        ],
    )
    def test_from_json__rejects_malformed(self, text: str) -> None:
        with pytest.raises(DataFormatError):
            Manifest.from_json(text)

    def test_load_manifest__unknown_dataset(self) -> None:
        with pytest.raises(DatasetNotFoundError, match="no manifest"):
            load_manifest("no-such-dataset")


class TestVerifyFolder:
    @pytest.fixture()
    def manifest(self, small_utd: Path) -> Manifest:
        return build_manifest("utd-mhad", small_utd, optional=["Skeleton/*.txt"])

    def test_verify__passes_on_identical_copy(self, small_utd: Path, manifest: Manifest, tmp_path: Path) -> None:
        copy = tmp_path / "copy"
        shutil.copytree(small_utd, copy)
        report = verify_folder(copy, manifest)
        assert report.ok and report.checked == len(manifest.entries) and report.extra == ()

    def test_verify__single_changed_byte__names_the_file(self, small_utd: Path, manifest: Manifest) -> None:
        _flip_byte(small_utd / "Skeleton" / "a1_s1_t2_skeleton.mat")
        with pytest.raises(ManifestMismatchError, match=re.escape("a1_s1_t2_skeleton.mat")) as info:
            verify_folder(small_utd, manifest)
        assert "1 changed" in info.value.reason
        report = check_folder(small_utd, manifest)
        assert report.mismatched == ("Skeleton/a1_s1_t2_skeleton.mat",) and report.missing == ()

    def test_verify__missing_file__names_the_file(self, small_utd: Path, manifest: Manifest) -> None:
        (small_utd / "Inertial" / "a2_s3_t4_inertial.mat").unlink()
        with pytest.raises(ManifestMismatchError, match=re.escape("1 missing: Inertial/a2_s3_t4_inertial.mat")):
            verify_folder(small_utd, manifest)

    def test_verify__extra_file__only_warns(
        self, small_utd: Path, manifest: Manifest, caplog: pytest.LogCaptureFixture
    ) -> None:
        (small_utd / "Inertial" / "notes.txt").write_text("mine")
        with caplog.at_level(logging.WARNING, logger="fedhar.data.manifest"):
            report = verify_folder(small_utd, manifest)
        assert report.ok and report.extra == ("Inertial/notes.txt",)
        assert "Inertial/notes.txt" in caplog.text

    def test_verify__optional_file_may_be_missing(self, small_utd: Path, manifest: Manifest) -> None:
        (small_utd / "Skeleton" / "Skeleton_joint_order.txt").unlink()
        report = verify_folder(small_utd, manifest)
        assert report.ok and report.missing_optional == ("Skeleton/Skeleton_joint_order.txt",)

    def test_verify__changed_optional_file_fails(self, small_utd: Path, manifest: Manifest) -> None:
        _flip_byte(small_utd / "Skeleton" / "Skeleton_joint_order.txt", offset=3)
        with pytest.raises(ManifestMismatchError, match=re.escape("Skeleton_joint_order.txt")):
            verify_folder(small_utd, manifest)

    def test_verify__not_a_folder(self, tmp_path: Path, manifest: Manifest) -> None:
        with pytest.raises(DatasetNotFoundError):
            verify_folder(tmp_path / "absent", manifest)


@pytest.mark.realdata
class TestShippedManifests:
    @pytest.mark.parametrize(("name", "count"), [("utd-mhad", 861 * 2 + 1), ("usc-had", 14 * 12 * 5 + 1)])
    def test_shipped_manifest__verifies_the_real_dataset(self, data_dir: Path, name: str, count: int) -> None:
        manifest = load_manifest(name)
        assert manifest.name == name and len(manifest.entries) == count
        report = verify_folder(data_dir / get_source(name).folder, manifest)
        assert report.ok and report.extra == ()
