"""Strategy test helpers: hand-made Flower replies from a given node, and a grid that delivers to client mods in process."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from unittest.mock import Mock

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from clients.secure_aggregation import secure_aggregation_mod
from fedhar import keys

ReplyFactory = Callable[..., Message]
Handler = Callable[[Message, Context], Message]


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


class LoopbackGrid(Grid):
    """Delivers each message to its node's mod + handler; a node in ``silent`` never answers ``silent_stage``."""

    def __init__(self, handlers: dict[int, Handler], silent: Iterable[int] = (), silent_stage: str = "") -> None:
        self.handlers = handlers
        self.contexts = {n: Context(run_id=1, node_id=n, node_config={}, state=RecordDict(), run_config={})
                         for n in handlers}
        self.silent, self.silent_stage = set(silent), silent_stage
        self.received: list[Message] = []

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            msg.metadata.__dict__["_src_node_id"] = 0
            stage = msg.content.config_records[RECORD_KEY_CONFIGS].get(Key.STAGE) \
                if RECORD_KEY_CONFIGS in msg.content.config_records else None
            if node in self.silent and stage == self.silent_stage:
                continue
            try:
                reply = self.deliver(msg, node)
            except Exception as err:  # noqa: BLE001 (the ClientApp runtime turns it into an error reply)
                reply = Message(Error(code=0, reason=str(err)), reply_to=msg)
            out.append(reply)
        self.received.extend(out)
        return out

    def deliver(self, msg: Message, node: int) -> Message:
        """The node's reply: its secure-aggregation mod around its handler."""
        return secure_aggregation_mod(msg, self.contexts[node], self.handlers[node])

    # Unused by the strategy in these tests.
    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def get_node_ids(self) -> Iterable[int]:
        return list(self.handlers)

    def push_messages(self, messages):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def pull_messages(self, message_ids):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def set_run(self, run):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    @property
    def run(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError
