"""Publish keyed messages as one record batch per partition.

Why not ``producer.send`` per message: the worker emits one prediction per event, and
a per-message coroutine through the producer costs more than the learning step
itself. Grouping a batch's outputs by partition and handing each group to the
producer as a single record batch keeps Kafka's keyed placement (the same murmur2
partitioner every Kafka client uses) with a handful of awaits per batch.

Why the hand-over to the producer runs in the background: the producer takes a new
batch for a partition only once the one before it has left for the broker, which waits
for the partition's request in flight. Awaited inline, that wait held the worker's
agent for most of its publishing time (docs/decisions.md). One sender task per
partition hands the batches over in the order they were published, so the order of a
partition's messages is kept; ``publish`` returns delivery futures at once and waits
only when more than ``max_queued`` batches of one partition are still to be handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
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
                 security: Mapping[str, Any] | None = None, max_queued: int = 8) -> None:
        """``security``: :func:`twinstream.kafka_security.client_options` (TLS / SASL); None: plaintext.

        ``max_queued``: batches of one partition waiting to be handed to the producer
        before ``publish`` waits for room (back-pressure from a slow broker).
        """
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
        self._max_queued = max_queued
        self._senders: dict[tuple[str, int], _PartitionSender] = {}

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
        """Hand over what is queued, then stop the producer (it sends what it holds)."""
        senders, self._senders = self._senders, {}
        for sender in senders.values():
            await sender.close()
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def publish(self, topic: str, partitions: int, messages: Iterable[tuple[bytes | None, bytes]]) -> list[asyncio.Future]:
        grouped: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for key, value in messages:
            grouped.setdefault(partition_for(key, partitions, self._round_robin), []).append((key, value))
        producer = self.producer
        futures: list[asyncio.Future] = []
        for partition, items in grouped.items():
            sender = self._senders.get((topic, partition))
            if sender is None:
                sender = self._senders[(topic, partition)] = _PartitionSender(producer, topic, partition, self._max_queued)
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:  # batch full
                    futures.append(await sender.put(batch))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"message of {len(value)} bytes exceeds the batch size")
            futures.append(await sender.put(batch))
        return futures


class _PartitionSender:
    """Hands one partition's record batches to the producer in order, in a task of its own."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partition: int, max_queued: int) -> None:
        self.producer, self.topic, self.partition = producer, topic, partition
        self.queue: asyncio.Queue[tuple[Any, asyncio.Future] | None] = asyncio.Queue(maxsize=max_queued)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"publish {topic}[{partition}]")

    async def put(self, batch: Any) -> asyncio.Future:
        """Queue ``batch``; the future resolves with its delivery (record metadata) or the error."""
        if self.task.done():  # closed or cancelled: say so rather than queue for ever
            raise RuntimeError(f"the sender of {self.topic}[{self.partition}] has stopped")
        delivered: asyncio.Future = asyncio.get_running_loop().create_future()
        await self.queue.put((batch, delivered))
        return delivered

    async def close(self) -> None:
        if not self.task.done():
            await self.queue.put(None)
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def _run(self) -> None:
        try:
            while (item := await self.queue.get()) is not None:
                batch, delivered = item
                try:
                    delivery = await self.producer.send_batch(batch, self.topic, partition=self.partition)
                except Exception as exc:  # noqa: BLE001 - the publisher's caller gets it from the future
                    if not delivered.done():
                        delivered.set_exception(exc)
                    continue
                delivery.add_done_callback(lambda done, out=delivered: _settle(out, done))
        finally:  # cancelled: batches still queued fail instead of waiting for ever
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None and not item[1].done():
                    item[1].set_exception(RuntimeError(f"publisher of {self.topic}[{self.partition}] stopped"))


def _settle(out: asyncio.Future, done: asyncio.Future) -> None:
    """Pass the producer's delivery outcome on to the future ``publish`` returned."""
    if out.done():
        return
    if done.cancelled():
        out.cancel()
    elif (exc := done.exception()) is not None:
        out.set_exception(exc)
    else:
        out.set_result(done.result())
