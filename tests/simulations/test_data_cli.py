"""Tests of the ``fedhar-data`` command line (simulations/data_cli.py), offline."""

from __future__ import annotations

import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from fedhar.data.manifest import build_manifest, read_manifest
from simulations.data_cli import main

TRIALS = ("a1_s1_t1", "a3_s2_t2", "a27_s8_t3")


@pytest.fixture()
def small_utd(tmp_path: Path, data_dir: Path) -> Path:
    """A few real UTD-MHAD files laid out as published, plus their manifest in manifest.json."""
    src, root = data_dir / "UTD-MHAD", tmp_path / "src" / "UTD-MHAD"
    for folder, suffix in (("Inertial", "inertial"), ("Skeleton", "skeleton")):
        (root / folder).mkdir(parents=True)
        for trial in TRIALS:
            shutil.copyfile(src / folder / f"{trial}_{suffix}.mat", root / folder / f"{trial}_{suffix}.mat")
    build_manifest("utd-mhad", root).save(tmp_path / "manifest.json")
    return root


@pytest.fixture()
def archive(small_utd: Path, tmp_path: Path) -> Path:
    """The small dataset zipped under a top folder the installer does not know."""
    path = tmp_path / "utd-export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for file in sorted(small_utd.rglob("*.mat")):
            zf.write(file, "export/" + file.relative_to(small_utd).as_posix())
    return path


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("fedhar-data: error")]
    assert len(lines) == 1 and "Traceback" not in err
    return lines[0]


class TestDownloadAndVerify:
    def test_download_from_zip__then_verify(self, archive: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
        # Prepare
        data, manifest = tmp_path / "data", tmp_path / "manifest.json"
        # Execute
        code = main(["-q", "download", "utd-mhad", "--data-dir", str(data), "--from", str(archive),
                     "--manifest", str(manifest)])
        # Assert
        assert code == 0 and "ready in" in capsys.readouterr().out
        assert sorted(p.name for p in data.iterdir()) == ["UTD-MHAD"]
        assert main(["-q", "verify", "utd-mhad", "--data-dir", str(data), "--manifest", str(manifest)]) == 0
        assert "6 files match" in capsys.readouterr().out

    def test_verify__changed_byte__exit_1_naming_the_file(self, small_utd: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        target = small_utd / "Inertial" / "a3_s2_t2_inertial.mat"
        data = bytearray(target.read_bytes())
        data[100] ^= 0x01
        target.write_bytes(bytes(data))
        code = main(["-q", "verify", "utd-mhad", "--data-dir", str(small_utd.parent),
                     "--manifest", str(tmp_path / "manifest.json")])
        assert code == 1
        assert "Inertial/a3_s2_t2_inertial.mat" in _one_line_error(capsys.readouterr().err)

    def test_download__unreachable_url__exit_1_quickly(self, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        start = time.monotonic()
        code = main(["-q", "download", "usc-had", "--data-dir", str(tmp_path / "data"),
                     "--url", "USC-HAD.zip=http://127.0.0.1:9/x.zip", "--timeout", "2"])
        assert code == 1 and time.monotonic() - start < 10
        line = _one_line_error(capsys.readouterr().err)
        assert "http://127.0.0.1:9/x.zip" in line and "--from" in line
        assert list((tmp_path / "data").iterdir()) == []

    @pytest.mark.parametrize(
        ("argv", "code"),
        [
            (["download", "utd-mhad", "--url", "no-equals-sign"], 2),  # malformed --url
            (["download", "utd-mhad", "--url", "Depth.zip=http://127.0.0.1:9/"], 2),  # unknown archive
            (["download", "mnist"], 2),  # unknown dataset
            (["verify", "utd-mhad", "--data-dir", "/nonexistent/fedhar"], 1),  # nothing installed
        ],
    )
    def test_bad_input__nonzero_exit_without_traceback(self, argv: list[str], code: int,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
        result: int | str | None
        try:
            result = main(["-q", *argv])
        except SystemExit as exc:  # argparse usage errors
            result = exc.code
        assert result == code
        assert "Traceback" not in capsys.readouterr().err


class TestManifestBuild:
    def test_manifest_build__writes_manifest_and_keeps_note(self, small_utd: Path, tmp_path: Path) -> None:
        out = tmp_path / "out" / "utd-mhad.json"
        assert main(["-q", "manifest", "build", "utd-mhad", str(small_utd), "--out", str(out),
                     "--note", "from a test"]) == 0
        first = read_manifest(out)
        assert first.note == "from a test" and first.folder == "UTD-MHAD" and len(first.entries) == 6
        assert main(["-q", "manifest", "build", "utd-mhad", str(small_utd), "--out", str(out)]) == 0
        assert read_manifest(out) == first


class TestDescribe:
    def test_describe__synthetic(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert main(["-q", "describe", "synthetic", "--seed", "1", "--no-cache"]) == 0
        text = capsys.readouterr().out
        assert "360 samples, 6 subjects, 5 classes" in text and "label splits (fraction, seed 1)" in text

    @pytest.mark.realdata
    def test_describe__utd_mhad(self, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
        monkeypatch.setenv("FEDHAR_CACHE_DIR", str(tmp_path / "cache"))
        out = tmp_path / "describe.json"
        assert main(["-q", "describe", "utd-mhad", "--data-dir", str(data_dir), "--json", str(out)]) == 0
        text = capsys.readouterr().out
        assert "861 samples, 8 subjects, 27 classes" in text and "skeleton (40, 20, 3)" in text
        d = json.loads(out.read_text())
        assert d["samples"] == 861 and len(d["classes"]) == 27
        assert sum(map(sum, d["samples_per_subject_class"])) == 861
        assert d["protocol"]["test_subjects"] == [7, 8]
        assert [s["labeled"] for s in d["splits"]] == [27, 54, 108, 162, 216]
        assert all(s["labeled"] + s["unlabeled"] + s["test"] == 861 for s in d["splits"])

    @pytest.mark.realdata
    def test_describe__unknown_protocol__exit_2(self, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["-q", "describe", "utd-mhad", "--data-dir", str(data_dir), "--protocol", "nope", "--no-cache"])
        assert code == 2 and "nope" in _one_line_error(capsys.readouterr().err)

    def test_describe__missing_dataset__suggests_download(self, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        code = main(["-q", "describe", "usc-had", "--data-dir", str(tmp_path), "--no-cache"])
        assert code == 1 and "fedhar-data download usc-had" in _one_line_error(capsys.readouterr().err)
