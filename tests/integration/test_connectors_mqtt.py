"""MQTT connector against a real mosquitto: mapping, exactly-once seqs, broker restart."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import orjson
import pytest
from connector_harness import Mosquitto, Topic, assert_exactly_once, running_connectors, telemetry_topic, until

from twinstream.broker import EmbeddedBroker

pytestmark = pytest.mark.integration
MACHINES = ["m1", "m2", "m3"]
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def mqtt_config(port: int, max_s: float = 1.0) -> dict:
    return {"sources": [{
        "type": "mqtt", "name": "line1", "host": "127.0.0.1", "port": port, "client_id": "twinstream-line1",
        "qos": 1, "reconnect": {"initial_s": 0.1, "max_s": max_s},
        "devices": [
            {"topic": "plant/+/telemetry", "entity_from_topic": {"pattern": "^plant/(?P<entity>[^/]+)/"},
             "time": "payload", "time_path": "ts", "time_unit": "ms",
             "values": [{"name": "temp", "path": "temp", "scale": 0.1, "offset": -40.0},
                        {"name": "pressure", "path": "p.bar"}]},
            {"topic": "plant/+/rpm", "entity_from_topic": {"pattern": "^plant/(?P<entity>[^/]+)/"},
             "values": [{"name": "rpm"}]},
        ]}]}


async def publish(port: int, start: int, count: int) -> None:
    """``count`` readings per machine: JSON telemetry (raw temperature counts) and a plain rpm."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"plant-{start}") as client:
        for i in range(start, start + count):
            for machine in MACHINES:
                payload = {"temp": 600 + i, "p": {"bar": 1.5 + i / 100}, "ts": T0_MS + i * 1000}
                await client.publish(f"plant/{machine}/telemetry", orjson.dumps(payload), qos=1)


def check_values(samples: list, count: int) -> None:
    json_samples = [s for s in samples if "temp" in s.metrics]
    for machine in MACHINES:
        mine = sorted((s for s in json_samples if s.entity_id == machine), key=lambda s: s.seq)
        got = [round(s.metrics["temp"], 6) for s in mine]
        assert got == [round((600 + i) * 0.1 - 40.0, 6) for i in range(count)], f"{machine}: scaled temps in order"
        assert [s.metrics["pressure"] for s in mine] == [1.5 + i / 100 for i in range(count)]
        assert [s.event_time for s in mine] == [
            datetime.fromtimestamp((T0_MS + i * 1000) / 1000, UTC) for i in range(count)
        ], "event time from the payload (ms)"
        assert all(s.source == "line1" and not s.synthetic for s in mine)


def test_mqtt_values_arrive_once_scaled_with_payload_times(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    mosquitto = Mosquitto(tmp_path).start()
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    n = 40

    async def scenario() -> None:
        async with running_connectors(mqtt_config(mosquitto.port), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            await until(lambda: conn.source("line1").connections >= 1, 10, "MQTT connected")
            await publish(mosquitto.port, 0, n)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port) as client:  # plain numeric payloads
                for machine in MACHINES:
                    await client.publish(f"plant/{machine}/rpm", b"1500", qos=1)
            samples = await out.wait_for(lambda s: len(s) >= n * len(MACHINES) + len(MACHINES), 30, "all samples")
            await asyncio.sleep(0.5)  # duplicates would arrive right behind
            await out.poll()
            assert len(out.samples) == n * len(MACHINES) + len(MACHINES)
            assert_exactly_once(out.samples)
            check_values(samples, n)
            assert sorted(s.metrics["rpm"] for s in out.samples if "rpm" in s.metrics) == [1500.0] * 3
            assert conn.metrics.value("twinstream_connector_values_read_total", source="line1") == n * 3 * 2 + 3

    try:
        asyncio.run(scenario())
    finally:
        out.close()
        mosquitto.stop()


def test_mqtt_broker_restart_loses_nothing_written_after_it(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    mosquitto = Mosquitto(tmp_path).start()
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    max_s = 1.0

    async def scenario() -> None:
        async with running_connectors(mqtt_config(mosquitto.port, max_s), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            source = conn.source("line1")
            await until(lambda: source.connections >= 1, 10, "MQTT connected")
            await publish(mosquitto.port, 0, 20)
            await out.wait_for(lambda s: len(s) >= 60, 30, "samples before the restart")
            await asyncio.to_thread(mosquitto.stop)
            await asyncio.to_thread(mosquitto.start)
            back_at = time.monotonic()
            await publish(mosquitto.port, 20, 20)  # at once: queued for the connector's persistent session
            await until(lambda: source.connections >= 2, 10 + max_s, "reconnect after the broker restart")
            assert source.connected_at - back_at <= max_s + 1.0, "reconnected within max_s (+ connect time)"
            await out.wait_for(lambda s: len(s) >= 120, 30, "every sample written after the restart")
            await asyncio.sleep(0.5)
            await out.poll()
            assert_exactly_once(out.samples)
            check_values(out.samples, 40)
            assert conn.metrics.value("twinstream_connector_reconnects_total", source="line1") >= 1

    try:
        asyncio.run(scenario())
    finally:
        out.close()
        mosquitto.stop()
