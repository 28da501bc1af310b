"""A run's differential privacy: the noise source, Flower's RDP accountant, the budget, the record.

One :class:`RunPrivacy` serves every QoMFedAvg round of a run (stage 1 and a federated
stage 2): each aggregation is one Gaussian release (:func:`fedhar.privacy.dp_aggregate`, or
:func:`fedhar.privacy.dp_release_from_mean` of a secure sum of client-clipped updates)
composed into Flower's :class:`RdpAccountant`; epsilon at the configured delta goes to
results.json and the closing summary. Client-level adjacency (add or remove one subject),
no amplification by sampling (every round samples every client by default).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedhar.aggregation import ClientUpdate
from fedhar.privacy import DPConfig, DPResult, dp_aggregate, dp_noise_std, dp_release_from_mean

__all__ = ["RunPrivacy", "calibrate_noise"]

logger = logging.getLogger(__name__)


def _accountant(delta: float, population: int, max_epsilon: float | None = None) -> RdpAccountant:
    """Flower's RDP accountant as fedhar uses it: add or remove one subject, no sampling amplification."""
    return RdpAccountant(PrivacyConfig(target_delta=delta, population_size=population,
                                       neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                                       sampling_method=SamplingMethod.NO_AMPLIFICATION, max_epsilon=max_epsilon))


def calibrate_noise(target_epsilon: float, delta: float, releases: int, population: int,
                    rel_tol: float = 1e-4) -> float:
    """The noise multiplier whose ``releases`` Gaussian releases spend ``target_epsilon`` at ``delta``.

    Bisection (in log space) on Flower's RDP accountant, the one that reports the run's
    epsilon; the result spends at most the target.

    Raises
    ------
    ValueError
        If ``releases`` < 1 or the target is out of reach for multipliers in [1e-4, 1e4].
    """
    if releases < 1:
        raise ValueError(f"releases must be >= 1, got {releases}")

    def epsilon(z: float) -> float:
        accountant = _accountant(delta, population)
        for _ in range(releases):
            accountant.compose(GaussianPrivacyEvent(noise_multiplier=z, sample_size=population,
                                                    population_size=population))
        return float(accountant.get_epsilon(delta))

    low, high = 1e-4, 1e4
    if epsilon(high) > target_epsilon or epsilon(low) < target_epsilon:
        raise ValueError(f"target epsilon {target_epsilon:g} at delta {delta:g} over {releases} releases is out of "
                         "reach for noise multipliers in [1e-4, 1e4]")
    while high / low > 1 + rel_tol:
        mid = math.sqrt(low * high)
        low, high = (mid, high) if epsilon(mid) > target_epsilon else (low, mid)
    return high


