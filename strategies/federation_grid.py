"""The run's grid, restricted to the federation's members, each message carrying that member's own records.

After the normalisation round the server knows which node speaks for which subject. From
then on every round (stage 1, stage 2, the class-statistics and personalisation rounds)
talks through a :class:`FederationGrid`:

- ``get_node_ids`` lists only the nodes merged in the normalisation round, so a node that
  was rejected there (or joined later) is never sampled;
- every outgoing message's ``config`` record gets the entries meant for its destination
  alone (its :class:`fedhar.data.federation.ClientFederation`: the merged statistics and
  its own share of the label split), so what one client receives never holds another
  subject's label census (docs/privacy.md).

Strategies stay unaware of it: it is a :class:`flwr.serverapp.Grid` like the one it wraps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedhar import keys
from fedhar.errors import FederationError

__all__ = ["FederationGrid"]


class FederationGrid(Grid):
    """``grid`` limited to the nodes of ``node_config``; each message gets its node's config entries.

    Parameters
    ----------
    grid
        The run's grid.
    node_config
        Node id -> ConfigRecord entries only that node receives (merged into the message's
        ``config`` record; a message without one gets one).
    """

    def __init__(self, grid: Grid, node_config: Mapping[int, Mapping[str, str]]) -> None:
        self._grid = grid
        self._node_config = {int(n): dict(c) for n, c in node_config.items()}

    @property
    def members(self) -> tuple[int, ...]:
        """The member node ids, ascending."""
        return tuple(sorted(self._node_config))

    def set_run(self, run: Run) -> None:
        """Delegate to the wrapped grid."""
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        """The wrapped grid's run."""
        return self._grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        """Delegate to the wrapped grid (the node's entries are added when the message is sent)."""
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        """The connected members (nodes merged in the normalisation round)."""
        return [n for n in self._grid.get_node_ids() if n in self._node_config]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Add each message's node entries, then push."""
        return self._grid.push_messages(self._addressed(messages))

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegate to the wrapped grid."""
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Add each message's node entries, then send and wait as the wrapped grid does."""
        return self._grid.send_and_receive(self._addressed(messages), timeout=timeout)

    def _addressed(self, messages: Iterable[Message]) -> list[Message]:
        out = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            if node not in self._node_config:
                raise FederationError(f"node {node} is not a member of the federation (members: "
                                      f"{list(self.members)}); it was not merged in the normalisation round",
                                      "federation")
            # A new RecordDict and ConfigRecord per message: FedAvg sends one RecordDict to every node.
            content = RecordDict({name: record for name, record in msg.content.items() if name != keys.CONFIG})
            config = msg.content.config_records.get(keys.CONFIG, ConfigRecord())
            content[keys.CONFIG] = ConfigRecord({**dict(config), **self._node_config[node]})
            msg.content = content
            out.append(msg)
        return out
