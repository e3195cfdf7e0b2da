"""Decoding plant values: Modbus byte/word orders against known wire layouts, JSON paths, backoff caps."""

from __future__ import annotations

import struct

import pytest

from twinstream.connectors.backoff import Backoff
from twinstream.connectors.modbus_codec import decode, encode
from twinstream.connectors.mqtt import extract

# The four layouts of a 32-bit value 0xAABBCCDD as two registers (the names devices' manuals use).
LAYOUTS = {("big", "big"): "ABCD", ("big", "little"): "CDAB", ("little", "big"): "BADC", ("little", "little"): "DCBA"}


def registers_from(layout: str, raw: bytes) -> list[int]:
    """Registers as the wire carries them for a value whose big-endian bytes are ``raw`` (4 bytes: ABCD)."""
    byte = dict(zip("ABCD", raw))
    wire = bytes(byte[c] for c in layout)
    return [int.from_bytes(wire[i:i + 2], "big") for i in range(0, 4, 2)]


@pytest.mark.parametrize(("orders", "layout"), LAYOUTS.items())
@pytest.mark.parametrize(("type_", "value", "fmt"), [("float32", -1234.5, ">f"), ("int32", -123456789, ">i"),
                                                     ("uint32", 0xDEADBEEF, ">I")])
def test_32_bit_values_in_all_four_orders(orders, layout, type_, value, fmt) -> None:
    registers = registers_from(layout, struct.pack(fmt, value))
    assert decode(registers, type_, *orders) == value
    assert encode(value, type_, *orders) == registers


@pytest.mark.parametrize(("orders", "layout"), LAYOUTS.items())
def test_64_bit_values_in_all_four_orders(orders, layout) -> None:
    raw = struct.pack(">d", 6.02214076e23)
    words = [raw[i:i + 2] for i in range(0, 8, 2)]
    byte_order, word_order = orders
    if word_order == "little":
        words = words[::-1]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    registers = [int.from_bytes(w, "big") for w in words]
    assert decode(registers, "float64", byte_order, word_order) == 6.02214076e23
    assert decode(encode(-2**62, "int64", byte_order, word_order), "int64", byte_order, word_order) == -2**62


def test_16_bit_and_bool() -> None:
    assert decode([0x8000], "int16", "big", "big") == -32768
    assert decode([0x0080], "int16", "little", "big") == -32768
    assert decode([0xFFFF], "uint16", "big", "big") == 65535
    assert decode([0], "bool", "big", "big") is False


def test_json_paths() -> None:
    doc = {"a": {"b": [{"c": 1.5}]}, "flag": False}
    assert extract(doc, "a.b[0].c") == 1.5 and extract(doc, "$.flag") is False
    assert extract(doc, "a.b[3].c") is None and extract(doc, "a.x") is None and extract([1, 2], "[1]") == 2


def test_backoff_never_exceeds_max() -> None:
    backoff = Backoff(0.25, 3.0)
    delays = [backoff.next_delay() for _ in range(200)]
    assert max(delays) <= 3.0 and min(delays) >= 0.125
    assert max(delays[10:]) > 1.5, "it does grow to the cap"
