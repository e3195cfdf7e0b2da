"""The Kafka side of the connectors: disk buffer -> telemetry topic, in order, acknowledged.

Why one batch in flight: a batch is deleted from the buffer only after Kafka
acknowledged all of it, and the next batch is sent only then, so an entity's samples
reach its partition in the order they were read even across an outage (a batch that
failed half-way is sent again whole: duplicates of (entity, seq), which the twins skip,
never a reordering of first deliveries). While Kafka is unreachable the producer is
rebuilt after a jittered, capped backoff and the samples wait on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaProducer

from twinstream.connectors.backoff import Backoff
from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import KafkaConfig
from twinstream.connectors.metrics import ConnectorMetrics

log = logging.getLogger(__name__)


class KafkaSender:
    """Drains a :class:`DiskBuffer` into ``topic``, keyed by entity id."""

    def __init__(self, buffer: DiskBuffer, bootstrap_servers: str, topic: str, config: KafkaConfig,
                 metrics: ConnectorMetrics, security: Mapping[str, Any] | None = None) -> None:
        """``security``: :func:`twinstream.kafka_security.client_options` (TLS / SASL); None: plaintext."""
        self.buffer = buffer
        self.security = dict(security or {})
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.config = config
        self.metrics = metrics
        self.sent = 0
        self.failures = 0
        self.connected = asyncio.Event()
        self.drain_timeout_s = 10.0  # after stop: how long to keep trying to empty the buffer
        self._producer: AIOKafkaProducer | None = None

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            timeout_ms = int(self.config.request_timeout_s * 1000)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=5, max_batch_size=512 * 1024,
                request_timeout_ms=timeout_ms, metadata_max_age_ms=5000,
                enable_idempotence=False,  # the embedded broker rejects idempotent producers
                **self.security,
            )
            try:
                await asyncio.wait_for(producer.start(), self.config.request_timeout_s)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 2.0)
                raise
            self._producer = producer
        return self._producer

    async def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self.connected.clear()
        if producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 2.0)

    async def send_batch(self) -> int:
        """Send the oldest batch and delete it once acknowledged; returns samples sent (0: empty)."""
        rows = self.buffer.peek(self.config.batch)
        if not rows:
            return 0
        producer = await self._producer_started()
        futures = [await producer.send(self.topic, row.value, key=row.entity.encode()) for row in rows]
        await asyncio.wait_for(asyncio.gather(*futures), self.config.request_timeout_s * 2)
        self.connected.set()
        for source, count in self.buffer.ack(rows).items():
            self.metrics.samples_sent.labels(source).inc(count)
        self.sent += len(rows)
        return len(rows)

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop`` is set, then try to empty the buffer for :attr:`drain_timeout_s`."""
        backoff = Backoff(self.config.reconnect.initial_s, self.config.reconnect.max_s)
        loop = asyncio.get_running_loop()
        drain_deadline: float | None = None
        try:
            while True:
                if stop.is_set():
                    drain_deadline = drain_deadline or loop.time() + self.drain_timeout_s
                    if loop.time() > drain_deadline or self.buffer.depth()[0] == 0:
                        return
                try:
                    sent = await self.send_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # broker down, topic missing, timeouts: wait and rebuild
                    self.failures += 1
                    samples, size = self.buffer.depth()
                    log.warning("kafka %s topic %s unavailable (%s: %s); %d samples (%d bytes) wait on disk",
                                self.bootstrap_servers, self.topic, type(exc).__name__, exc, samples, size)
                    await self._drop_producer()
                    await backoff.wait()
                    continue
                backoff.reset()
                if sent == 0:
                    await self.buffer.wait_for_data(0.2)
        finally:
            await self._drop_producer()