class RunPrivacy:
    """Noise, accounting and budget of one run's DP aggregations.

    Parameters
    ----------
    cfg
        ``privacy.dp``.
    population
        Number of clients (training subjects) of the federation.
    num_sampled
        Clients sampled per round (sets the default ``W_min``).
    planned_releases
        The run's planned aggregations (needed when ``cfg.target_epsilon`` sets the noise).
    """

    def __init__(self, cfg: DPConfig, population: int, num_sampled: int, planned_releases: int | None = None) -> None:
        if cfg.target_epsilon is not None:
            if planned_releases is None:
                raise ValueError("privacy.dp.target_epsilon needs the run's planned number of releases")
            z = calibrate_noise(cfg.target_epsilon, cfg.delta, planned_releases, population)
            logger.info("privacy.dp: noise multiplier %.4g spends epsilon %g at delta %g over %d releases", z,
                        cfg.target_epsilon, cfg.delta, planned_releases)
            cfg = replace(cfg, noise_multiplier=z)
        self.planned_releases = planned_releases
        self.cfg = cfg
        self.population = population
        self.min_total_weight = cfg.floor(num_sampled)
        self.noise_std = dp_noise_std(cfg, self.min_total_weight)
        self.accountant = _accountant(cfg.delta, population, cfg.max_epsilon)
        self._rng = np.random.default_rng(cfg.noise_seed)
        #: One entry per release: stage, round, clients aggregated, epsilon so far.
        self.releases: list[dict[str, Any]] = []
        #: ``stage round`` -> why it was not run (the budget).
        self.refused: dict[str, str] = {}
        if cfg.noise_seed is not None:
            logger.warning("privacy.dp.noise_seed is set: the noise is reproducible, and no protection against "
                           "whoever knows the seed")

    def _event(self, num_clients: int) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(noise_multiplier=self.cfg.noise_multiplier, sample_size=max(1, num_clients),
                                    population_size=self.population)

    def allows(self, stage: str, server_round: int, num_clients: int) -> bool:
        """Whether a release of ``num_clients`` fits the budget (``on_budget: warn`` always allows, with a warning)."""
        if self.cfg.max_epsilon is None or not self.accountant.would_exceed(self._event(num_clients)):
            return True
        reason = (f"one more release would exceed privacy.dp.max_epsilon={self.cfg.max_epsilon:g} (spent "
                  f"{self.epsilon:.3g} at delta {self.cfg.delta:g})")
        if self.cfg.on_budget == "warn":
            logger.warning("%s round %d: %s; running it (on_budget: warn)", stage, server_round, reason)
            return True
        self.refused[f"{stage} {server_round}"] = reason
        logger.warning("%s round %d not run: %s", stage, server_round, reason)
        return False

    def aggregate(self, stage: str, server_round: int, updates: Sequence[ClientUpdate],
                  reference: Mapping[str, np.ndarray], weighting: str, qom_range: tuple[float, float]) -> DPResult:
        """One noised aggregation, composed into the accountant."""
        result = dp_aggregate(updates, reference, self.cfg, self.min_total_weight, self._rng, weighting, qom_range)
        self._compose(stage, server_round, len(updates), {
            "clipped": len(result.clipped),
            "median_update_norm": float(np.median(list(result.update_norms.values())))})
        return result

    def release_sum(self, stage: str, server_round: int, mean: Mapping[str, np.ndarray],
                    weight_sums: Mapping[str, float], reference: Mapping[str, np.ndarray],
                    num_clients: int) -> dict[str, np.ndarray]:
        """The noised release of a secure sum of ``num_clients`` client-clipped updates, composed into the accountant."""
        arrays, _ = dp_release_from_mean(mean, weight_sums, reference, self.cfg, self.min_total_weight, self._rng)
        self._compose(stage, server_round, num_clients, {"clipping": "client-side (secure aggregation)"})
        return arrays

    def _compose(self, stage: str, server_round: int, num_clients: int, extra: Mapping[str, Any]) -> None:
        self.accountant.compose(self._event(num_clients))
        self.releases.append({"stage": stage, "round": server_round, "clients": num_clients, **extra,
                              "epsilon": self.epsilon})
        logger.info("%s round %d: DP release of %d clients (%s), clip norm %g, noise std %.3g; epsilon %.3g at "
                    "delta %g", stage, server_round, num_clients, ", ".join(f"{k} {v}" for k, v in extra.items()),
                    self.cfg.clip_norm, self.noise_std, self.epsilon, self.cfg.delta)

    def restore(self, releases: Sequence[Mapping[str, Any]]) -> None:
        """Compose the releases of a resumed run's completed rounds (as :attr:`releases` recorded them)."""
        for release in releases:
            self.accountant.compose(self._event(int(release["clients"])))
            self.releases.append(dict(release))

    @property
    def epsilon(self) -> float:
        """Epsilon spent so far at ``cfg.delta`` (0 before the first release)."""
        return self.accountant.get_epsilon(self.cfg.delta) if self.accountant.num_releases else 0.0

    def summary(self) -> dict[str, Any]:
        """For results.json: the guarantee, the mechanism's parameters, every release and refusal."""
        return {"epsilon": self.epsilon, "delta": self.cfg.delta, "num_releases": len(self.releases),
                "noise_multiplier": self.cfg.noise_multiplier, "clip_norm": self.cfg.clip_norm,
                "min_total_weight": self.min_total_weight, "noise_std": self.noise_std,
                "population": self.population, "adjacency": "add or remove one client (subject)",
                "sampling": "no amplification", "max_epsilon": self.cfg.max_epsilon,
                "releases": self.releases, "refused": self.refused,
                "reproducible_noise": self.cfg.noise_seed is not None,
                "target_epsilon": self.cfg.target_epsilon, "planned_releases": self.planned_releases}
