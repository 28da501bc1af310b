"""FederationGrid: only the normalisation round's members are sampled; each gets its own records only."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pytest
import yaml
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedhar import keys
from fedhar.data.config import DatasetConfig
from fedhar.data.dataset import HARDataset
from fedhar.data.federation import ClientFederation, merge_summaries, summarize_subject
from fedhar.data.loading import load_dataset
from fedhar.errors import FederationError
from strategies.federation_grid import FederationGrid

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "dataset"


def _wrapped(node_ids: list[int]) -> Mock:
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = node_ids
    grid.send_and_receive.side_effect = lambda messages, timeout=None: list(messages)
    return grid


def test_get_node_ids__members_only() -> None:
    grid = FederationGrid(_wrapped([11, 12, 13, 99]), {11: {}, 12: {}, 13: {}, 14: {}})
    assert list(grid.get_node_ids()) == [11, 12, 13]  # 99 was never merged; 14 is not connected
    assert grid.members == (11, 12, 13, 14)


def test_send__each_message_gets_its_own_entries_on_a_copy_of_the_shared_record() -> None:
    inner = _wrapped([1, 2])
    grid = FederationGrid(inner, {1: {"mine": "one"}, 2: {"mine": "two"}})
    shared = ConfigRecord({"stage": "pretrain"})
    content = RecordDict({keys.CONFIG: shared})  # one RecordDict for every node, as Flower's FedAvg sends
    messages = [Message(content, dst_node_id=n, message_type="train") for n in (1, 2)]
    sent = list(grid.send_and_receive(messages, timeout=1.0))
    assert [dict(m.content[keys.CONFIG]) for m in sent] == [{"stage": "pretrain", "mine": "one"},
                                                            {"stage": "pretrain", "mine": "two"}]
    assert dict(shared) == {"stage": "pretrain"} and dict(content[keys.CONFIG]) == dict(shared)  # untouched
    assert inner.send_and_receive.call_args.kwargs == {"timeout": 1.0}
    without = Message(RecordDict(), dst_node_id=2, message_type="query")
    assert dict(next(iter(grid.send_and_receive([without]))).content[keys.CONFIG]) == {"mine": "two"}


def test_send__to_a_non_member__raises() -> None:
    grid = FederationGrid(_wrapped([1, 2]), {1: {}})
    with pytest.raises(FederationError, match="node 2 is not a member"):
        grid.send_and_receive([Message(RecordDict(), dst_node_id=2, message_type="train")])


@pytest.mark.usefixtures("task_identity")
def test_what_each_client_receives__merged_stats_and_its_own_label_share_only(synthetic_config: tuple) -> None:
    """The server's message to subject s holds s's class counts and labeled positions, nobody else's."""
    cfg, data = synthetic_config
    subjects = (1, 2, 3, 4, 5)
    merged = merge_summaries(summarize_subject(data, s, data.modalities) for s in subjects)
    grid = FederationGrid(_wrapped([10 + s for s in subjects]),
                          {10 + s: merged.for_subject(s, cfg, 20, 0).to_config() for s in subjects})
    shared = ConfigRecord({keys.SEED: 0})
    sent = grid.send_and_receive([Message(RecordDict({keys.CONFIG: shared}), dst_node_id=10 + s, message_type="train")
                                  for s in subjects])
    for msg in sent:
        subject = msg.metadata.dst_node_id - 10
        config = msg.content[keys.CONFIG]
        assert set(config) == {keys.SEED, keys.NORM_STATS, keys.LABEL_SHARE}
        share = json.loads(str(config[keys.LABEL_SHARE]))
        assert share["subject"] == subject
        assert share["class_counts"] == np.bincount(data.labels[data.subjects == subject],
                                                    minlength=data.info.num_classes).tolist()
        view = ClientFederation.from_config(config)
        assert view is not None and view.stats.to_dict() == merged.stats.to_dict()


@pytest.fixture
def synthetic_config() -> tuple[DatasetConfig, HARDataset]:
    cfg = DatasetConfig.from_mapping(yaml.safe_load((CONFIG_DIR / "synthetic.yaml").read_text()))
    return cfg, load_dataset(cfg)
