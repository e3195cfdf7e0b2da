"""An in-process Flower ``Grid`` for unit tests: the ServerApp logic talks to the real ClientApp, no processes.

Flower 1.42 has no public in-process grid (its simulation engine needs Ray). This one
delivers every message to ``client_app(message, context)`` directly and records every
reply, so tests can inspect exactly what a site would send. Building a ``Message``
needs a task identity and a message id, which are Flower internals
(``flwr.supercore.task_identity``, ``Metadata._message_id``): they are touched here
only, and the real-process test (``tests/integration/test_federated_round.py``) stays
the ground truth.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid


def set_task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity  # internal: see the module doc

    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


class InProcessGrid(Grid):
    """Nodes 1..n, node i with ``node_configs[i - 1]``; ``sent`` and ``replies`` keep (node, message type, content)."""

    def __init__(self, client_app: ClientApp, node_configs: list[Mapping[str, object]]) -> None:
        set_task_identity()
        self.client_app = client_app
        self.nodes = {i + 1: dict(cfg) for i, cfg in enumerate(node_configs)}
        self.ids = itertools.count(1)
        self.replies: list[tuple[int, str, RecordDict]] = []
        self.sent: list[tuple[int, str, RecordDict]] = []

    def set_run(self, run: object) -> None:
        pass

    @property
    def run(self) -> None:  # type: ignore[override]
        return None

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("send_and_receive delivers directly")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("send_and_receive delivers directly")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        out = []
        for message in messages:
            message.metadata._message_id = f"m{next(self.ids)}"  # internal: see the module doc
            node = message.metadata.dst_node_id
            self.sent.append((node, message.metadata.message_type, message.content))
            context = Context(run_id=1, node_id=node, node_config=self.nodes[node], state=RecordDict(), run_config={})
            reply = self.client_app(message, context)
            self.replies.append((node, message.metadata.message_type, reply.content))
            out.append(reply)
        return out
