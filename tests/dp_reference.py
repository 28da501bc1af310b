"""Epsilon of repeated Gaussian releases straight from Google's dp-accounting: the reference for fedhar's accounting."""

from __future__ import annotations

import math

import dp_accounting


def reference_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon at ``delta`` of ``releases`` Gaussian mechanisms of ``noise_multiplier``, no sampling (RDP)."""
    accountant = dp_accounting.rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), releases)
    return float(accountant.get_epsilon(delta))


def classical_rdp_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """The textbook bound: min over orders a of ``T a / (2 z^2) + log(1 / delta) / (a - 1)`` (Mironov 2017)."""
    orders = [1 + x / 10.0 for x in range(1, 1000)] + list(range(101, 4096))
    return min(releases * a / (2 * noise_multiplier**2) + math.log(1 / delta) / (a - 1) for a in orders)
