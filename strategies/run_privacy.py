"""A run's differential privacy: the noise source, Flower's RDP accountant, the budget, the record.

One :class:`RunPrivacy` serves every QoMFedAvg round of a run (stage 1 and a federated
stage 2): each aggregation is one Gaussian release (:func:`fedhar.privacy.dp_aggregate`)
composed into Flower's :class:`RdpAccountant`; epsilon at the configured delta goes to
results.json and the closing summary. Client-level adjacency (add or remove one subject),
no amplification by sampling (every round samples every client by default).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flwr.serverapp import GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

from fedhar.aggregation import ClientUpdate
from fedhar.privacy import DPConfig, DPResult, dp_aggregate, dp_noise_std

__all__ = ["RunPrivacy"]

logger = logging.getLogger(__name__)


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
    """

    def __init__(self, cfg: DPConfig, population: int, num_sampled: int) -> None:
        self.cfg = cfg
        self.population = population
        self.min_total_weight = cfg.floor(num_sampled)
        self.noise_std = dp_noise_std(cfg, self.min_total_weight)
        self.accountant = RdpAccountant(PrivacyConfig(
            target_delta=cfg.delta, population_size=population,
            neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
            sampling_method=SamplingMethod.NO_AMPLIFICATION, max_epsilon=cfg.max_epsilon))
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
        self.accountant.compose(self._event(len(updates)))
        self.releases.append({"stage": stage, "round": server_round, "clients": len(updates),
                              "clipped": len(result.clipped), "epsilon": self.epsilon,
                              "median_update_norm": float(np.median(list(result.update_norms.values())))})
        logger.info("%s round %d: DP aggregate of %d clients (%d clipped to %g; median update norm %.3g), noise std "
                    "%.3g; epsilon %.3g at delta %g", stage, server_round, len(updates), len(result.clipped),
                    self.cfg.clip_norm, self.releases[-1]["median_update_norm"], result.noise_std, self.epsilon,
                    self.cfg.delta)
        return result

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
                "reproducible_noise": self.cfg.noise_seed is not None}
