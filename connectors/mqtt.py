"""MQTT source (aiomqtt 2.x): subscribe with QoS 1, one sample per message and device.

Why a fixed ``client_id``: with it the connector asks for a persistent session
(``clean_session=False``), so the broker queues QoS 1 messages while the connector is
away and keeps the subscriptions across a broker restart (when the broker persists
them, as mosquitto does with ``persistence true``). aiomqtt 2 has no reconnect of its
own; :class:`~twinstream.connectors.source.PlantSource` supplies it.

Payloads are JSON (values picked by a path) or a plain number:

>>> extract({"m": {"t": [20.5, 21.0]}, "id": "p1"}, "m.t[1]"), extract({"a": 1}, "$.a"), extract({"a": 1}, "b")
(21.0, 1, None)
>>> parse_payload(b"42.5"), parse_payload(b'{"t": true}'), parse_payload(b"on")
(42.5, {'t': True}, None)
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import aiomqtt
import orjson

from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import MqttDevice, MqttSource
from twinstream.connectors.convert import number, to_datetime
from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.source import PlantSource

log = logging.getLogger(__name__)
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def extract(document: Any, path: str) -> Any:
    """Value at a dotted JSON path (``a.b[0]``, optional leading ``$.``); None when absent."""
    path = path[2:] if path.startswith("$.") else path
    current = document
    for key, index in _STEP.findall(path):
        if key:
            if not isinstance(current, dict) or key not in current:
                return None
            current = current[key]
        else:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
    return current


def parse_payload(payload: bytes) -> Any:
    """JSON document or plain number; None if it is neither."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


class MqttPlantSource(PlantSource):
    kind = "mqtt"

    def __init__(self, config: MqttSource, buffer: DiskBuffer, metrics: ConnectorMetrics) -> None:
        super().__init__(config.name, config.reconnect, buffer, metrics)
        self.config = config

    async def session(self) -> None:
        cfg = self.config
        persistent = cfg.client_id is not None
        async with aiomqtt.Client(
            cfg.host, cfg.port, username=cfg.username, password=cfg.password, identifier=cfg.client_id,
            clean_session=False if persistent else True, timeout=cfg.timeout_s, keepalive=cfg.keepalive_s,
        ) as client:
            for device in cfg.devices:
                await client.subscribe(device.topic, qos=cfg.qos)
            self.on_connected()
            async for message in client.messages:
                for device in cfg.devices:
                    if message.topic.matches(device.topic):
                        await self.handle(device, message.topic.value, message.payload)

    async def handle(self, device: MqttDevice, topic: str, payload: Any) -> None:
        """Map one message to one sample of one entity."""
        received = datetime.now(UTC)
        raw = payload if isinstance(payload, bytes) else str(payload).encode()
        document = parse_payload(raw)
        if document is None:
            self.metrics.dropped.labels(self.name, "invalid").inc()
            log.warning("mqtt source %s topic %s: payload is neither JSON nor a number", self.name, topic)
            return
        entity = self._entity(device, topic, document)
        if entity is None:
            self.metrics.dropped.labels(self.name, "invalid").inc()
            log.warning("mqtt source %s topic %s: no entity id", self.name, topic)
            return
        values: dict[str, float | None] = {}
        for value in device.values:
            raw_value = document if value.path is None else extract(document, value.path)
            reading = number(raw_value)
            if reading is not None:
                values[value.name] = value.apply(reading)
                self.metrics.values_read.labels(self.name).inc()
        if not values:
            self.metrics.dropped.labels(self.name, "invalid").inc()
            log.warning("mqtt source %s topic %s: none of the mapped values in the payload", self.name, topic)
            return
        event_time = received
        if device.time == "payload":
            stamp = extract(document, device.time_path or "")
            event_time = to_datetime(stamp, device.time_unit) if stamp is not None else received
        await self.emit(entity, event_time, values)

    @staticmethod
    def _entity(device: MqttDevice, topic: str, document: Any) -> str | None:
        if device.entity_id is not None:
            return device.entity_id
        if device.entity_from_topic is not None:
            return device.entity_from_topic.match(topic)
        found = extract(document, device.entity_path or "")
        return None if found is None else str(found)
