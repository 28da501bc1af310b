"""Client-level differential privacy for quality-weighted, per-modality aggregation.

Flower's DP wrappers assume FedAvg with one weight per client; QoMFedAvg weights each
modality ``m`` of client ``k`` separately. This module is the bounded-sensitivity version
of that aggregation (docs/privacy.md has the derivation):

- every client's update is clipped per parameter group (each modality's encoder and head,
  and the shared parameters): group ``g`` to ``C / sqrt(G)``, so the whole update has
  L2 norm at most ``C``;
- client ``k``'s weight in group ``g`` is ``w_kg`` in ``[0, 1]``, computed from its own
  reply only: its quality score clipped to ``[q_min, 1]`` for a modality group under
  ``qom`` weighting, 1 otherwise (example counts are left out: no public bound caps them);
- each group is averaged with a floored denominator,
  ``sum_k w_kg * delta_kg / max(W_min, sum_k w_kg)`` (the clipped estimator ``f_c`` of
  McMahan et al., ICLR 2018): adding or removing one client moves it by at most
  ``2 * C_g / W_min`` per group, ``2 * C / W_min`` in all;
- Gaussian noise of standard deviation ``sigma = z * 2 * C / W_min`` (``z``: the noise
  multiplier) is added to every float coordinate. Running variances are then clamped to
  stay positive and integer counters keep the global value (post-processing).

The privacy accounting itself (epsilon over the rounds) uses Flower's RDP accountant in
the strategy layer; this module holds the mechanism, which needs no Flower.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedhar.aggregation import SHARED, ClientUpdate, group_keys
from fedhar.config_mapping import build
from fedhar.errors import ConfigError

__all__ = ["DPConfig", "DPResult", "clip_update", "dp_aggregate", "dp_noise_std", "dp_release_from_mean", "dp_weights"]

BUDGET_POLICIES = ("stop", "warn")
_RUNNING_VAR = "running_var"
_MIN_RUNNING_VAR = 1e-3


@dataclass(frozen=True)
class DPConfig:
    """Client-level DP settings (config group ``privacy.dp``).

    Parameters
    ----------
    enabled
        Off by default.
    noise_multiplier
        ``z``: noise standard deviation in units of the aggregate's sensitivity.
    clip_norm
        ``C``: the L2 bound of one client's whole update (all groups together).
    min_total_weight
        ``W_min``, the floor of each group's weight sum; ``None``: half the number of
        clients sampled per round.
    delta
        The delta epsilon is reported at.
    max_epsilon
        Budget: ``None`` for none.
    on_budget
        ``stop``: no round is run that would exceed the budget; ``warn``: run it, warn.
    noise_seed
        ``None`` (default): noise from the operating system's entropy. An integer makes the
        noise reproducible, and void as protection against whoever knows it.
    target_epsilon
        ``None`` (default): use ``noise_multiplier``. A number: the noise multiplier is
        calibrated so that the run's planned releases spend exactly this epsilon at ``delta``
        (it overrides ``noise_multiplier``).
    """

    enabled: bool = False
    noise_multiplier: float = 1.0
    clip_norm: float = 1.0
    min_total_weight: float | None = None
    delta: float = 1e-5
    max_epsilon: float | None = None
    on_budget: str = "stop"
    noise_seed: int | None = None
    target_epsilon: float | None = None

    def __post_init__(self) -> None:
        for name in ("noise_multiplier", "clip_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}", f"privacy.dp.{name}")
        if self.min_total_weight is not None and not self.min_total_weight > 0:
            raise ConfigError(f"min_total_weight must be null or > 0, got {self.min_total_weight!r}",
                              "privacy.dp.min_total_weight")
        if not 0.0 < self.delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1), got {self.delta!r}", "privacy.dp.delta")
        if self.target_epsilon is not None and not (math.isfinite(self.target_epsilon) and self.target_epsilon > 0):
            raise ConfigError(f"target_epsilon must be null or a finite number > 0, got {self.target_epsilon!r}",
                              "privacy.dp.target_epsilon")
        if self.max_epsilon is not None and not self.max_epsilon > 0:
            raise ConfigError(f"max_epsilon must be null or > 0, got {self.max_epsilon!r}", "privacy.dp.max_epsilon")
        if self.on_budget not in BUDGET_POLICIES:
            raise ConfigError(f"on_budget must be one of {BUDGET_POLICIES}, got {self.on_budget!r}",
                              "privacy.dp.on_budget")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> DPConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "privacy.dp")

    def floor(self, num_sampled: int) -> float:
        """``W_min`` for rounds that sample ``num_sampled`` clients."""
        return float(self.min_total_weight) if self.min_total_weight is not None else 0.5 * num_sampled


def dp_noise_std(cfg: DPConfig, min_total_weight: float) -> float:
    """``sigma = z * 2 * C / W_min``: the noise of each coordinate of the aggregate."""
    return cfg.noise_multiplier * 2.0 * cfg.clip_norm / min_total_weight


def dp_weights(update: ClientUpdate, group: str, weighting: str, qom_range: tuple[float, float]) -> float:
    """Client ``update``'s weight in ``group``: its clipped quality (``qom`` weighting, modality group) or 1."""
    if group == SHARED or weighting != "qom":
        return 1.0
    low, high = qom_range
    return float(min(max(float(update.qom[group]), low), high, 1.0))


