"""ServerApp helpers: the federated config composes, and too few nodes fail clearly instead of hanging."""

from __future__ import annotations

from unittest.mock import Mock

import pytest
from flwr.serverapp import Grid

from fedhar.errors import ConfigError
from strategies.server_app import compose_config, wait_for_nodes


def mock_grid(node_ids: list[int]) -> Grid:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = node_ids
    return grid


class TestComposeConfig:
    def test_compose__federated_defaults(self) -> None:
        cfg = compose_config("")
        assert cfg.model.encoder.variant == "compact" and cfg.strategy.weighting == "qom"
        assert cfg.dataset.name == "utd-mhad" and list(cfg.dataset.protocols.cosmo.test_subjects) == [7, 8]
        assert cfg.quality.cluster_penalty == "relative" and cfg.federation.stage2_mode == "federated"

    def test_compose__overrides_apply(self) -> None:
        cfg = compose_config("seed=3 strategy=fedavg budget=tiny federation.stage2_mode=centralized")
        assert (cfg.seed, cfg.strategy.weighting, cfg.stage2.epochs) == (3, "examples", 4)


class TestWaitForNodes:
    def test_wait__enough_nodes_returns(self) -> None:
        wait_for_nodes(mock_grid([1, 2, 3]), 3, timeout_s=0.0)

    def test_wait__too_few_nodes_raises_with_the_fix(self) -> None:
        with pytest.raises(ConfigError, match="num-supernodes=6"):
            wait_for_nodes(mock_grid([1, 2]), 6, timeout_s=0.0, poll_s=0.0)
