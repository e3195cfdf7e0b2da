"""OPC UA source (asyncua): data-change subscriptions or polling, one sample per device and window.

Why a watchdog of our own: subscriptions that go silent while the session looks alive,
and sessions that never come back after a server restart, are what operators report
most. The session is read for server state every ``watchdog_s`` (asyncua's supervisor)
and a subscription with no publish response (data or keep-alive) for three keep-alive
periods is treated as dead; either ends the session, and the reconnect loop builds a
new one with fresh subscriptions.

A window is one publish response (subscribe) or one read of all nodes (poll); a node
that changed twice within one window starts a new sample, so no queued change is
merged away. After a reconnect the server re-sends each node's current value; a value
already sent (same source timestamp and value) is not sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from asyncua import Client, Node, ua
from asyncua.client.ua_client import UaClientState

from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import OpcuaDevice, OpcuaSource, OpcuaValue
from twinstream.connectors.convert import number, to_datetime
from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.source import PlantSource

log = logging.getLogger(__name__)


def split_path(path: str) -> list[str]:
    """``"0:Objects/2:Plant"`` -> ``["0:Objects", "2:Plant"]`` (empty parts ignored).

    >>> split_path("/0:Objects/2:Plant/"), split_path("")
    (['0:Objects', '2:Plant'], [])
    """
    return [part for part in path.split("/") if part]


@dataclass
class BoundDevice:
    """A device resolved on the connected server: its entity id and the node of each value."""

    entity: str
    values: list[tuple[OpcuaValue, Node]]
    by_node: dict[str, OpcuaValue] = field(default_factory=dict)


def _time(data_value: ua.DataValue, mode: str, received: datetime) -> datetime:
    stamp = {"source": data_value.SourceTimestamp, "server": data_value.ServerTimestamp}.get(mode)
    return received if stamp is None else to_datetime(stamp, "iso")


async def make_client(cfg: OpcuaSource) -> Client:
    """A client with the source's timeouts, security and credentials (not connected yet)."""
    client = Client(cfg.url, timeout=cfg.timeout_s, watchdog_intervall=cfg.watchdog_s)
    if cfg.security is not None:
        sec = cfg.security
        parts = [sec.policy, sec.mode, str(sec.certificate), str(sec.private_key)]
        if sec.server_certificate is not None:
            parts.append(str(sec.server_certificate))
        await client.set_security_string(",".join(parts))
    if cfg.username is not None:
        client.set_user(cfg.username)
    if cfg.password is not None:
        client.set_password(cfg.password)
    return client


async def resolve(client: Client, devices: list[OpcuaDevice]) -> list[BoundDevice]:
    """Find every device's nodes; ``entity_from_path`` expands to one device per matching child."""
    root = client.nodes.root
    bound: list[BoundDevice] = []
    for device in devices:
        base = await root.get_child(split_path(device.path)) if split_path(device.path) else root
        if device.entity_from_path is None:
            targets = [(device.entity_id or "", base)]
        else:
            targets = []
            for child in await base.get_children():
                name = (await child.read_browse_name()).to_string()
                entity = device.entity_from_path.match(name)
                if entity is not None:
                    targets.append((entity, child))
        for entity, node in targets:
            values = []
            for value in device.values:
                if value.node_id is not None:
                    values.append((value, client.get_node(value.node_id)))
                else:
                    values.append((value, await node.get_child(split_path(value.browse_path or ""))))
            found = BoundDevice(entity, values)
            found.by_node = {n.nodeid.to_string(): v for v, n in values}
            bound.append(found)
    return bound