@dataclass(frozen=True)
class DPResult:
    """The noised aggregate and what the mechanism did.

    Parameters
    ----------
    arrays
        New global arrays (same keys and dtypes as the reference).
    noise_std
        ``sigma`` used on every float coordinate.
    weights
        Client id -> group -> its weight divided by the group's denominator.
    clipped
        Client ids whose update was scaled down in some group.
    update_norms
        Client id -> the L2 norm of its whole update before clipping (to choose ``clip_norm``;
        released only to the server's record).
    """

    arrays: dict[str, np.ndarray]
    noise_std: float
    weights: dict[str, dict[str, float]]
    clipped: tuple[str, ...]
    update_norms: dict[str, float]


def _float_names(reference: Mapping[str, np.ndarray], names: Sequence[str]) -> list[str]:
    return [n for n in names if np.issubdtype(np.asarray(reference[n]).dtype, np.floating)]


def clip_update(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], clip_norm: float
) -> tuple[dict[str, np.ndarray], float, bool]:
    """One client's update clipped per group: group ``g`` of ``arrays - reference`` to ``C / sqrt(G)``.

    ``G`` counts the groups of ``reference`` (held by this client or not), so the whole
    update ends with L2 norm at most ``C``. The server runs it on each reply in plain DP;
    under secure aggregation each client runs it on its own update before weighting it
    (client-side clipping, the server never sees the update).

    Returns
    -------
    tuple
        The clipped arrays (the keys of ``arrays``; integer buffers unchanged), the L2 norm
        of the whole update before clipping, and whether any group was scaled down.
    """
    groups = group_keys(reference)
    group_clip = clip_norm / math.sqrt(len(groups))
    out = {k: np.array(v, copy=True) for k, v in arrays.items()}
    squares, clipped = 0.0, False
    for names in groups.values():
        held = [n for n in _float_names(reference, names) if n in arrays]
        deltas = {n: np.asarray(arrays[n], np.float64) - np.asarray(reference[n], np.float64) for n in held}
        norm = math.sqrt(sum(float(np.sum(d * d)) for d in deltas.values()))
        squares += norm**2
        if norm <= group_clip:
            continue
        clipped = True
        for n, d in deltas.items():
            ref = np.asarray(reference[n])
            out[n] = (ref.astype(np.float64) + d * (group_clip / norm)).astype(np.asarray(arrays[n]).dtype)
    return out, math.sqrt(squares), clipped


