"""Modbus TCP connector against pymodbus's own TCP server, whose datastore the test writes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from connector_harness import Topic, assert_exactly_once, running_connectors, telemetry_topic, until
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.connectors.modbus_codec import encode

pytestmark = pytest.mark.integration
HOLDING, INPUT, COIL, DISCRETE = 3, 4, 1, 2
ORDERS = [("big", "big"), ("big", "little"), ("little", "big"), ("little", "little")]  # ABCD CDAB BADC DCBA


class Plant:
    """Two units: unit 1 a press whose holding registers change, unit 2 a pump with static values."""

    def __init__(self) -> None:
        def blocks() -> tuple:
            bits = [SimData(0, count=200, values=False, datatype=DataType.BITS)]
            return (bits, list(bits), [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)],
                    [SimData(0, count=200, values=0, datatype=DataType.REGISTERS)])

        self.devices = [SimDevice(1, simdata=blocks()), SimDevice(2, simdata=blocks())]
        self.port = free_port()
        self.server: ModbusTcpServer | None = None
        self.task: asyncio.Task | None = None
        self.state = 0

    async def _set(self, unit: int, function: int, address: int, values: list) -> None:
        assert self.server is not None
        await self.server.context.async_setValues(unit, function, address, values)

    async def write_state(self, k: int) -> None:
        """State k of the press: holding registers 0-19 in one write (a poll sees all of it or none)."""
        self.state = k
        registers = [k, 0]  # counter (uint16) and a spare register
        for byte_order, word_order in ORDERS:
            registers += encode(20.5 + k, "float32", byte_order, word_order)
        registers += encode(-k * 3, "int16", "big", "big") + [0]
        registers += encode(-1e6 - k / 4, "float64", "little", "little")
        registers += encode(70_000 + k, "int32", "big", "little")
        await self._set(1, HOLDING, 0, registers)

    async def start(self, with_name: bool = True) -> None:
        """Serve on the same port each time; the registers are set again (the data of a restarted device)."""
        self.server = ModbusTcpServer(self.devices, address=("127.0.0.1", self.port))
        self.task = asyncio.create_task(self.server.serve_forever())
        await until(lambda: self.server.transport is not None, 10, "modbus server listening")
        await self._set(2, INPUT, 0, encode(1234, "uint32", "big", "little"))
        await self._set(2, COIL, 3, [True])
        await self._set(2, DISCRETE, 7, [True])
        await self.write_state(self.state)
        if with_name:  # last: a connector that reads the name sees the state already set
            await self.write_name()

    async def write_name(self, name: str = "PRESS-1") -> None:
        await self._set(1, HOLDING, 100, [(ord(name[i]) << 8) | (ord(name[i + 1]) if i + 1 < len(name) else 0)
                                          for i in range(0, len(name), 2)])

    async def stop(self) -> None:
        if self.server is not None:
            try:  # pymodbus's shutdown can wait forever on a connection it keeps; the task is cancelled below
                await asyncio.wait_for(self.server.shutdown(), timeout=10)
            except TimeoutError:
                pass
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self.server = self.task = None


def modbus_config(port: int, max_s: float = 1.0) -> dict:
    floats = [{"name": f"temp_{b}_{w}", "address": 2 + 2 * i, "type": "float32", "byte_order": b, "word_order": w}
              for i, (b, w) in enumerate(ORDERS)]
    return {"sources": [{
        "type": "modbus", "name": "presses", "host": "127.0.0.1", "port": port, "interval_s": 0.05, "on_change": True,
        "timeout_s": 1.0, "reconnect": {"initial_s": 0.1, "max_s": max_s},
        "devices": [
            {"unit_id": 1, "entity_from": {"address": 100, "length": 8},
             "values": [{"name": "counter", "address": 0}, *floats,
                        {"name": "force", "address": 10, "type": "int16", "scale": 0.5, "offset": 1.0},
                        {"name": "energy", "address": 12, "type": "float64", "byte_order": "little", "word_order": "little"},
                        {"name": "cycles", "address": 16, "type": "int32", "word_order": "little"}]},
            {"unit_id": 2, "entity_id": "pump-2",
             "values": [{"name": "flow", "register": "input", "address": 0, "type": "uint32", "word_order": "little", "scale": 0.01},
                        {"name": "running", "register": "coil", "address": 3, "type": "bool"},
                        {"name": "alarm", "register": "discrete", "address": 7, "type": "bool"}]},
        ]}]}


def check_press(samples: list, states: list[int]) -> None:
    press = sorted((s for s in samples if s.entity_id == "PRESS-1"), key=lambda s: s.seq)
    assert [int(s.metrics["counter"]) for s in press] == states, "one sample per written state, in order"
    for sample in press:
        k = int(sample.metrics["counter"])
        for byte_order, word_order in ORDERS:
            assert sample.metrics[f"temp_{byte_order}_{word_order}"] == 20.5 + k, (byte_order, word_order)
        assert sample.metrics["force"] == -k * 3 * 0.5 + 1.0
        assert sample.metrics["energy"] == -1e6 - k / 4
        assert sample.metrics["cycles"] == 70_000 + k


async def write_and_see(plant: Plant, out: Topic, k: int, timeout_s: float = 15) -> None:
    await plant.write_state(k)
    await out.wait_for(lambda s: any(x.entity_id == "PRESS-1" and x.metrics["counter"] == k for x in s), timeout_s, f"state {k}")


def test_modbus_all_orders_scaled_once_per_state(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = Plant()
    n = 15

    async def scenario() -> None:
        await plant.start()
        async with running_connectors(modbus_config(plant.port), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            await out.wait_for(lambda s: any(x.metrics.get("counter") == 0 for x in s), 15, "state 0")
            for k in range(1, n):
                await write_and_see(plant, out, k)
            await asyncio.sleep(0.3)  # several more polls: unchanged values send nothing
            await out.poll()
            assert_exactly_once(out.samples)
            check_press(out.samples, list(range(n)))
            pumps = [s for s in out.samples if s.entity_id == "pump-2"]
            assert len(pumps) == 1 and pumps[0].metrics == {"flow": 12.34, "running": 1.0, "alarm": 1.0}
            assert conn.metrics.value("twinstream_connector_errors_total", source="presses") == 0
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()


def test_modbus_server_restart_reconnects_within_max_s(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = Plant()
    max_s = 1.0

    async def scenario() -> None:
        await plant.start()
        async with running_connectors(modbus_config(plant.port, max_s), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            source = conn.source("presses")
            await out.wait_for(lambda s: any(x.metrics.get("counter") == 0 for x in s), 15, "state 0")
            for k in range(1, 5):
                await write_and_see(plant, out, k)
            await plant.stop()
            await until(lambda: source.disconnected_at is not None, 10, "the connector noticing the server is gone")
            await asyncio.sleep(2 * max_s)  # down long enough for the backoff to reach its cap
            await plant.start()
            back_at = time.monotonic()
            await plant.write_state(5)  # at once, before the connector is back
            await until(lambda: source.connections >= 2, 10, "reconnect")
            assert source.connected_at - back_at <= max_s + 1.0, "reconnected within max_s"
            await out.wait_for(lambda s: any(x.metrics.get("counter") == 5 for x in s), 15, "the first value after the restart")
            for k in range(6, 10):
                await write_and_see(plant, out, k)
            await out.poll()
            assert_exactly_once(out.samples)
            check_press(out.samples, list(range(10)))
            assert conn.metrics.value("twinstream_connector_reconnects_total", source="presses") == 1
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()


def test_modbus_empty_entity_id_is_read_again_not_kept(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    """A device that serves its name registers empty at first: polls are skipped and counted, then its samples flow."""
    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    out = Topic(kafka_broker.bootstrap_servers, topic)
    plant = Plant()
    plant.state = 3

    async def scenario() -> None:
        await plant.start(with_name=False)
        async with running_connectors(modbus_config(plant.port), kafka_broker.bootstrap_servers, topic, tmp_path) as conn:
            source = conn.source("presses")
            await until(lambda: conn.metrics.value("twinstream_connector_dropped_total", source="presses",
                                                   reason="no_entity") >= 3, 15, "polls skipped for the empty name")
            await plant.write_name()
            await out.wait_for(lambda s: any(x.entity_id == "PRESS-1" for x in s), 15, "the press's first sample")
            await write_and_see(plant, out, 4)
            await out.poll()
            assert_exactly_once(out.samples)
            check_press(out.samples, [3, 4])
            assert source.connections == 1, "an empty name is not a connection failure"
        await plant.stop()

    try:
        asyncio.run(scenario())
    finally:
        out.close()
