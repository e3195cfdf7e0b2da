"""The output publisher against the embedded broker: every message delivered, in order per partition."""

from __future__ import annotations

import asyncio
import itertools

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from twinstream.broker import EmbeddedBroker
from twinstream.streams.output import BatchPublisher, partition_for

PARTITIONS = 3


async def _publish_and_read(servers: str, topic: str) -> tuple[list[list[tuple[bytes, bytes]]], dict[int, list[tuple[bytes, bytes]]]]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()
    # small batches and a short queue: publish calls overflow batches and wait for room
    publisher = BatchPublisher(servers, client_id="publisher-test", max_batch_bytes=4096, max_queued=2)
    await publisher.start()
    calls: list[list[tuple[bytes, bytes]]] = []
    futures: list[asyncio.Future] = []
    try:
        for call in range(20):
            messages = [(f"entity-{i % 17}".encode(), f"{call}:{i}".encode() * 8) for i in range(150)]
            calls.append(messages)
            futures += await publisher.publish(topic, PARTITIONS, messages)
        last = await publisher.publish(topic, PARTITIONS, [(b"entity-0", b"last")])
    finally:
        await publisher.stop()  # hands over what is still queued before the producer stops
    delivered = await asyncio.gather(*futures, *last)
    assert all(meta.topic == topic for meta in delivered)
    calls.append([(b"entity-0", b"last")])
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    read: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        expected = sum(len(c) for c in calls)
        for _ in range(100):
            if sum(len(v) for v in read.values()) >= expected:
                break
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                read[tp.partition] += [(r.key, r.value) for r in records]
    finally:
        await consumer.stop()
    return calls, read


def test_every_message_arrives_on_its_key_partition_in_publish_order(kafka_broker: EmbeddedBroker) -> None:
    servers = kafka_broker.url.removeprefix("kafka://")
    calls, read = asyncio.run(_publish_and_read(servers, "publisher-order"))
    expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for messages in calls:
        for key, value in messages:
            expected[partition_for(key, PARTITIONS, itertools.count())].append((key, value))
    assert read == expected