def _release(reference: Mapping[str, np.ndarray], means: Mapping[str, np.ndarray], sigma: float,
             rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``reference + means + N(0, sigma^2)`` on every float coordinate, then the post-processing.

    ``means`` maps every float key to its group's floored mean delta. Every group gets
    noise, held this round or not: whether a group was held is not released noise-free.
    """
    out = {k: np.array(v, copy=True) for k, v in reference.items()}
    for n, mean in means.items():
        ref = np.asarray(reference[n])
        value = ref.astype(np.float64) + mean + rng.normal(0.0, sigma, size=ref.shape)
        if n.endswith(_RUNNING_VAR):
            value = np.maximum(value, _MIN_RUNNING_VAR)
        out[n] = value.astype(ref.dtype)
    return out


def dp_aggregate(
    updates: Sequence[ClientUpdate],
    reference: Mapping[str, np.ndarray],
    cfg: DPConfig,
    min_total_weight: float,
    rng: np.random.Generator,
    weighting: str = "qom",
    qom_range: tuple[float, float] = (0.0, 1.0),
) -> DPResult:
    """Clip, weight, average with a floored denominator and add Gaussian noise (see the module docstring).

    Raises
    ------
    ValueError
        If ``updates`` is empty or ``min_total_weight`` is not positive.
    """
    if not updates:
        raise ValueError("no client update to aggregate")
    if not min_total_weight > 0:
        raise ValueError(f"min_total_weight must be > 0, got {min_total_weight}")
    sigma = dp_noise_std(cfg, min_total_weight)
    weights: dict[str, dict[str, float]] = {u.client_id: {} for u in updates}
    clipped: set[str] = set()
    norms: dict[str, float] = {}
    bounded: dict[str, dict[str, np.ndarray]] = {}
    for u in updates:
        bounded[u.client_id], norms[u.client_id], was_clipped = clip_update(u.arrays, reference, cfg.clip_norm)
        if was_clipped:
            clipped.add(u.client_id)
    means: dict[str, np.ndarray] = {}
    for group, names in group_keys(reference).items():
        floats = _float_names(reference, names)
        holders = [u for u in updates if names[0] in u.arrays]
        totals = {n: np.zeros(np.asarray(reference[n]).shape) for n in floats}
        weight_sum = 0.0
        for u in holders:
            w = dp_weights(u, group, weighting, qom_range)
            for n in floats:
                totals[n] += w * (np.asarray(bounded[u.client_id][n], np.float64) - np.asarray(reference[n], np.float64))
            weight_sum += w
            weights[u.client_id][group] = w
        denominator = max(min_total_weight, weight_sum)
        for u in holders:
            weights[u.client_id][group] /= denominator
        means.update({n: t / denominator for n, t in totals.items()})
    return DPResult(_release(reference, means, sigma, rng), sigma, weights, tuple(sorted(clipped)), norms)


def dp_release_from_mean(
    mean: Mapping[str, np.ndarray],
    weight_sums: Mapping[str, float],
    reference: Mapping[str, np.ndarray],
    cfg: DPConfig,
    min_total_weight: float,
    rng: np.random.Generator,
) -> tuple[dict[str, np.ndarray], float]:
    """The DP release of a secure sum: its weighted mean with the floored denominator, plus noise.

    Under secure aggregation the clients clip their own updates (:func:`clip_update`) and
    weight them by ``w_kg`` in [0, 1]; the server learns only ``A_g = sum_k w_kg d_kg`` and
    ``B_g = sum_k w_kg`` (``mean = reference + A_g / B_g``, ``weight_sums = B_g``). The release
    ``A_g / max(W_min, B_g) + N(0, sigma^2)`` is the mechanism of :func:`dp_aggregate` with
    the same sensitivity ``2 C / W_min`` and ``sigma = z * 2 C / W_min``.

    Returns
    -------
    tuple
        The released arrays and ``sigma``.

    Raises
    ------
    ValueError
        If ``min_total_weight`` is not positive or a group of ``reference`` has no weight sum.
    """
    if not min_total_weight > 0:
        raise ValueError(f"min_total_weight must be > 0, got {min_total_weight}")
    means: dict[str, np.ndarray] = {}
    for group, names in group_keys(reference).items():
        if group not in weight_sums:
            raise ValueError(f"no weight sum for group {group!r}")
        shrink = max(float(weight_sums[group]), 0.0) / max(min_total_weight, float(weight_sums[group]))
        for n in _float_names(reference, names):
            delta = np.asarray(mean[n], np.float64) - np.asarray(reference[n], np.float64)
            means[n] = delta * shrink
    sigma = dp_noise_std(cfg, min_total_weight)
    return _release(reference, means, sigma, rng), sigma
