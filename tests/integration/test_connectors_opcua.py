"""OPC UA connector against an in-process asyncua server with a simulated plant of three machines."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from asyncua import Server, ua
from connector_harness import Topic, assert_exactly_once, running_connectors, telemetry_topic, until
from typer.testing import CliRunner

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.cli import app
from twinstream.connectors.config import OpcuaSource
from twinstream.connectors.opcua import browse_candidates

pytestmark = pytest.mark.integration
MACHINES = ["Machine1", "Machine2", "Machine3"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
logging.getLogger("asyncua").setLevel(logging.WARNING)


class OpcuaPlant:
    """Machines under Objects/Plant, each with Temperature (double), Speed (int32) and Running (bool).

    State k of a machine: temperature 20 + k, speed 100 k, running for even k, all with source time T0 + k s.
    Node ids are strings, so a restarted server has the same ones.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/plant"
        self.server: Server | None = None
        self.nodes: dict[tuple[str, str], object] = {}
        self.state = {m: 0 for m in MACHINES}

    async def start(self) -> None:
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        idx = await server.register_namespace("urn:twinstream:test-plant")
        plant = await server.nodes.objects.add_object(ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx))
        for machine in MACHINES:
            obj = await plant.add_object(ua.NodeId(machine, idx), ua.QualifiedName(machine, idx))
            for name, initial, variant in (("Temperature", 0.0, ua.VariantType.Double), ("Speed", 0, ua.VariantType.Int32),
                                           ("Running", False, ua.VariantType.Boolean)):
                self.nodes[(machine, name)] = await obj.add_variable(
                    ua.NodeId(f"{machine}.{name}", idx), ua.QualifiedName(name, idx), ua.Variant(initial, variant), variant)
        await server.start()
        self.server = server
        for machine in MACHINES:
            await self.write(machine, self.state[machine])

    async def write(self, machine: str, k: int) -> None:
        self.state[machine] = k
        stamp = T0 + timedelta(seconds=k)
        for name, value, variant in (("Temperature", 20.0 + k, ua.VariantType.Double), ("Speed", 100 * k, ua.VariantType.Int32),
                                     ("Running", k % 2 == 0, ua.VariantType.Boolean)):
            await self.nodes[(machine, name)].write_value(ua.DataValue(ua.Variant(value, variant), SourceTimestamp=stamp))

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None


def subscribe_config(url: str, max_s: float = 1.0) -> dict:
    return {"sources": [{
        "type": "opcua", "name": "plant", "url": url, "mode": "subscribe", "interval_s": 0.1, "queue_size": 50,
        "time": "source", "watchdog_s": 0.5, "timeout_s": 2.0, "reconnect": {"initial_s": 0.1, "max_s": max_s},
        "devices": [{"path": "0:Objects/2:Plant", "entity_from_path": {"pattern": "^2:(?P<entity>Machine\\d+)$"},
                     "values": [{"name": "temp_f", "browse_path": "2:Temperature", "scale": 1.8, "offset": 32.0},
                                {"name": "speed", "browse_path": "2:Speed"},
                                {"name": "running", "browse_path": "2:Running"}]}]}]}


def check_machine(samples: list, machine: str, ks: list[int]) -> None:
    """Every written state's values arrive once, in order, scaled, with source timestamps."""
    mine = sorted((s for s in samples if s.entity_id == machine), key=lambda s: s.seq)
    temps = [round((s.metrics["temp_f"] - 32.0) / 1.8 - 20.0, 6) for s in mine if "temp_f" in s.metrics]
    speeds = [s.metrics["speed"] / 100 for s in mine if "speed" in s.metrics]
    assert temps == [float(k) for k in ks], f"{machine}: temperatures"
    assert speeds == [float(k) for k in ks], f"{machine}: speeds"
    for sample in mine:
        seen = [round((sample.metrics["temp_f"] - 32.0) / 1.8 - 20.0)] if "temp_f" in sample.metrics else []
        seen += [round(sample.metrics["speed"] / 100)] if "speed" in sample.metrics else []
        if "running" in sample.metrics and seen:
            assert sample.metrics["running"] in (0.0, 1.0)
        if seen:
            assert sample.event_time == T0 + timedelta(seconds=max(seen)), "event time = newest source timestamp in the window"


