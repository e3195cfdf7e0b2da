"""The embedded broker itself: start/stop, clients, and the quirks the worker relies on."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from twinstream.broker import BrokerError, EmbeddedBroker
from twinstream.settings import Settings
from twinstream.streams.topic_admin import TopicMismatchError, ensure_topics


def test_start_stop_frees_port() -> None:
    broker = EmbeddedBroker().start()
    port = broker.port
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    broker.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5)


def test_port_in_use_is_a_clear_error(kafka_broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError):
        EmbeddedBroker(port=kafka_broker.port).start(timeout_s=3)


def test_ensure_topics_is_idempotent_and_checks_partitions(kafka_broker: EmbeddedBroker, app_id: str) -> None:
    settings = Settings(broker=kafka_broker.url, topic_namespace=app_id.replace("-", "_"), partitions=3)
    first = ensure_topics(settings)
    assert set(first.values()) == {"created"}
    assert set(ensure_topics(settings).values()) == {"exists"}
    with pytest.raises(TopicMismatchError):
        ensure_topics(settings.model_copy(update={"partitions": 5}))


def test_high_watermark_quirk_that_checkpoint_markers_work_around(kafka_broker: EmbeddedBroker) -> None:
    """Tansu 0.6.0 reports the end offset as the last batch's base offset + 1.

    If this test fails, Tansu fixed it and the checkpoint markers in
    ``streams/ingest.py`` (and the default of ``recovery_consistency_check``) can go.
    """

    async def run() -> tuple[int, int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, linger_ms=50)
        await producer.start()
        futures = [await producer.send("quirk.hw", b"v", partition=0) for _ in range(10)]
        offsets = [m.offset for m in await asyncio.gather(*futures)]
        await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_broker.bootstrap_servers)
        await consumer.start()
        tp = TopicPartition("quirk.hw", 0)
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.stop()
        return max(offsets) + 1, end

    true_end, reported_end = asyncio.run(run())
    assert true_end == 10
    assert reported_end < true_end
