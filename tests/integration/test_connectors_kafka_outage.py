"""Kafka-protocol broker down for 30 s during ingest: samples wait on disk and arrive in order after.

The broker is the embedded one with durable storage (a directory): stopped (broker and its
store) and started again on the same port, it still has the topic and what it had
acknowledged, so the whole topic can be checked at the end.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from connector_harness import Topic, running_connectors, until

from twinstream.broker import EmbeddedBroker
from twinstream.schemas.topics import TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ENTITIES = ["kiln-1", "kiln-2", "kiln-3"]
OUTAGE_S = 30.0


def create_topic(broker: EmbeddedBroker, namespace: str) -> str:
    spec = TELEMETRY.in_namespace(namespace).with_partitions(2)
    ensure_topics(Settings(broker=broker.url, topic_namespace=namespace), specs=[spec])
    return spec.name


def test_kafka_outage_buffers_on_disk_and_delivers_in_order(tmp_path: Path) -> None:
    rows = 1500
    data = tmp_path / "kilns.csv"
    data.write_text("kiln,t,temp\n" + "".join(
        f"{ENTITIES[i % 3]},{1_767_225_600 + i},{900 + i % 97}\n" for i in range(rows)))
    config = {"sources": [{"type": "file", "name": "kilns", "path": str(data), "entity_column": "kiln",
                           "time_column": "t", "time_unit": "s", "rate": 40.0, "progress": False}]}
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", storage=str(tmp_path / "broker-data")).start()
    topic = create_topic(broker, "outage")
    acked: list[tuple[str, int]] = []

    async def scenario() -> None:
        async with running_connectors(config, broker.bootstrap_servers, topic, tmp_path / "connector") as conn:
            original_ack = conn.buffer.ack

            def recording_ack(batch):  # what the broker acknowledged, and when
                acked.extend((row.entity, row.seq) for row in batch)
                return original_ack(batch)

            conn.buffer.ack = recording_ack
            await until(lambda: len(acked) >= 100, 30, "samples flowing to the broker")
            await asyncio.to_thread(broker.stop)
            acked_before = len(acked)
            down_at = time.monotonic()
            await until(lambda: conn.buffer.depth()[0] >= 200, 30, "samples waiting on disk while Kafka is down")
            await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage itself
            depth_at_return, _ = conn.buffer.depth()
            assert len(acked) == acked_before, "nothing acknowledged while the broker was down"
            assert conn.metrics.value("twinstream_connector_buffer_samples", source="kilns") == depth_at_return
            await asyncio.to_thread(broker.start)
            await until(lambda: len(acked) >= rows and conn.buffer.depth()[0] == 0, 60, "the buffer drained")
            assert depth_at_return >= 1000, f"most of the replay was buffered ({depth_at_return})"
            assert conn.metrics.value("twinstream_connector_dropped_total", source="kilns", reason="overflow") == 0

        out = Topic(broker.bootstrap_servers, topic)
        try:
            await out.wait_for(lambda s: len(s) >= rows, 30, "every sample on the topic")
            seen = [(s.entity_id, s.seq) for s in out.samples]
            assert set(seen) == {(e, i) for e in ENTITIES for i in range(rows // 3)}, "nothing lost"
            for entity in ENTITIES:
                first_seen: list[int] = []
                for e, seq in seen:
                    if e == entity and seq not in first_seen:
                        first_seen.append(seq)
                assert first_seen == list(range(rows // 3)), f"{entity}: per-entity order kept"
            assert all(s.metrics["temp"] is not None for s in out.samples)
        finally:
            out.close()

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()
