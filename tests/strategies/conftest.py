"""Reply factory for strategy tests: hand-made Flower replies from a given node."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedhar import keys

ReplyFactory = Callable[..., Message]


def make_reply(
    node_id: int,
    arrays: Mapping[str, np.ndarray],
    metrics: Mapping[str, int | float],
    message_type: str = "train.pretrain",
) -> Message:
    """A reply from ``node_id`` carrying ``arrays`` and ``metrics`` (records named as clients do)."""
    instruction = Message(content=RecordDict(), dst_node_id=node_id, message_type=message_type)
    content = RecordDict({
        keys.ARRAYS: ArrayRecord({k: Array(np.asarray(v)) for k, v in arrays.items()}),
        keys.METRICS: MetricRecord(dict(metrics)),
    })
    return Message(content=content, reply_to=instruction)


def client_metrics(subject: int, num_examples: int, **qom: float) -> dict[str, int | float]:
    """``num-examples``, ``subject-id`` and ``qom-<modality>`` for each keyword."""
    out: dict[str, int | float] = {keys.NUM_EXAMPLES: num_examples, keys.SUBJECT: subject}
    out.update({f"{keys.QOM_PREFIX}{m}": q for m, q in qom.items()})
    return out


def mock_grid(node_ids: list[int]) -> Grid:
    """A Grid whose only behaviour is listing ``node_ids``."""
    grid = Mock(spec=Grid)
    grid.get_node_ids.return_value = node_ids
    return grid


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages can only be built inside a run: pretend to be task 1 of run 1 on node 0."""
    for name in ("_task_id", "_run_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1 if name != "_node_id" else 0)


@pytest.fixture
def reply() -> Callable[..., Message]:
    """The reply factory :func:`make_reply`."""
    return make_reply


@pytest.fixture
def metrics() -> Callable[..., dict[str, int | float]]:
    """The metrics factory :func:`client_metrics`."""
    return client_metrics


@pytest.fixture
def configure() -> Callable[..., list[Message]]:
    """Call ``strategy.configure_train`` on a mock grid so that it knows the global arrays."""

    def _configure(strategy, reference: Mapping[str, np.ndarray], node_ids: list[int] | None = None) -> list[Message]:
        ids = node_ids or [1, 2, 3]
        record = ArrayRecord({k: Array(np.asarray(v)) for k, v in reference.items()})
        return list(strategy.configure_train(1, record, ConfigRecord(), mock_grid(ids)))

    return _configure
