#!/usr/bin/env python
"""Values per second the plant connectors put into Kafka, per protocol, on loopback.

For each protocol the same plant is read twice: once by a bare client loop (what the
server delivers to a client that does nothing with the values: the ceiling) and once by
the connector, whose values are counted only when Kafka acknowledged their sample.

  mqtt    mosquitto (Debian's, a private instance): a publisher sends ``--mqtt-messages``
          QoS 1 JSON messages of 10 values each to 10 topics; rate = values / (first
          publish -> last sample acknowledged by Kafka)
  opcua   an in-process asyncua server, 10 machines x 10 variables, polled as fast as
          the server answers (``interval_s`` 1 ms), for ``--seconds``
  modbus  pymodbus's TCP server in process, 10 units x 10 float32 holding registers
          (one block read per unit), polled as fast as it answers, for ``--seconds``
  file    a CSV of ``--file-rows`` rows x 10 metrics, replayed as fast as possible

``buffer`` is the disk buffer alone: samples per second through ``put`` (validation and
one SQLite commit each), with and without the schema validation.

``lost`` counts samples the connectors accepted but that are not on the topic (read
back, deduplicated by (entity, seq)), plus MQTT messages published but not turned into
a sample; it must be 0. The asyncua and pymodbus servers share the benchmark's process
and event loop (and this machine's cores) with the connector: the rates are a lower
bound of what a connector reading a separate server would reach.

    python benchmarks/connectors.py --json benchmarks/results/connectors.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE.parent / "tests" / "integration"))  # the test servers: mosquitto, the plants

import aiomqtt  # noqa: E402
import orjson  # noqa: E402
from asyncua import Client  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from pymodbus.client import AsyncModbusTcpClient  # noqa: E402
from pymodbus.server import ModbusTcpServer  # noqa: E402
from pymodbus.simulator import DataType, SimData, SimDevice  # noqa: E402
from rich.console import Console  # noqa: E402

from twinstream.broker import EmbeddedBroker, free_port  # noqa: E402
from twinstream.connectors.config import parse_config  # noqa: E402
from twinstream.connectors.runner import Connectors  # noqa: E402
from twinstream.schemas.topics import TELEMETRY  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.topic_admin import ensure_topics  # noqa: E402

console = Console(stderr=True)
UNITS, VALUES = 10, 10


def topic_for(broker: EmbeddedBroker, name: str) -> str:
    spec = TELEMETRY.in_namespace(name).with_partitions(4)
    ensure_topics(Settings(broker=broker.url, topic_namespace=name), specs=[spec])
    return spec.name


def on_topic(broker: EmbeddedBroker, topic: str, expected: int, timeout_s: float = 60) -> int:
    """Distinct (entity, seq) on the topic, read until ``expected`` are there or the time is up."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen: set[tuple[bytes, int]] = set()
    deadline = time.monotonic() + timeout_s
    while len(seen) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500, max_records=50_000).values():
            for message in batch:
                seen.add((message.key, orjson.loads(message.value)["seq"]))
    consumer.close()
    return len(seen)


async def run_connector(raw: dict[str, Any], broker: EmbeddedBroker, topic: str, workdir: Path,
                        drive: Callable[[Connectors], Awaitable[float]]) -> dict[str, Any]:
    """Run one connector around ``drive`` (which returns the elapsed seconds) and read the topic back."""
    raw = {"buffer": {"path": str(workdir / f"{topic}.sqlite")}, **raw}
    connectors = Connectors(parse_config(raw), broker.bootstrap_servers, topic)
    task = asyncio.create_task(connectors.run())
    try:
        elapsed = await drive(connectors)
    finally:
        connectors.stop.set()
        await asyncio.wait_for(task, 60)
    sent = connectors.sender.sent
    values = connectors.metrics.value("twinstream_connector_values_read_total", source=connectors.sources[0].name)
    per_sample = values / max(1, connectors.sources[0].samples)
    on_kafka = await asyncio.to_thread(on_topic, broker, topic, connectors.sources[0].samples)
    return {"samples": sent, "values": round(sent * per_sample), "seconds": round(elapsed, 3),
            "values_per_s": round(sent * per_sample / elapsed, 1), "samples_on_topic": on_kafka,
            "lost": connectors.sources[0].samples - on_kafka}


