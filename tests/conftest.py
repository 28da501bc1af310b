"""Shared fixtures: where the real datasets are, and whether their absence is fatal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def _data_dir() -> Path:
    env = os.environ.get("FEDHAR_DATA_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "datasets"


def _require_real_data() -> bool:
    return os.environ.get("FEDHAR_REQUIRE_REAL_DATA", "") not in ("", "0") or os.environ.get("CI") == "true"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding UTD-MHAD/ and USC-HAD/ as published.

    In CI (``CI=true`` or ``FEDHAR_REQUIRE_REAL_DATA=1``) a missing dataset fails the
    run: real-data tests are never silently skipped there.
    """
    path = _data_dir()
    ok = (path / "UTD-MHAD" / "Inertial").is_dir() and (path / "USC-HAD" / "Subject1").is_dir()
    if not ok:
        msg = f"real datasets not found under {path} (set FEDHAR_DATA_DIR)"
        if _require_real_data():
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A preprocessed-array cache shared by the session's tests (starts empty)."""
    return tmp_path_factory.mktemp("fedhar-cache")
