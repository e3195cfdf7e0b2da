"""``twinstream connect``: every configured source and the Kafka sender in one asyncio process.

Sources write samples to the disk buffer; one sender drains it into the telemetry
topic. Plant sources (MQTT, OPC UA, Modbus) run until stopped; file replays end when
their file is done, and when only finished sources are left the runner waits for the
buffer to empty and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import ConnectorsConfig, FileSource, ModbusSource, MqttSource, OpcuaSource
from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.sink import KafkaSender
from twinstream.connectors.source import PlantSource

log = logging.getLogger(__name__)


def build_source(config: object, buffer: DiskBuffer, metrics: ConnectorMetrics) -> PlantSource:
    """The source object for one entry of ``sources:`` (protocol modules imported on demand)."""
    if isinstance(config, MqttSource):
        from twinstream.connectors.mqtt import MqttPlantSource

        return MqttPlantSource(config, buffer, metrics)
    if isinstance(config, OpcuaSource):
        from twinstream.connectors.opcua import OpcuaPlantSource

        return OpcuaPlantSource(config, buffer, metrics)
    if isinstance(config, ModbusSource):
        from twinstream.connectors.modbus import ModbusPlantSource

        return ModbusPlantSource(config, buffer, metrics)
    if isinstance(config, FileSource):
        from twinstream.connectors.file_replay import FileReplaySource

        return FileReplaySource(config, buffer, metrics)
    raise TypeError(f"unknown source config {type(config).__name__}")


@dataclass
class Connectors:
    """The running pieces, kept so tests and the benchmark can watch them."""

    config: ConnectorsConfig
    bootstrap_servers: str
    topic: str
    metrics: ConnectorMetrics = field(default_factory=ConnectorMetrics)
    security: dict[str, Any] = field(default_factory=dict)  # twinstream.kafka_security.client_options
    buffer: DiskBuffer = field(init=False)
    sources: list[PlantSource] = field(init=False)
    sender: KafkaSender = field(init=False)
    stop: asyncio.Event = field(init=False)

    def __post_init__(self) -> None:
        b = self.config.buffer
        self.buffer = DiskBuffer(b.path, max_bytes=b.max_bytes, max_age_s=b.max_age_s, overflow=b.overflow, metrics=self.metrics)
        self.sources = [build_source(source, self.buffer, self.metrics) for source in self.config.sources]
        self.sender = KafkaSender(self.buffer, self.bootstrap_servers, self.topic, self.config.kafka, self.metrics, self.security)

    def source(self, name: str) -> PlantSource:
        return next(s for s in self.sources if s.name == name)

    async def run(self) -> None:
        """Run until every source has finished and the buffer is empty, or until cancelled / :attr:`stop`."""
        self.stop = asyncio.Event()
        sender = asyncio.create_task(self.sender.run(self.stop), name="kafka-sender")
        tasks = {asyncio.create_task(source.run(), name=f"source-{source.name}"): source for source in self.sources}
        stop_wait = asyncio.create_task(self.stop.wait())
        try:
            pending = set(tasks)
            while pending and not self.stop.is_set():
                done, pending = await asyncio.wait(pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stop_wait}:
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # a file that cannot be read: fail loudly
                pending.discard(stop_wait)
            if not pending:  # every source finished: deliver all they read, however long Kafka takes
                self.sender.drain_timeout_s = float("inf")
            self.stop.set()
            await sender
        finally:
            self.stop.set()
            for task in [*tasks, stop_wait]:
                task.cancel()
            sender.cancel()
            for task in [*tasks, sender, stop_wait]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.buffer.close()
