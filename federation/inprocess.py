"""An in-process Flower ``Grid``: strategies and ServerApp logic talk to sites by function call.

Why: Flower 1.42 has no public in-process grid (its simulation engine needs Ray). The
evaluation harness (``twinstream eval federated``) runs strategies' ``configure_train``
/ ``aggregate_train`` over sites in one process, and the unit tests run the real
ServerApp against the real ClientApp without processes. Both use this grid: nodes
``1..n``, and ``send_and_receive`` hands every message to ``deliver(node_id, message)``
and returns the replies, recording what was sent and received. Building a ``Message``
outside Flower's runtime needs a task identity and a message id, which are Flower
internals (``flwr.supercore.task_identity``, ``Metadata._message_id``): they are touched
here only, and the real-process test (``tests/integration/test_federated_round.py``)
stays the ground truth.

>>> grid = InProcessGrid(3)
>>> list(grid.get_node_ids())
[1, 2, 3]
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

Deliver = Callable[[int, Message], Message]


@contextlib.contextmanager
def task_identity() -> Iterator[None]:
    """Flower's ``Message()`` stamps the sender's run/node/task ids, which the ServerApp
    runtime sets for the process (``flwr.superlink.runtime.run_serverapp``). In process
    there is no runtime, so set them as it would (run 0, the SuperLink's node id 0) unless
    they are set, and restore the previous values afterwards."""
    from flwr.supercore.task_identity import TaskIdentity  # internal: see the module doc

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    if saved[0] is None:
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 0, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class InProcessGrid(Grid):
    """Nodes ``1..n_nodes``; ``sent`` and ``replies`` keep (node, message type, content) of every exchange.

    Without ``deliver`` the grid only lists node ids (for a caller that delivers messages
    itself, as the evaluation's ``run_round`` does).
    """

    def __init__(self, n_nodes: int, deliver: Deliver | None = None) -> None:
        self.n_nodes = n_nodes
        self.deliver = deliver
        self.ids = itertools.count(1)
        self.sent: list[tuple[int, str, RecordDict]] = []
        self.replies: list[tuple[int, str, RecordDict]] = []

    def set_run(self, run_id: Any) -> None:
        pass

    @property
    def run(self) -> None:  # type: ignore[override]
        return None

    def get_node_ids(self) -> Iterable[int]:
        return list(range(1, self.n_nodes + 1))

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:
        return Message(content, dst_node_id=dst_node_id, message_type=message_type, group_id=group_id, ttl=ttl)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        raise NotImplementedError("the in-process grid delivers in send_and_receive")

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        raise NotImplementedError("the in-process grid delivers in send_and_receive")

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        if self.deliver is None:
            raise NotImplementedError("this grid only lists node ids: its caller delivers the messages")
        out = []
        for message in messages:
            message.metadata._message_id = f"m{next(self.ids)}"  # internal: see the module doc
            node = message.metadata.dst_node_id
            self.sent.append((node, message.metadata.message_type, message.content))
            reply = self.deliver(node, message)
            self.replies.append((node, message.metadata.message_type, reply.content))
            out.append(reply)
        return out
