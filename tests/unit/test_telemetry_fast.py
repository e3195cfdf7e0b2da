"""The telemetry fast path accepts only what the schema accepts, with the same values.

``decode_telemetry`` tries :func:`fast_telemetry` first and asks the pydantic schema when
it answers None, so rejections are the schema's alone. Here every seeded poison message,
valid samples of many shapes and hand-picked edge cases are decoded both ways: with the
fast path and with the schema only. Results must be identical (same Telemetry values,
same rejection reason and text), and the fast path must take the common valid messages.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime

import pytest
from poison_messages import canaries, poison_messages

from twinstream.schemas.telemetry import Telemetry
from twinstream.streams import validation
from twinstream.streams.telemetry_fast import fast_telemetry
from twinstream.streams.validation import Rejection, decode_telemetry

NOW = datetime(2026, 1, 20, tzinfo=UTC)
BASE = {"entity_id": "e-1", "event_time": "2026-01-01T00:00:00Z", "seq": 1, "metrics": {"s2": 641.5, "s3": None}}

EDGE_CASES: list[dict] = [
    {},
    {"targets": {"rul": 12}},
    {"targets": {"rul": None}},
    {"targets": {"rul": True}},
    {"metrics": {"s2": True}},
    {"metrics": {"s2": 10**15}},
    {"metrics": {"s2": 10**15 + 1}},
    {"metrics": {"s2": -1e15}},
    {"metrics": {"": 1.0}},
    {"metrics": {"a" * 64: 1.0}},
    {"metrics": {"a" * 65: 1.0}},
    {"metrics": {"s 2": 1.0}},
    {"metrics": {f"m{i}": 1.0 for i in range(300)}},
    {"metrics": []},
    {"seq": 2**63 - 1},
    {"seq": 2**63},
    {"seq": -1},
    {"seq": 1.0},
    {"seq": True},
    {"seq": "1"},
    {"entity_id": "e\n"},
    {"entity_id": "-e"},
    {"entity_id": "e:1.a_b-c"},
    {"entity_id": "x" * 128},
    {"entity_id": "x" * 129},
    {"entity_id": 5},
    {"event_time": "2026-01-01T00:00:00+02:00"},
    {"event_time": "2026-01-01T00:00:00-00:00"},
    {"event_time": "2026-01-01T00:00:00.5Z"},
    {"event_time": "2026-01-01T00:00:00.123456Z"},
    {"event_time": "2026-01-01T00:00:00.1234567Z"},
    {"event_time": "2026-01-01 00:00:00Z"},
    {"event_time": "2026-01-01T00:00:00z"},
    {"event_time": "2026-01-01T00:00Z"},
    {"event_time": "2026-01-01T24:00:00Z"},
    {"event_time": "2026-02-30T00:00:00Z"},
    {"event_time": "2026-01-01T00:00:60Z"},
    {"event_time": "2026-01-01T00:00:00+24:00"},
    {"event_time": "1970-01-01T00:00:00Z"},
    {"event_time": "1970-01-01T00:00:00+01:00"},
    {"event_time": "2199-12-31T23:59:59Z"},
    {"event_time": "2200-01-01T00:00:00Z"},
    {"event_time": "2026-01-01T00:00:00"},
    {"event_time": 1767225600},
    {"source": "x" * 128},
    {"source": "x" * 129},
    {"source": None},
    {"schema_version": 1},
    {"schema_version": 2},
    {"schema_version": True},
    {"schema_version": 1.0},
    {"synthetic": True},
    {"synthetic": 1},
    {"synthetic": "true"},
    {"generator": "kalman"},
    {"generator": "kalman", "synthetic": True},
    {"confidence": {"s2": 1.0}, "synthetic": True},
    {"confidence": {}},
    {"fill": {}},
    {"kind": "turbofan"},
    {"kind": "-turbofan"},
    {"kind": ""},
    {"kind": None},
    {"extra": 1},
]


def edge_messages() -> list[bytes]:
    out = [json.dumps({**BASE, **patch}).encode() for patch in EDGE_CASES]
    out += [json.dumps({k: v for k, v in BASE.items() if k != missing}).encode() for missing in BASE]
    out += [b'{"entity_id":"e-1","entity_id":"e-2","event_time":"2026-01-01T00:00:00Z","seq":1,"metrics":{"a":1,"a":2}}']
    out += [b'{"entity_id":"e-1","event_time":"2026-01-01T00:00:00Z","seq":1,"metrics":{"a":NaN}}', b"[1]", b"1", b"{"]
    return out


def all_messages() -> list[tuple[bytes | None, bytes | None]]:
    out: list[tuple[bytes | None, bytes | None]] = [(b"e-1", raw) for raw in edge_messages()]
    for seed in (1, 2, 3):
        out += [(m.key, m.value) for m in poison_messages(random.Random(seed), 2000, prefix=f"f{seed}")]
    out += [(m.key, m.value) for m in canaries("c")]
    return out


def test_fast_path_agrees_with_the_schema() -> None:
    accepted = 0
    for _, raw in all_messages():
        if not raw:
            continue
        fast = fast_telemetry(raw)
        if fast is None:
            continue
        accepted += 1
        schema = Telemetry.model_validate_json(raw)  # raises if the fast path accepted what the schema refuses
        assert fast == schema and fast.__dict__ == schema.__dict__, raw
        assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in schema.__dict__.values()], raw
        assert type(fast.event_time.tzinfo) is type(schema.event_time.tzinfo), raw
        assert fast.model_dump_json() == schema.model_dump_json(), raw
    assert accepted >= 500  # the canaries and the poison generator's valid samples take the fast path


@pytest.mark.parametrize("patch", [{}, {"targets": {"rul": 3.5}, "kind": "turbofan"}, {"synthetic": True, "source": "x"}])
def test_common_messages_take_the_fast_path(patch: dict) -> None:
    assert fast_telemetry(json.dumps({**BASE, **patch}).encode()) is not None


def test_decode_is_the_same_with_and_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    messages = all_messages()
    with_fast = [decode_telemetry(raw, key, now=NOW, max_metrics=256) for key, raw in messages]
    monkeypatch.setattr(validation, "fast_telemetry", lambda raw: None)
    schema_only = [decode_telemetry(raw, key, now=NOW, max_metrics=256) for key, raw in messages]
    for (_, raw), a, b in zip(messages, with_fast, schema_only):
        assert type(a) is type(b), raw
        if isinstance(a, Rejection):
            assert a == b, raw
        else:
            assert a == b and a.__dict__ == b.__dict__, raw
    assert sum(isinstance(a, Rejection) for a in with_fast) > 1000
