"""Modbus TCP source (pymodbus 3.x): poll devices, one sample per device and poll.

Why contiguous block reads: one request per register range instead of one per value
keeps a poll of a device with dozens of values to a few round trips. Why errors are
counted, not fatal: one illegal address or one timed-out request must not kill the
poller (operators' most common complaint); only a dead connection, or several failed
requests in a row, ends the session and goes through the reconnect backoff.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from twinstream.connectors.buffer import DiskBuffer
from twinstream.connectors.config import ModbusDevice, ModbusSource, ModbusValue
from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.modbus_codec import decode, decode_string
from twinstream.connectors.source import PlantSource

log = logging.getLogger(__name__)
_BIT_BLOCK = 2000  # most coils / discrete inputs in one request (Modbus limit)


class ReadError(RuntimeError):
    """The device answered a read with a Modbus exception (illegal address, ...)."""


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``address``."""

    table: str
    address: int
    count: int
    values: tuple[ModbusValue, ...]


def plan_blocks(values: list[ModbusValue], max_block: int) -> list[Block]:
    """Group values into as few contiguous reads as the block limit allows.

    >>> from twinstream.connectors.config import ModbusValue as V
    >>> vs = [V(name="a", address=0, type="float32"), V(name="b", address=2), V(name="c", address=300),
    ...       V(name="d", register="coil", address=5, type="bool")]
    >>> [(b.table, b.address, b.count, [v.name for v in b.values]) for b in plan_blocks(vs, 100)]
    [('coil', 5, 1, ['d']), ('holding', 0, 3, ['a', 'b']), ('holding', 300, 1, ['c'])]
    """
    blocks: list[Block] = []
    for table in sorted({v.table for v in values}):
        limit = _BIT_BLOCK if table in ("coil", "discrete") else max_block
        current: list[ModbusValue] = []
        start = end = 0
        for value in sorted((v for v in values if v.table == table), key=lambda v: v.address):
            stop = value.address + value.registers
            if current and stop - start <= limit:
                current.append(value)
                end = max(end, stop)
                continue
            if current:
                blocks.append(Block(table, start, end - start, tuple(current)))
            current, start, end = [value], value.address, stop
        if current:
            blocks.append(Block(table, start, end - start, tuple(current)))
    return blocks


class ModbusPlantSource(PlantSource):
    kind = "modbus"
    max_consecutive_errors = 3

    def __init__(self, config: ModbusSource, buffer: DiskBuffer, metrics: ConnectorMetrics) -> None:
        super().__init__(config.name, config.reconnect, buffer, metrics)
        self.config = config
        self.plans = [plan_blocks(device.values, config.max_block) for device in config.devices]
        self._last: dict[str, dict[str, float | None]] = {}
        self.polls = 0

    async def _read(self, client: AsyncModbusTcpClient, table: str, address: int, count: int, unit: int) -> list:
        read = {
            "holding": client.read_holding_registers, "input": client.read_input_registers,
            "coil": client.read_coils, "discrete": client.read_discrete_inputs,
        }[table]
        response = await read(address, count=count, device_id=unit)
        if response.isError():
            raise ReadError(f"unit {unit} {table} {address}+{count}: {response}")
        return list(response.bits[:count]) if table in ("coil", "discrete") else list(response.registers)

    async def session(self) -> None:
        cfg = self.config
        client = AsyncModbusTcpClient(cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0, reconnect_delay=0)
        try:
            if not await client.connect():
                raise ConnectionError(f"cannot connect to {cfg.host}:{cfg.port}")
            self.on_connected()
            entities: dict[int, str] = {}
            errors = 0
            loop = asyncio.get_running_loop()
            next_poll = loop.time()
            while True:
                for index, device in enumerate(cfg.devices):
                    try:
                        if index not in entities:
                            entity = await self._entity(client, device)
                            if not entity:  # a device that restarted may serve its name registers empty at first
                                self._no_entity(device)
                                continue
                            entities[index] = entity
                        await self._poll_device(client, device, self.plans[index], entities[index])
                        errors = 0
                    except (TimeoutError, ModbusException, ReadError) as exc:
                        errors += 1
                        self.metrics.errors.labels(self.name).inc()
                        log.warning("modbus source %s unit %d: %s", self.name, device.unit_id, exc)
                        if not client.connected or errors >= self.max_consecutive_errors:
                            raise ConnectionError(f"{errors} failed reads in a row, last: {exc}") from exc
                self.polls += 1
                next_poll += cfg.interval_s
                delay = next_poll - loop.time()
                if delay < 0:  # a slow poll: skip the missed slots instead of bursting
                    next_poll, delay = loop.time(), 0.0
                await asyncio.sleep(delay)
        finally:
            client.close()

    def _no_entity(self, device: ModbusDevice) -> None:
        """Count a poll skipped for an empty entity id; the id is read again on the next poll.

        Why not cache it: every sample of the session would be invalid telemetry and dropped.
        """
        self.metrics.dropped.labels(self.name, "no_entity").inc()
        log.warning("modbus source %s unit %d: entity id registers are empty; poll skipped, read again next poll",
                    self.name, device.unit_id)

    async def _entity(self, client: AsyncModbusTcpClient, device: ModbusDevice) -> str:
        if device.entity_id is not None:
            return device.entity_id
        spec = device.entity_from
        assert spec is not None
        registers = await self._read(client, spec.table, spec.address, (spec.length + 1) // 2, device.unit_id)
        return decode_string(registers, spec.length, spec.byte_order)

    async def _poll_device(self, client: AsyncModbusTcpClient, device: ModbusDevice, blocks: list[Block], entity: str) -> None:
        values: dict[str, float | None] = {}
        for block in blocks:
            data = await self._read(client, block.table, block.address, block.count, device.unit_id)
            read_at = datetime.now(UTC)
            for value in block.values:
                offset = value.address - block.address
                raw = decode(data[offset:offset + value.registers], value.type, value.byte_order, value.word_order)
                values[value.name] = value.apply(float(raw))
        self.metrics.values_read.labels(self.name).inc(len(values))
        if self.config.on_change and self._last.get(entity) == values:
            return
        if await self.emit(entity, read_at, values):  # a dropped sample must not count as sent for on_change
            self._last[entity] = values
