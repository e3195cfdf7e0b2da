"""Modbus register decoding: 16-bit registers -> numbers, with explicit byte and word order.

Why explicit: devices disagree on both orders of 32/64-bit values ("ABCD", "CDAB",
"BADC", "DCBA"), and a wrong guess gives plausible-looking garbage. ``word_order`` says
which register holds the most significant 16 bits (``big``: the first), ``byte_order``
which byte of each register comes first on the wire (``big``: the high byte). pymodbus
3.x's ``convert_from_registers`` handles the word order; byte swapping is done here.

>>> regs = encode(123.5, "float32", "big", "big"); regs
[17143, 0]
>>> [decode(encode(-7.25, "float64", b, w), "float64", b, w) for b in ("big", "little") for w in ("big", "little")]
[-7.25, -7.25, -7.25, -7.25]
>>> encode(0x11223344, "uint32", "big", "little"), encode(0x11223344, "uint32", "little", "big")
([13124, 4386], [8721, 17459])
>>> decode([0xFFFF], "int16", "big", "big"), decode([3], "bool", "big", "big")
(-1, True)
"""

from __future__ import annotations

from typing import Literal

from pymodbus.client import AsyncModbusTcpClient

Order = Literal["big", "little"]
_TYPES = {
    "int16": AsyncModbusTcpClient.DATATYPE.INT16, "uint16": AsyncModbusTcpClient.DATATYPE.UINT16,
    "int32": AsyncModbusTcpClient.DATATYPE.INT32, "uint32": AsyncModbusTcpClient.DATATYPE.UINT32,
    "int64": AsyncModbusTcpClient.DATATYPE.INT64, "uint64": AsyncModbusTcpClient.DATATYPE.UINT64,
    "float32": AsyncModbusTcpClient.DATATYPE.FLOAT32, "float64": AsyncModbusTcpClient.DATATYPE.FLOAT64,
}


def swap_bytes(registers: list[int]) -> list[int]:
    """Exchange the two bytes of every register (``0x1234 -> 0x3412``)."""
    return [((r & 0xFF) << 8) | ((r >> 8) & 0xFF) for r in registers]


def decode(registers: list[int], type_: str, byte_order: Order, word_order: Order) -> float | int | bool:
    """The value held by ``registers`` (as read, lowest address first)."""
    if type_ == "bool":
        return any(registers)
    regs = swap_bytes(registers) if byte_order == "little" else list(registers)
    value = AsyncModbusTcpClient.convert_from_registers(regs, _TYPES[type_], word_order=word_order)
    assert isinstance(value, (int, float))
    return value


def encode(value: float | int | bool, type_: str, byte_order: Order, word_order: Order) -> list[int]:
    """Registers a device with these orders would hold for ``value`` (the inverse of :func:`decode`)."""
    if type_ == "bool":
        return [1 if value else 0]
    number = int(value) if type_.startswith(("int", "uint")) else float(value)
    regs = AsyncModbusTcpClient.convert_to_registers(number, _TYPES[type_], word_order=word_order)
    return swap_bytes(regs) if byte_order == "little" else regs


def decode_string(registers: list[int], length: int, byte_order: Order) -> str:
    """ASCII/UTF-8 text, two characters per register, NULs and blanks at the end removed.

    >>> decode_string([0x5031, 0x2D41, 0], 6, "big"), decode_string([0x3150], 2, "little")
    ('P1-A', 'P1')
    """
    regs = swap_bytes(registers) if byte_order == "little" else registers
    raw = b"".join(r.to_bytes(2, "big") for r in regs)[:length]
    return raw.split(b"\x00", 1)[0].decode("utf-8", errors="replace").strip()
