"""Fixtures for the baseline tests."""

from __future__ import annotations

import pytest
from baseline_helpers import USC_CLASSES, USC_SPECS, UTD_CLASSES, UTD_SPECS

from fedhar.data.dataset import ModalitySpec


@pytest.fixture(params=["utd", "usc"])
def dataset_case(request: pytest.FixtureRequest) -> tuple[tuple[ModalitySpec, ...], int]:
    """(specs, num_classes) of UTD-MHAD and of USC-HAD."""
    return (UTD_SPECS, UTD_CLASSES) if request.param == "utd" else (USC_SPECS, USC_CLASSES)
