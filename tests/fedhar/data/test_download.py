"""Tests of fedhar.data.download: import from zips and folders, downloads, atomic install, zip slip."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedhar.data.download import extract_zip, fetch_dataset
from fedhar.data.manifest import Manifest, build_manifest, check_folder, load_manifest
from fedhar.data.sources import get_source
from fedhar.errors import DataFormatError, DatasetNotFoundError, ManifestMismatchError

TRIALS = ("a1_s1_t1", "a1_s1_t2", "a2_s3_t4")


@pytest.fixture()
def small_utd(tmp_path: Path, data_dir: Path) -> Path:
    """A few real UTD-MHAD files laid out as published: UTD-MHAD/{Inertial,Skeleton}/..."""
    src, root = data_dir / "UTD-MHAD", tmp_path / "src" / "UTD-MHAD"
    for folder, suffix in (("Inertial", "inertial"), ("Skeleton", "skeleton")):
        (root / folder).mkdir(parents=True)
        for trial in TRIALS:
            shutil.copyfile(src / folder / f"{trial}_{suffix}.mat", root / folder / f"{trial}_{suffix}.mat")
    shutil.copyfile(src / "Skeleton" / "Skeleton_joint_order.txt", root / "Skeleton" / "Skeleton_joint_order.txt")
    return root


@pytest.fixture()
def manifest(small_utd: Path) -> Manifest:
    return build_manifest("utd-mhad", small_utd, optional=get_source("utd-mhad").optional)


@pytest.fixture()
def archives(small_utd: Path, tmp_path: Path) -> Path:
    """A folder with Inertial.zip (files at the zip's root) and Skeleton.zip (under Skeleton/)."""
    out = tmp_path / "archives"
    out.mkdir()
    _zip(out / "Inertial.zip", small_utd / "Inertial", prefix="")
    _zip(out / "Skeleton.zip", small_utd / "Skeleton", prefix="Skeleton/")
    return out


def _zip(path: Path, folder: Path, prefix: str) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, prefix + file.relative_to(folder).as_posix())
    return path


def _flip_byte(path: Path, offset: int = 200) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _assert_installed_only(install_dir: Path, manifest: Manifest) -> None:
    """The dataset folder verifies and nothing else (no temporary folder) is left in install_dir."""
    assert sorted(p.name for p in install_dir.iterdir()) == ["UTD-MHAD"]
    report = check_folder(install_dir / "UTD-MHAD", manifest)
    assert report.ok and report.checked == len(manifest.entries) and report.extra == ()