async def until_sent(connectors: Connectors, count: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while connectors.sender.sent < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {connectors.sender.sent} of {count} samples acknowledged")
        await asyncio.sleep(0.01)


# --------------------------------------------------------------------------- MQTT
async def bench_mqtt(broker: EmbeddedBroker, workdir: Path, messages: int) -> dict[str, Any]:
    from connector_harness import Mosquitto

    mosquitto = Mosquitto(workdir).start()
    payload = lambda i: orjson.dumps({f"v{j}": i + j / 10 for j in range(VALUES)})  # noqa: E731

    async def publish() -> None:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, max_inflight_messages=1000) as client:
            for i in range(messages):
                await client.publish(f"plant/u{i % UNITS}/t", payload(i), qos=1)

    try:
        # the ceiling: a bare QoS 1 subscriber that only counts
        received = 0
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as sub:
            await sub.subscribe("plant/#", qos=1)
            started = time.monotonic()
            publisher = asyncio.create_task(publish())
            async for _ in sub.messages:
                received += 1
                if received == messages:
                    break
            bare_s = time.monotonic() - started
            await publisher
        config = {"sources": [{"type": "mqtt", "name": "mqtt", "host": "127.0.0.1", "port": mosquitto.port,
                               "client_id": "bench", "devices": [{
                                   "topic": "plant/+/t", "entity_from_topic": {"pattern": "^plant/(?P<entity>[^/]+)/"},
                                   "values": [{"name": f"v{j}", "path": f"v{j}"} for j in range(VALUES)]}]}]}

        async def drive(connectors: Connectors) -> float:
            source = connectors.sources[0]
            while source.connections == 0:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            await publish()
            await until_sent(connectors, messages)
            return time.monotonic() - started

        result = await run_connector(config, broker, topic_for(broker, "bmqtt"), workdir, drive)
        result["lost"] += messages - result["samples"]
        result["bare_client_values_per_s"] = round(messages * VALUES / bare_s, 1)
        return result
    finally:
        mosquitto.stop()


# --------------------------------------------------------------------------- OPC UA
async def bench_opcua(broker: EmbeddedBroker, workdir: Path, seconds: float) -> dict[str, Any]:
    from test_connectors_opcua import OpcuaPlant

    plant = OpcuaPlant()
    await plant.start()
    try:
        client = Client(plant.url)
        async with client:
            nodes = [client.get_node(f"ns=2;s=Machine{m % 3 + 1}.Temperature") for m in range(UNITS * VALUES)]
            reads, started = 0, time.monotonic()
            while time.monotonic() - started < seconds:
                await client.read_attributes(nodes)
                reads += 1
            bare = reads * len(nodes) / (time.monotonic() - started)
        names = ["Temperature", "Speed", "Running"]
        config = {"sources": [{"type": "opcua", "name": "opcua", "url": plant.url, "mode": "poll", "interval_s": 0.001,
                               "devices": [{"entity_id": f"machine-{u}", "values": [
                                   {"name": f"v{j}", "node_id": f"ns=2;s=Machine{(u + j) % 3 + 1}.{names[j % 3]}"}
                                   for j in range(VALUES)]} for u in range(UNITS)]}]}
        result = await run_connector(config, broker, topic_for(broker, "bopcua"), workdir, lambda c: timed(c, seconds))
        result["bare_client_values_per_s"] = round(bare, 1)
        return result
    finally:
        await plant.stop()


async def timed(connectors: Connectors, seconds: float) -> float:
    """Let a polling connector run ``seconds`` after it connected; the time until its samples are acknowledged."""
    source = connectors.sources[0]
    while source.connections == 0:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    source_task = [t for t in asyncio.all_tasks() if t.get_name() == f"source-{source.name}"]
    for task in source_task:
        task.cancel()
    await asyncio.gather(*source_task, return_exceptions=True)
    await until_sent(connectors, source.samples)
    return time.monotonic() - started


# --------------------------------------------------------------------------- Modbus
async def bench_modbus(broker: EmbeddedBroker, workdir: Path, seconds: float) -> dict[str, Any]:
    regs = lambda: [SimData(0, count=100, values=0x4148, datatype=DataType.REGISTERS)]  # noqa: E731
    bits = lambda: [SimData(0, count=16, values=False, datatype=DataType.BITS)]  # noqa: E731
    devices = [SimDevice(u + 1, simdata=(bits(), bits(), regs(), regs())) for u in range(UNITS)]
    port = free_port()
    server = ModbusTcpServer(devices, address=("127.0.0.1", port))
    serving = asyncio.create_task(server.serve_forever())
    while server.transport is None:
        await asyncio.sleep(0.01)
    try:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, retries=0, reconnect_delay=0)
        await client.connect()
        reads, started = 0, time.monotonic()
        while time.monotonic() - started < seconds:
            for unit in range(1, UNITS + 1):
                await client.read_holding_registers(0, count=2 * VALUES, device_id=unit)
                reads += 1
        bare = reads * VALUES / (time.monotonic() - started)
        client.close()
        config = {"sources": [{"type": "modbus", "name": "modbus", "host": "127.0.0.1", "port": port, "interval_s": 0.001,
                               "devices": [{"unit_id": u + 1, "entity_id": f"unit-{u + 1}", "values": [
                                   {"name": f"v{j}", "address": 2 * j, "type": "float32"} for j in range(VALUES)]}
                                   for u in range(UNITS)]}]}
        result = await run_connector(config, broker, topic_for(broker, "bmodbus"), workdir, lambda c: timed(c, seconds))
        result["bare_client_values_per_s"] = round(bare, 1)
        return result
    finally:
        await server.shutdown()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


