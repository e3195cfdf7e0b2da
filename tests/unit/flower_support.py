"""The in-process grid of the unit tests: the real ServerApp logic talks to the real ClientApp, no processes.

:class:`~twinstream.federation.inprocess.InProcessGrid` delivers each message to
``client_app(message, context)`` with the node's config, so tests can inspect exactly
what a site would send.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp

from twinstream.federation import inprocess


def set_task_identity() -> None:
    from flwr.supercore.task_identity import TaskIdentity  # Flower internal: see twinstream.federation.inprocess

    TaskIdentity.run_id = 1
    TaskIdentity.task_id = 1
    TaskIdentity.node_id = 0


class InProcessGrid(inprocess.InProcessGrid):
    """Nodes 1..n, node i with ``node_configs[i - 1]``, each answered by ``client_app``."""

    def __init__(self, client_app: ClientApp, node_configs: list[Mapping[str, object]]) -> None:
        set_task_identity()
        self.client_app = client_app
        self.nodes = {i + 1: dict(cfg) for i, cfg in enumerate(node_configs)}
        super().__init__(len(self.nodes), self._ask_site)

    def _ask_site(self, node: int, message: Message) -> Message:
        context = Context(run_id=1, node_id=node, node_config=self.nodes[node], state=RecordDict(), run_config={})
        return self.client_app(message, context)
