"""ServerApp helpers: the federated config composes, and too few nodes fail clearly instead of hanging."""

from __future__ import annotations

from unittest.mock import Mock

import pytest
from flwr.serverapp import Grid

from fedhar.errors import ConfigError
from strategies.run_config import compose_config, hydra_overrides
from strategies.server_app import wait_for_nodes


def mock_grid(node_ids: list[int]) -> Grid:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = node_ids
    return grid


class TestComposeConfig:
    def test_compose__federated_defaults(self) -> None:
        cfg = compose_config("")
        assert cfg.model.encoder.variant == "compact" and cfg.strategy.weighting == "qom"
        assert cfg.dataset.name == "utd-mhad" and list(cfg.dataset.protocols.cosmo.test_subjects) == [7, 8]
        assert cfg.quality.cluster_penalty == "relative" and cfg.federation.stage2_mode == "lda"

    def test_compose__overrides_apply(self) -> None:
        cfg = compose_config("seed=3 strategy=fedavg budget=tiny federation.stage2_mode=centralized")
        assert (cfg.seed, cfg.strategy.weighting, cfg.stage2.epochs) == (3, "examples", 4)


class TestWaitForNodes:
    def test_wait__enough_nodes_returns(self) -> None:
        wait_for_nodes(mock_grid([1, 2, 3]), 3, timeout_s=0.0)

    def test_wait__too_few_nodes_raises_with_the_fix(self) -> None:
        with pytest.raises(ConfigError, match="num-supernodes=6"):
            wait_for_nodes(mock_grid([1, 2]), 6, timeout_s=0.0, poll_s=0.0)


class TestRunConfigKeys:
    def test_typed_keys__reach_the_composed_config(self) -> None:
        overrides = hydra_overrides({"label-rate": 10, "seed": 1, "dataset": "usc-had", "stage1-rounds": 3,
                                     "stage1-local-epochs": 2, "stage2-mode": "ccvr", "strategy": "fedavg",
                                     "stage2-rounds": 5, "hydra-overrides": "federation.eval_every=3"})
        cfg = compose_config(" ".join(overrides))
        assert (cfg.label_rate, cfg.seed, cfg.dataset.name, cfg.strategy.weighting) == (10, 1, "usc-had", "examples")
        fed = cfg.federation
        assert (fed.stage1_rounds, fed.stage1_local_epochs, fed.stage2_rounds, fed.stage2_mode, fed.eval_every) == (
            3, 2, 5, "ccvr", 3)

    def test_unset_keys__keep_the_yaml_defaults(self) -> None:
        assert hydra_overrides({"seed": "", "label-rate": "", "hydra-overrides": "seed=4"}) == ["seed=4"]

    @pytest.mark.parametrize(("config", "words"), [
        ({"seed": -1}, "seed=-1: expected an integer >= 0"),
        ({"label-rate": "ten"}, "label-rate='ten': expected a number > 0"),
        ({"stage1-rounds": 2.5}, "expected an integer >= 1"),
        ({"dataset": "../etc"}, "expected a dataset config name"),
        ({"seed": 1, "hydra-overrides": "seed=2"}, "seed is set twice"),
    ])
    def test_bad_value_or_twice__raises_naming_the_key(self, config: dict, words: str) -> None:
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
            hydra_overrides(config)
