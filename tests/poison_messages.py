"""A seeded generator of poison telemetry: valid samples mutated in many ways, for the fuzz tests.

Why a generator and not a list of cases: a list holds the kinds someone thought of; a
seeded generator that mixes mutations (types, bounds, encodings, sizes, keys, bytes)
finds the ones nobody did, and a failing seed reproduces. Used by
``tests/unit/test_poison_input.py`` (through the processor) and
``tests/integration/test_fuzz_input.py`` (through a real broker and worker).

Every message has its own entity id (``<prefix>-<n>``) unless it is aimed at one of a
few shared entities that also receive valid events, so the tests can check that a
twin hit by poison still applies the valid events after it.

>>> import random
>>> messages = list(poison_messages(random.Random(1), 50, prefix="t"))
>>> len(messages), all(isinstance(m.value, (bytes, type(None))) for m in messages)
(50, True)
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SENSORS = ("s2", "s3", "s4", "s7", "s11")

HUGE_INTS = [2**63 - 1, 2**63, 2**64, 2**70, -(2**63), -(2**70), 10**30, 10**400]
ODD_FLOATS = [float("inf"), float("-inf"), float("nan"), 1e300, -1e308, 1e15, -1e15, 1.0000001e15, 5e-324, -0.0, 1e-300]
ODD_STRINGS = ["", " ", "a/b", "x" * 128, "x" * 129, "x" * 5000, "ünïcode", "\u0000", "\ud800", "e\nx", "-lead",
               "a" * 64, "b" * 65, "null", "🙂"]
ODD_TIMES = ["yesterday", "2026-13-45T00:00:00Z", "2999-01-01T00:00:00Z", "2026-01-01T00:00:00",
             "0001-01-01T00:00:00Z", "0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00",
             "1969-12-31T23:59:59Z", "1970-01-01T00:00:00Z", "2199-12-31T23:59:59Z", "2262-04-12T00:00:00Z",
             "2026-01-01T00:00:00+23:59", "2026-01-01T00:00:00.123456789Z", "", 12345, -1, 1e20, None, [], {}]


@dataclass(frozen=True, slots=True)
class Message:
    """One message to send: key and value bytes, the entity it names, how it was made."""

    key: bytes | None
    value: bytes | None
    entity_id: str
    kind: str


def valid_body(rng: random.Random, entity_id: str, seq: int, *, now: datetime = T0) -> dict:
    return {
        "entity_id": entity_id,
        "event_time": (now + timedelta(minutes=seq)).isoformat(),
        "seq": seq,
        "metrics": {name: 500 + 10 * rng.random() for name in SENSORS},
        "targets": {"rul": float(200 - seq % 200)} if rng.random() < 0.5 else {},
        "source": "fuzz",
    }


FIELDS = ["entity_id", "event_time", "seq", "metrics", "targets", "source", "schema_version",
          "synthetic", "generator", "confidence", "metric", "target", "metric_name"]
SEQ_KINDS = frozenset({2, 6, 18, 22})  # mutations that can leave a valid message with another seq


def _set_path(rng: random.Random, body: dict, value: object, keep_seq: bool) -> str:
    """Put ``value`` at a random field (or inside metrics/targets); returns where."""
    where = rng.choice([f for f in FIELDS if not (keep_seq and f == "seq")])
    if where == "metric":
        body["metrics"][rng.choice(SENSORS)] = value
    elif where == "target":
        body.setdefault("targets", {})["rul"] = value
    elif where == "metric_name" and isinstance(value, str):
        body["metrics"][value] = 1.0
    else:
        body[where] = value
    return where


def _mutate(rng: random.Random, body: dict, keep_seq: bool = False) -> tuple[bytes | None, str]:
    """A mutation of ``body``; with ``keep_seq``, one that never yields a valid message with another seq."""
    kind = rng.randrange(24)
    while keep_seq and kind in SEQ_KINDS:
        kind = rng.randrange(24)
    if kind == 0:
        return rng.choice([b"", None]), "empty"
    if kind == 1:
        raw = json.dumps(body).encode()
        return raw[: rng.randrange(1, len(raw))], "truncated"
    if kind == 2:
        raw = bytearray(json.dumps(body).encode())
        for _ in range(rng.randrange(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw), "bit_flip"
    if kind == 3:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200))), "random_bytes"
    if kind == 4:
        return b"\xff\xfe" + json.dumps(body).encode(), "not_utf8"
    if kind == 5:
        body.pop(rng.choice(list(body)))
        return json.dumps(body).encode(), "missing_field"
    if kind == 6:
        body["seq"] = rng.choice(HUGE_INTS + ["x", -1, 1.5, None, True, "7", 1e19, [1]])
        return json.dumps(body).encode(), "seq"
    if kind == 7:
        where = _set_path(rng, body, rng.choice(ODD_FLOATS + HUGE_INTS), keep_seq)
        return json.dumps(body, allow_nan=True).encode(), f"number:{where}"
    if kind == 8:
        body["event_time"] = rng.choice(ODD_TIMES)
        return json.dumps(body).encode(), "event_time"
    if kind == 9:
        where = _set_path(rng, body, rng.choice(ODD_STRINGS), keep_seq)
        return json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass"), f"string:{where}"
    if kind == 10:
        body["schema_version"] = rng.choice([0, 2, "1", None, 1.0, True])
        return json.dumps(body).encode(), "schema_version"
    if kind == 11:
        body[rng.choice(["extra", "Entity_id", "seq "])] = "z" * rng.choice([10, 70_000, 300_000, 900_000])
        return json.dumps(body).encode(), "extra_field"
    if kind == 12:
        return json.dumps(rng.choice([[body], "text", 7, None, True, []])).encode(), "not_an_object"
    if kind == 13:
        body["metrics"] = {f"m{j}": 1.0 for j in range(rng.choice([255, 256, 257, 1024, 1025, 5000]))}
        return json.dumps(body).encode(), "many_metrics"
    if kind == 14:
        body["metrics"] = rng.choice([[], "abc", {"s2": "NaN"}, {"s2": {"a": 1}}, {"": 1}, {}, {"s2": None},
                                      {"s2": True}, {"s2": "1.5"}, None])
        return json.dumps(body).encode(), "metrics_shape"
    if kind == 15:
        body["synthetic"] = rng.choice([True, False, "yes", 1])
        body["confidence"] = rng.choice([{"s2": -1}, {"s2": float("nan")}, {"s2": "x"}, {"s2": 1e16}, {"zz": 1.0},
                                         {"s2": 0.5}])
        if rng.random() < 0.5:
            body["generator"] = rng.choice(["g-v1", "x" * 200, None, 3])
        return json.dumps(body, allow_nan=True).encode(), "synthetic"
    if kind == 16:
        body["targets"] = rng.choice([{"rul": float("nan")}, {"rul": "x"}, [], {"rul": 2**70}, {"rul": None},
                                      {f"t{j}": 1.0 for j in range(100)}, {"rul": 1e16}])
        return json.dumps(body, allow_nan=True).encode(), "targets"
    if kind == 17:
        depth = rng.choice([10, 100, 5000])
        return ("[" * depth + "]" * depth).encode(), "deep_nesting"
    if kind == 18:
        raw = json.dumps(body)
        return (raw[:-1] + ', "seq": 1}').encode(), "duplicate_key"
    if kind == 19:
        return json.dumps(body).encode() + rng.choice([b" trailing", b"\x00", b"}", b"\n"]), "trailing"
    if kind == 20:
        return json.dumps(body).replace(": ", ":" + " " * rng.randrange(1, 50)).encode(), "whitespace"
    if kind == 21:
        body["metrics"] = {name: rng.choice([None, 1e15, -1e15, 0.0, 1e-308]) for name in SENSORS}
        return json.dumps(body).encode(), "extreme_but_valid"
    if kind == 22:
        body["seq"] = rng.choice([2**63 - 1, 2**62, 10**18])
        return json.dumps(body).encode(), "seq_large_valid"
    body["event_time"] = rng.choice(["1970-01-01T00:00:00Z", "2026-01-01T00:00:00-12:00", "2199-01-01T00:00:00+14:00"])
    return json.dumps(body).encode(), "time_edge"


def _key(rng: random.Random, entity_id: str) -> bytes | None:
    roll = rng.random()
    if roll < 0.9:
        return entity_id.encode()
    return rng.choice([b"", b"other", None, b"\xff\xfe", b"k" * 5000, entity_id.upper().encode()])


def poison_messages(rng: random.Random, count: int, *, prefix: str, shared: int = 5,
                    now: datetime = T0) -> Iterator[Message]:
    """``count`` messages: most mutated, each for its own entity; 1 in 10 aimed at one of ``shared`` entities.

    A message for a shared entity is a valid next sample or a mutation of one that keeps
    its seq; either uses up that seq, so every valid sample of a shared entity is new
    (a rejected one leaves a gap) and must be predicted.
    """
    next_seq = [0] * shared
    for n in range(count):
        if shared and rng.random() < 0.1:
            which = rng.randrange(shared)
            entity_id = f"{prefix}-shared{which}"
            body = valid_body(rng, entity_id, next_seq[which], now=now)
            next_seq[which] += 1
            if rng.random() < 0.5:
                yield Message(entity_id.encode(), json.dumps(body).encode(), entity_id, "valid_shared")
                continue
            value, kind = _mutate(rng, body, keep_seq=True)
            yield Message(entity_id.encode(), value, entity_id, f"shared:{kind}")
            continue
        entity_id = f"{prefix}-{n:06d}"
        value, kind = _mutate(rng, valid_body(rng, entity_id, 0, now=now))
        yield Message(_key(rng, entity_id), value, entity_id, kind)


def canaries(prefix: str, count: int = 100, entities: int = 10, *, now: datetime = T0) -> list[Message]:
    """Valid samples sent after the poison: ``count`` of them over ``entities`` entities, seq 0, 1, ..."""
    rng = random.Random(0)
    out = []
    for i in range(count):
        entity_id = f"{prefix}-canary{i % entities}"
        out.append(Message(entity_id.encode(), json.dumps(valid_body(rng, entity_id, i // entities, now=now)).encode(),
                           entity_id, "canary"))
    return out