def test_opcua_subscription_values_once_scaled_with_source_times(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = OpcuaPlant()
    n = 20

    async def scenario() -> None:
        await plant.start()
        async with running_connectors(subscribe_config(plant.url), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            source = conn.source("plant")
            await until(lambda: source.connections >= 1, 15, "OPC UA connected")
            await out.wait_for(lambda s: {x.entity_id for x in s} == set(MACHINES), 15, "initial values")
            for k in range(1, n + 1):
                for machine in MACHINES:
                    await plant.write(machine, k)
                await asyncio.sleep(0.02)
            await out.wait_for(lambda s: sum(x.metrics.get("speed") == 100 * n for x in s) >= 3, 20, "the last state")
            await asyncio.sleep(0.5)
            await out.poll()
            assert_exactly_once(out.samples)
            for machine in MACHINES:
                check_machine(out.samples, machine, list(range(n + 1)))
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()


def test_opcua_server_restart_reconnects_within_max_s(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = OpcuaPlant()
    max_s = 1.0

    async def seen(machine: str, k: int) -> None:
        await out.wait_for(lambda s: any(x.entity_id == machine and x.metrics.get("speed") == 100 * k for x in s),
                           20, f"{machine} state {k}")

    async def scenario() -> None:
        await plant.start()
        async with running_connectors(subscribe_config(plant.url, max_s), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            source = conn.source("plant")
            await out.wait_for(lambda s: {x.entity_id for x in s} == set(MACHINES), 15, "initial values")
            for k in range(1, 4):
                await plant.write("Machine1", k)
                await seen("Machine1", k)
            await plant.stop()
            await until(lambda: source.disconnected_at is not None, 15, "the connector noticing the server is gone")
            await asyncio.sleep(2 * max_s)
            await plant.start()  # the plant keeps its state: the same values and source times as before
            back_at = time.monotonic()
            await plant.write("Machine1", 4)  # at once, before the connector is back
            await until(lambda: source.connections >= 2, 15, "reconnect")
            assert source.connected_at - back_at <= max_s + 1.0, "reconnected within max_s (+ session set-up)"
            await seen("Machine1", 4)
            for k in range(5, 8):
                await plant.write("Machine1", k)
                await seen("Machine1", k)
            await asyncio.sleep(0.5)
            await out.poll()
            assert_exactly_once(out.samples)
            check_machine(out.samples, "Machine1", list(range(8)))  # no value lost, none re-sent after the reconnect
            check_machine(out.samples, "Machine2", [0])
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()


def test_opcua_polling_and_browse(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = OpcuaPlant()
    config = {"sources": [{
        "type": "opcua", "name": "polled", "url": plant.url, "mode": "poll", "interval_s": 0.05, "on_change": True,
        "time": "server", "reconnect": {"initial_s": 0.1, "max_s": 1.0},
        "devices": [{"entity_id": "press-7", "values": [{"name": "temp", "node_id": "ns=2;s=Machine1.Temperature"},
                                                       {"name": "speed", "node_id": "ns=2;s=Machine1.Speed", "scale": 0.01}]}]}]}

    async def scenario() -> None:
        await plant.start()
        candidates = await browse_candidates(OpcuaSource.model_validate(config["sources"][0]))
        assert ("0:Objects/2:Plant/2:Machine2/2:Speed", "ns=2;s=Machine2.Speed", "Int32") in candidates
        config_file = tmp_path / "connectors.yaml"
        config_file.write_text(yaml.safe_dump(config))
        check = await asyncio.to_thread(CliRunner().invoke, app, ["connect", "--check", str(config_file), "--browse"],
                                        env={"COLUMNS": "200"})
        assert check.exit_code == 0, check.output
        assert "0:Objects/2:Plant/2:Machine3/2:Temperature" in check.output and "ns=2;s=Machine3.Temperature" in check.output
        async with running_connectors(config, kafka_broker.bootstrap_servers, topic, tmp_path):
            await out.wait_for(lambda s: any(x.metrics.get("temp") == 20.0 for x in s), 15, "initial state")
            for k in range(1, 6):
                await plant.write("Machine1", k)
                await out.wait_for(lambda s, k=k: any(x.metrics.get("speed") == k and x.metrics.get("temp") == 20 + k for x in s),
                                   15, f"state {k}")
            await out.poll()
            assert_exactly_once(out.samples)
            temps = [s.metrics["temp"] for s in sorted(out.samples, key=lambda s: s.seq)]
            assert temps == sorted(temps) and set(temps) == {20.0 + k for k in range(6)}, "every state seen, in order"
            assert all(abs((s.event_time - datetime.now(UTC)).total_seconds()) < 60 for s in out.samples), "server time"
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()
