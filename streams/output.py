"""Publish keyed messages as one record batch per partition.

Why not ``producer.send`` per message: the worker emits one prediction per event, and
a per-message coroutine through the producer costs more than the learning step
itself. Grouping a batch's outputs by partition and handing each group to the
producer as a single record batch keeps Kafka's keyed placement (the same murmur2
partitioner every Kafka client uses) with a handful of awaits per batch.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

_partitioner = DefaultPartitioner()


def partition_for(key: bytes | None, partitions: int, round_robin: itertools.count) -> int:
    """Kafka's default placement: murmur2 of the key, or round robin without a key.

    >>> partition_for(b"engine-7", 4, itertools.count()) == partition_for(b"engine-7", 4, itertools.count())
    True
    """
    if key is None:
        return next(round_robin) % partitions
    all_partitions = list(range(partitions))
    return int(_partitioner(key, all_partitions, all_partitions))


class BatchPublisher:
    """Sends ``(key, value)`` pairs to a topic in per-partition record batches.

    Returns delivery futures; the caller awaits them before acknowledging the inputs.
    """

    def __init__(self, bootstrap_servers: str, client_id: str, max_batch_bytes: int = 512 * 1024,
                 security: Mapping[str, Any] | None = None) -> None:
        """``security``: :func:`twinstream.kafka_security.client_options` (TLS / SASL); None: plaintext."""
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap_servers,
            "client_id": client_id,
            "acks": "all",
            "enable_idempotence": False,  # the embedded broker rejects idempotent producers
            "linger_ms": 5,
            "max_batch_size": max_batch_bytes,
            "max_request_size": 4 * max_batch_bytes,
            **(security or {}),
        }
        self._producer: AIOKafkaProducer | None = None
        self._round_robin = itertools.count()

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("BatchPublisher.start() was not awaited")
        return self._producer

    async def start(self) -> None:
        """Create and start the producer (aiokafka needs the running event loop)."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(**self._config)
            await self._producer.start()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, topic: str, partitions: int, messages: Iterable[tuple[bytes | None, bytes]]) -> list[asyncio.Future]:
        grouped: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for key, value in messages:
            grouped.setdefault(partition_for(key, partitions, self._round_robin), []).append((key, value))
        futures: list[asyncio.Future] = []
        for partition, items in grouped.items():
            batch = self.producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                    futures.append(await self.producer.send_batch(batch, topic, partition=partition))
                    batch = self.producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"message of {len(value)} bytes exceeds the batch size")
            futures.append(await self.producer.send_batch(batch, topic, partition=partition))
        return futures
