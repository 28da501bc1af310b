"""Shared fixtures: the real datasets and the CLI / module dependencies, whose absence fails CI; the realdata marker."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def _data_dir() -> Path:
    env = os.environ.get("FEDHAR_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def _require_real_data() -> bool:
    return os.environ.get("FEDHAR_REQUIRE_REAL_DATA", "") not in ("", "0") or os.environ.get("CI") == "true"


def skip_or_fail(msg: str) -> NoReturn:
    """Skip a test whose data or dependency is missing; in CI (see :func:`data_dir`) fail it instead.

    For what the CI install provides (the real datasets, the ``ray`` CLI, onnxruntime): a skip
    there would hide a broken install behind a green run.
    """
    if _require_real_data():
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that reads the real datasets (uses ``data_dir``, maybe via another fixture) ``realdata``."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()) and item.get_closest_marker("realdata") is None:
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding UTD-MHAD/ and USC-HAD/ as published.

    In CI (``CI=true`` or ``FEDHAR_REQUIRE_REAL_DATA=1``) a missing dataset fails the
    run: real-data tests are never silently skipped there.
    """
    path = _data_dir()
    ok = (path / "UTD-MHAD" / "Inertial").is_dir() and (path / "USC-HAD" / "Subject1").is_dir()
    if not ok:
        skip_or_fail(f"real datasets not found under {path} (set FEDHAR_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def ray_cli() -> str:
    """Path of the ``ray`` CLI (installed with ``ray``); its absence fails in CI."""
    path = shutil.which("ray")
    if path is None:
        skip_or_fail("the ray CLI is not on PATH (pip install ray)")
    return path


@pytest.fixture(scope="session")
def nginx_cli() -> str:
    """Path of ``nginx`` (the device gateway, simulations/deploy/gateway.py; .ci/run installs it); absent: fails in CI."""
    from simulations.deploy.gateway import find_nginx

    path = find_nginx()
    if path is None:
        skip_or_fail("nginx is not installed (apt-get install nginx-light)")
    return path


@pytest.fixture(scope="session")
def onnxruntime_module() -> ModuleType:
    """The onnxruntime module; missing, ONNX files would silently run on onnx.reference: fails in CI."""
    try:
        import onnxruntime
    except ImportError as err:
        skip_or_fail(f"onnxruntime is not installed ({err}); pip install -e '.[test]'")
    return onnxruntime


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed-array cache shared by the session's tests (starts empty)."""
    return tmp_path_factory.mktemp("fedhar-cache")


# Stray files of another subject (2) that a device may hold: too few to be a complete subject.
UTD_STRAY = ("a1_s2_t1", "a2_s2_t1")
USC_STRAY = ("a1t1.mat", "a2t1.mat")


@pytest.fixture(scope="session")
def utd_device(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device's data-path: subject 1's UTD-MHAD files plus two stray trials of subject 2 (copied at test time)."""
    src, dst = data_dir / "UTD-MHAD", tmp_path_factory.mktemp("utd-device")
    for sub, suffix in (("Inertial", "inertial"), ("Skeleton", "skeleton")):
        (dst / sub).mkdir()
        for path in src.glob(f"{sub}/a*_s1_t*_{suffix}.mat"):
            shutil.copy2(path, dst / sub / path.name)
        for trial in UTD_STRAY:
            shutil.copy2(src / sub / f"{trial}_{suffix}.mat", dst / sub)
    return dst


@pytest.fixture(scope="session")
def usc_device(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A device's data-path: USC-HAD's Subject1/ plus two stray trials in Subject2/ (copied at test time)."""
    src, dst = data_dir / "USC-HAD", tmp_path_factory.mktemp("usc-device")
    shutil.copytree(src / "Subject1", dst / "Subject1")
    (dst / "Subject2").mkdir()
    for name in USC_STRAY:
        shutil.copy2(src / "Subject2" / name, dst / "Subject2" / name)
    return dst