class OpcuaPlantSource(PlantSource):
    kind = "opcua"

    def __init__(self, config: OpcuaSource, buffer: DiskBuffer, metrics: ConnectorMetrics) -> None:
        super().__init__(config.name, config.reconnect, buffer, metrics)
        self.config = config
        self._sent: dict[tuple[str, str], tuple[object, object]] = {}  # (entity, metric) -> (source ts, value)
        self._last_poll: dict[str, dict[str, tuple[object, object]]] = {}

    async def session(self) -> None:
        client = await make_client(self.config)
        await asyncio.wait_for(client.connect(), self.config.timeout_s * 2)
        try:
            devices = await resolve(client, self.config.devices)
            if self.config.mode == "subscribe":
                await self._subscribe(client, devices)
            else:
                self.on_connected()
                await self._poll(client, devices)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 2.0)

    def _check_alive(self, client: Client) -> None:
        if client.state is not UaClientState.CONNECTED:
            raise ConnectionError(f"session lost (state {client.state.value})")

    # --- subscriptions ---------------------------------------------------------------------

    async def _subscribe(self, client: Client, devices: list[BoundDevice]) -> None:
        period_ms = self.config.interval_s * 1000
        sub = await client.create_subscription(period_ms, None, queue_maxsize=1_000_000)
        owner: dict[str, BoundDevice] = {}
        for device in devices:
            for _, node in device.values:
                owner[node.nodeid.to_string()] = device
        nodes = [node for device in devices for _, node in device.values]
        results = await sub.subscribe_data_change(nodes, queuesize=self.config.queue_size,
                                                  sampling_interval=min(period_ms, 50.0))
        bad = [r for r in (results if isinstance(results, list) else [results]) if isinstance(r, ua.StatusCode)]
        if bad:
            raise ConnectionError(f"{len(bad)} monitored items refused: {bad[0]}")
        self.on_connected()
        while True:
            event = await sub.next_event(timeout=self.config.watchdog_s)
            self._check_alive(client)
            if sub.is_stale(3.0):
                raise ConnectionError("subscription silent for three keep-alive periods")
            if event is None:
                continue
            batch = [event]
            # The rest of the same publish response: asyncua queues all its notifications at once
            # (asyncua 2.x keeps the queue private; without it each notification is its own window).
            queue = getattr(sub, "_event_queue", None)
            while queue is not None and not queue.empty():
                batch.append(queue.get_nowait())
            await self._window(batch, owner)

    async def _window(self, events: list, owner: dict[str, BoundDevice]) -> None:
        received = datetime.now(UTC)
        pending: dict[str, tuple[dict[str, float | None], list[datetime]]] = {}
        order: list[str] = []
        for event in events:
            node = getattr(event, "node", None)
            if node is None:
                continue
            key = node.nodeid.to_string()
            device = owner.get(key)
            if device is None:
                continue
            value_cfg = device.by_node[key]
            data_value = event.data.monitored_item.Value
            marker = (data_value.SourceTimestamp, event.value)
            if data_value.SourceTimestamp is not None and self._sent.get((device.entity, value_cfg.name)) == marker:
                continue  # re-sent current value after a reconnect
            reading = number(event.value)
            self.metrics.values_read.labels(self.name).inc()
            values, times = pending.get(device.entity, ({}, []))
            if value_cfg.name in values:  # the same node twice in one window: flush, start a new sample
                await self.emit(device.entity, max(times), values)
                values, times = {}, []
            values[value_cfg.name] = None if reading is None else value_cfg.apply(reading)
            times.append(_time(data_value, self.config.time, received))
            pending[device.entity] = (values, times)
            if device.entity not in order:
                order.append(device.entity)
            self._sent[(device.entity, value_cfg.name)] = marker
        for entity in order:
            values, times = pending[entity]
            if values:
                await self.emit(entity, max(times), values)

    # --- polling -----------------------------------------------------------------------------

    async def _poll(self, client: Client, devices: list[BoundDevice]) -> None:
        loop = asyncio.get_running_loop()
        nodes = [node for device in devices for _, node in device.values]
        next_poll = loop.time()
        while True:
            self._check_alive(client)
            data_values = await client.read_attributes(nodes)
            received = datetime.now(UTC)
            self.metrics.values_read.labels(self.name).inc(len(data_values))
            position = 0
            for device in devices:
                values: dict[str, float | None] = {}
                times: list[datetime] = []
                markers: dict[str, tuple[object, object]] = {}
                for value_cfg, _ in device.values:
                    data_value = data_values[position]
                    position += 1
                    raw = data_value.Value.Value if data_value.Value is not None else None
                    reading = number(raw) if data_value.StatusCode is None or data_value.StatusCode.is_good() else None
                    values[value_cfg.name] = None if reading is None else value_cfg.apply(reading)
                    times.append(_time(data_value, self.config.time, received))
                    markers[value_cfg.name] = (data_value.SourceTimestamp, raw)
                if self.config.on_change and self._last_poll.get(device.entity) == markers:
                    continue
                self._last_poll[device.entity] = markers
                await self.emit(device.entity, max(times), values)
            next_poll += self.config.interval_s
            delay = next_poll - loop.time()
            if delay < 0:
                next_poll, delay = loop.time(), 0.0
            await asyncio.sleep(delay)


async def browse_candidates(cfg: OpcuaSource, max_depth: int = 6, limit: int = 500) -> list[tuple[str, str, str]]:
    """Variables under ``Objects`` as (browse path, node id, data type), for ``connect --check --browse``."""
    client = await make_client(cfg)
    found: list[tuple[str, str, str]] = []
    async with client:
        objects = client.nodes.objects

        async def walk(node: Node, path: str, depth: int) -> None:
            if depth > max_depth or len(found) >= limit:
                return
            for child in await node.get_children():
                name = (await child.read_browse_name()).to_string()
                child_path = f"{path}/{name}"
                node_class = await child.read_node_class()
                if node_class == ua.NodeClass.Variable:
                    try:
                        variant_type = (await child.read_data_type_as_variant_type()).name
                    except Exception:
                        variant_type = "?"
                    found.append((child_path, child.nodeid.to_string(), variant_type))
                if node_class == ua.NodeClass.Object and not (path == "0:Objects" and name == "0:Server"):
                    await walk(child, child_path, depth + 1)

        await walk(objects, "0:Objects", 1)
    return found
