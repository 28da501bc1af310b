"""Seeding: one call makes a run a function of its seed (torch, numpy, random)."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["derive_seed", "seed_everything"]

_SEED_MODULUS = 2**31 - 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, numpy's global generator and torch (all devices).

    Parameters
    ----------
    seed
        The run's seed.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def derive_seed(seed: int, *tags: str | int) -> int:
    """A child seed for a named sub-task (``derive_seed(0, "stage2")``), stable across processes.

    Parameters
    ----------
    seed
        The parent seed.
    *tags
        Names of the sub-task; different tags give independent streams.

    Returns
    -------
    int
        A non-negative seed below ``2**31 - 1``.
    """
    entropy = [int(seed)] + [int.from_bytes(str(t).encode(), "little") % _SEED_MODULUS for t in tags]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) % _SEED_MODULUS