# --------------------------------------------------------------------------- file
async def bench_file(broker: EmbeddedBroker, workdir: Path, rows: int) -> dict[str, Any]:
    import csv

    path = workdir / "plant.csv"
    with path.open("w") as handle:
        handle.write("unit,t," + ",".join(f"v{j}" for j in range(VALUES)) + "\n")
        for i in range(rows):
            handle.write(f"u{i % UNITS},{1_767_225_600 + i}," + ",".join(f"{i + j / 10:.1f}" for j in range(VALUES)) + "\n")
    started = time.monotonic()
    with path.open(newline="") as handle:
        parsed = sum(len(row) - 2 for row in csv.DictReader(handle))
    bare = parsed / (time.monotonic() - started)
    config = {"sources": [{"type": "file", "name": "file", "path": str(path), "entity_column": "unit", "time_column": "t",
                           "time_unit": "s", "progress": False}]}

    async def drive(connectors: Connectors) -> float:
        started = time.monotonic()
        await until_sent(connectors, rows)
        return time.monotonic() - started

    result = await run_connector(config, broker, topic_for(broker, "bfile"), workdir, drive)
    result["bare_client_values_per_s"] = round(bare, 1)
    return result


async def bench_buffer(workdir: Path, samples: int = 5000) -> dict[str, Any]:
    """The per-sample cost every source pays: schema validation and one SQLite commit (no Kafka)."""
    from twinstream.connectors.buffer import DiskBuffer

    result: dict[str, Any] = {}
    moment = datetime.now(UTC)
    values = {f"v{j}": j * 1.5 for j in range(VALUES)}
    for validate in (True, False):
        buffer = DiskBuffer(workdir / f"buffer-{validate}.sqlite", max_bytes=10**9, max_age_s=1e9, validate=validate)
        started = time.perf_counter()
        for i in range(samples):
            await buffer.put("bench", f"e{i % UNITS}", moment, values)
        rate = samples / (time.perf_counter() - started)
        buffer.close()
        result["puts_per_s" if validate else "puts_per_s_without_validation"] = round(rate, 1)
    return result


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-connectors-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        for name, bench in (("mqtt", lambda: bench_mqtt(broker, workdir, args.mqtt_messages)),
                            ("opcua", lambda: bench_opcua(broker, workdir, args.seconds)),
                            ("modbus", lambda: bench_modbus(broker, workdir, args.seconds)),
                            ("file", lambda: bench_file(broker, workdir, args.file_rows))):
            if name in args.only:
                console.print(f"[bold]{name}[/bold] ...")
                results[name] = await bench()
                console.print(f"  {name}: {results[name]}")
    results["lost"] = sum(r["lost"] for r in results.values() if isinstance(r, dict))
    with tempfile.TemporaryDirectory(prefix="bench-buffer-") as tmp:
        results["buffer"] = await bench_buffer(Path(tmp))
    results["setup"] = {"python": platform.python_version(), "machine": platform.machine(), "broker": "embedded Tansu (memory)",
                        "values_per_sample": VALUES, "devices": UNITS, "seconds": args.seconds,
                        "mqtt_messages": args.mqtt_messages, "file_rows": args.file_rows}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="write the results here (benchmarks/results/connectors.json)")
    parser.add_argument("--seconds", type=float, default=8.0, help="polling time per polled protocol")
    parser.add_argument("--mqtt-messages", type=int, default=20_000)
    parser.add_argument("--file-rows", type=int, default=50_000)
    parser.add_argument("--only", nargs="+", default=["mqtt", "opcua", "modbus", "file"])
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("asyncua", "pymodbus", "aiokafka", "kafka"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    results = asyncio.run(run(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    if results["lost"] != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