class TestFetchFromLocal:
    def test_fetch__from_zip_of_the_dataset_folder(self, small_utd: Path, manifest: Manifest, tmp_path: Path) -> None:
        # Prepare: one zip whose top folder is UTD-MHAD/
        archive = _zip(tmp_path / "utd.zip", small_utd, prefix="UTD-MHAD/")
        install_dir = tmp_path / "data"
        # Execute
        dest = fetch_dataset("utd-mhad", install_dir, from_path=archive, manifest=manifest, progress=False)
        # Assert
        assert dest == install_dir / "UTD-MHAD"
        _assert_installed_only(install_dir, manifest)

    def test_fetch__from_folder_of_official_archives(self, archives: Path, manifest: Manifest, tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        _assert_installed_only(install_dir, manifest)
        assert archives.joinpath("Inertial.zip").is_file()  # the user's archives are left alone

    def test_fetch__from_extracted_folder_copies(self, small_utd: Path, manifest: Manifest, tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        fetch_dataset("utd-mhad", install_dir, from_path=small_utd.parent, manifest=manifest, progress=False)
        _assert_installed_only(install_dir, manifest)
        assert check_folder(small_utd, manifest).ok  # copied, not moved

    def test_fetch__bad_hash_installs_nothing(self, archives: Path, small_utd: Path, manifest: Manifest,
                                               tmp_path: Path) -> None:
        # Prepare: the archive holds a file with one changed byte
        _flip_byte(small_utd / "Inertial" / "a1_s1_t2_inertial.mat")
        _zip(archives / "Inertial.zip", small_utd / "Inertial", prefix="Inertial/")
        install_dir = tmp_path / "data"
        # Execute / Assert
        with pytest.raises(ManifestMismatchError, match=re.escape("a1_s1_t2_inertial.mat")) as info:
            fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        assert "nothing was installed" in info.value.reason
        assert list(install_dir.iterdir()) == []  # no dataset folder, no temporary folder

    def test_fetch__missing_archive_installs_nothing(self, archives: Path, manifest: Manifest, tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        with pytest.raises(ManifestMismatchError, match=re.escape("missing: Skeleton/a1_s1_t1_skeleton.mat")):
            fetch_dataset("utd-mhad", install_dir, from_path=archives / "Inertial.zip", manifest=manifest,
                          progress=False)
        assert list(install_dir.iterdir()) == []

    def test_fetch__missing_from_path(self, manifest: Manifest, tmp_path: Path) -> None:
        with pytest.raises(DatasetNotFoundError, match="zip archive or a folder"):
            fetch_dataset("utd-mhad", tmp_path / "data", from_path=tmp_path / "absent", manifest=manifest)
        assert list((tmp_path / "data").iterdir()) == []

    def test_fetch__not_a_zip(self, manifest: Manifest, tmp_path: Path) -> None:
        fake = tmp_path / "Inertial.zip"
        fake.write_text("<html>not found</html>")
        install_dir = tmp_path / "data"
        with pytest.raises(DataFormatError, match="not a readable zip"):
            fetch_dataset("utd-mhad", install_dir, from_path=fake, manifest=manifest, progress=False)
        assert list(install_dir.iterdir()) == []


class TestDefaultManifest:
    @pytest.mark.parametrize("name", ["utd-mhad", "usc-had"])
    def test_fetch__without_manifest_checks_the_shipped_one(self, name: str, tmp_path: Path) -> None:
        # An existing folder holding none of the dataset's files: without manifest=, fetch_dataset
        # must report every required file of the manifest shipped in fedhar/data/manifests missing.
        shipped = load_manifest(name)
        required = sum(not e.optional for e in shipped.entries)
        folder = tmp_path / get_source(name).folder
        folder.mkdir()
        (folder / "stray.txt").write_text("not part of the dataset")
        with pytest.raises(DatasetNotFoundError, match=rf"; {required} missing: |\({required} missing: "):
            fetch_dataset(name, tmp_path, progress=False)

    @pytest.mark.parametrize("name", ["utd-mhad", "usc-had"])
    def test_fetch__real_dataset_verifies_against_the_default(self, name: str, data_dir: Path) -> None:
        # The real dataset is kept as is (no force): it verifies against the default manifest.
        assert fetch_dataset(name, data_dir, progress=False) == data_dir / get_source(name).folder


class TestExistingFolder:
    def test_fetch__verified_folder_is_kept_without_force(self, archives: Path, manifest: Manifest,
                                                          tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        dest = fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        marker = dest / "Inertial" / "mine.txt"
        marker.write_text("kept")
        # A second install is a no-op: the folder is verified, not replaced.
        fetch_dataset("utd-mhad", install_dir, from_path=tmp_path / "absent", manifest=manifest, progress=False)
        assert marker.read_text() == "kept"

    def test_fetch__corrupt_folder__refused_without_force_replaced_with_force(
        self, archives: Path, manifest: Manifest, tmp_path: Path
    ) -> None:
        install_dir = tmp_path / "data"
        dest = fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        _flip_byte(dest / "Skeleton" / "a2_s3_t4_skeleton.mat")
        with pytest.raises(DatasetNotFoundError, match="--force"):
            fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        assert not check_folder(dest, manifest).ok  # left as it was
        fetch_dataset("utd-mhad", install_dir, from_path=archives, force=True, manifest=manifest, progress=False)
        _assert_installed_only(install_dir, manifest)

    def test_fetch__failed_forced_replace_keeps_the_old_folder(self, archives: Path, manifest: Manifest,
                                                                tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        fetch_dataset("utd-mhad", install_dir, from_path=archives, manifest=manifest, progress=False)
        with pytest.raises(ManifestMismatchError):
            fetch_dataset("utd-mhad", install_dir, from_path=archives / "Inertial.zip", force=True, manifest=manifest,
                          progress=False)
        _assert_installed_only(install_dir, manifest)


class TestExtractZip:
    @pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil.txt", "Inertial/../../evil.txt", "C:\\evil.txt"])
    def test_extract__rejects_zip_slip(self, member: str, tmp_path: Path) -> None:
        archive = tmp_path / "slip.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("Inertial/ok.txt", "fine")
            zf.writestr(member, "escaped")
        with pytest.raises(DataFormatError, match="outside the extraction folder"):
            extract_zip(archive, tmp_path / "out" / "x")
        assert not (tmp_path / "out").exists()  # nothing extracted at all

    def test_fetch__zip_slip_archive_installs_nothing(self, manifest: Manifest, tmp_path: Path) -> None:
        archive = tmp_path / "Inertial.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("../../evil.txt", "escaped")
        install_dir = tmp_path / "data"
        with pytest.raises(DataFormatError):
            fetch_dataset("utd-mhad", install_dir, from_path=archive, manifest=manifest, progress=False)
        assert list(install_dir.iterdir()) == [] and not (tmp_path / "evil.txt").exists()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/short.zip":  # announces more bytes than it sends
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"PK" * 10)
            return
        super().do_GET()


@pytest.fixture()
def server(archives: Path) -> Iterator[str]:
    """A local HTTP server publishing the archives; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(archives)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class TestDownload:
    def test_fetch__downloads_extracts_and_installs(self, server: str, manifest: Manifest, tmp_path: Path) -> None:
        urls = {"Inertial.zip": f"{server}/Inertial.zip", "skeleton": f"{server}/Skeleton.zip"}
        install_dir = tmp_path / "data"
        fetch_dataset("utd-mhad", install_dir, urls=urls, manifest=manifest, timeout=5, progress=True)
        _assert_installed_only(install_dir, manifest)

    @pytest.mark.parametrize("path", ["/missing.zip", "/short.zip"])
    def test_fetch__http_error_or_truncated_download(self, server: str, path: str, manifest: Manifest,
                                                     tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        with pytest.raises(DatasetNotFoundError, match=re.escape(server + path)):
            fetch_dataset("utd-mhad", install_dir, urls={"Inertial.zip": server + path}, manifest=manifest,
                          timeout=5, progress=False)
        assert list(install_dir.iterdir()) == []

    def test_fetch__unreachable_url__clear_and_quick(self, manifest: Manifest, tmp_path: Path) -> None:
        install_dir = tmp_path / "data"
        start = time.monotonic()
        with pytest.raises(DatasetNotFoundError) as info:
            fetch_dataset("utd-mhad", install_dir, urls={"Inertial.zip": "http://127.0.0.1:9/x.zip"}, manifest=manifest,
                          timeout=2, progress=False)
        assert time.monotonic() - start < 10
        assert info.value.culprit == "http://127.0.0.1:9/x.zip"
        assert "--from" in info.value.reason and "utdallas.edu" in info.value.reason
        assert list(install_dir.iterdir()) == []

    def test_fetch__unknown_archive_in_urls(self, manifest: Manifest, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match=re.escape("no archive 'Depth.zip'")):
            fetch_dataset("utd-mhad", tmp_path, urls={"Depth.zip": "http://127.0.0.1:9/"}, manifest=manifest)
