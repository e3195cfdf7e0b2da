"""A fast path for the common valid telemetry message: orjson and a few checks instead of a pydantic model.

Why: validating each event through :class:`~twinstream.schemas.telemetry.Telemetry`
(pydantic plus its Python validators) was one of the largest costs of a worker's
per-event path. Almost every message is plainly valid, so this module accepts a message
only when it is sure the schema would accept it with the same values, and answers None
for anything else (unusual formats, lax coercions, bad values, synthetic fill details):
the caller then validates it as before. So what is rejected, and why, is decided by the
schema alone; this path only makes the accepted common case cheap. A unit test checks
that it agrees with the schema on valid and poisoned inputs.

>>> t = fast_telemetry(b'{"entity_id":"e1","event_time":"2026-01-01T00:00:00Z","seq":3,"metrics":{"a":1,"b":null}}')
>>> t.entity_id, t.seq, t.metrics, t.event_time.isoformat()
('e1', 3, {'a': 1.0, 'b': None}, '2026-01-01T00:00:00+00:00')
>>> fast_telemetry(b'{"entity_id":"e1","event_time":"2026-01-01T00:00:00Z","seq":"3","metrics":{}}') is None  # lax: leave to the schema
True
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import orjson
from pydantic_core import TzInfo

from twinstream.schemas.telemetry import (
    MAX_ABS_VALUE,
    MAX_EVENT_TIME,
    MAX_METRICS,
    MAX_NAME_CHARS,
    MAX_SEQ,
    MAX_TARGETS,
    MIN_EVENT_TIME,
    SCHEMA_VERSION,
    Telemetry,
)

# The schema's patterns (schemas/telemetry.py), matched in full.
_ENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*")
_METRIC = re.compile(r"[A-Za-z0-9_.\-]+")
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")
# RFC 3339 as producers write it; anything else (other separators, no seconds, > 6 fraction digits) goes to the schema
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")
_FIELDS = frozenset(Telemetry.model_fields)
_TZ: dict[int, TzInfo] = {}


def _values(values: Any, limit: int, allow_none: bool) -> dict[str, float | None] | None:
    """Name -> float map as the schema reads it, or None when unsure."""
    if type(values) is not dict or len(values) > limit:
        return None
    out: dict[str, float | None] = {}
    for name, value in values.items():
        if len(name) > 64 or not _METRIC.fullmatch(name):
            return None
        kind = type(value)
        if kind is float or kind is int:
            value = float(value)
            if not (math.isfinite(value) and -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE):
                return None
        elif value is not None or not allow_none:
            return None
        out[name] = value
    return out


def _moment(text: Any) -> datetime | None:
    if type(text) is not str or not _TIME.fullmatch(text):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = moment.utcoffset()
    if offset is None:
        return None
    seconds = int(offset.total_seconds())
    tz = _TZ.get(seconds)
    if tz is None:
        tz = _TZ[seconds] = TzInfo(seconds)  # the schema's time zone type, so the value is the same object kind
    moment = moment.replace(tzinfo=tz)
    return moment if MIN_EVENT_TIME <= moment < MAX_EVENT_TIME else None


def _name(value: Any, limit: int, pattern: re.Pattern[str] | None = None) -> bool:
    return type(value) is str and 0 < len(value) <= limit and (pattern is None or pattern.fullmatch(value) is not None)


def fast_telemetry(raw: bytes) -> Telemetry | None:
    """The message as the schema would read it, when it is a plainly valid one; else None (ask the schema)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(body) is not dict or not _FIELDS.issuperset(body):
        return None
    entity_id, seq = body.get("entity_id"), body.get("seq")
    if not _name(entity_id, MAX_NAME_CHARS, _ENTITY) or type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        return None
    event_time = _moment(body.get("event_time"))
    metrics = _values(body.get("metrics"), MAX_METRICS, allow_none=True)
    targets = _values(body.get("targets", {}), MAX_TARGETS, allow_none=False)
    if event_time is None or metrics is None or targets is None:
        return None
    source, version, synthetic = body.get("source", "unknown"), body.get("schema_version", SCHEMA_VERSION), body.get("synthetic", False)
    generator, kind = body.get("generator"), body.get("kind")
    if (
        type(source) is not str
        or len(source) > MAX_NAME_CHARS
        or type(version) is not int
        or version != SCHEMA_VERSION
        or type(synthetic) is not bool
        or (generator is not None and not (synthetic and type(generator) is str and len(generator) <= MAX_NAME_CHARS))
        or (kind is not None and not _name(kind, 64, _KIND))
        or body.get("confidence", {}) != {}  # synthetic fill details: the schema checks them
        or body.get("fill", {}) != {}
    ):
        return None
    values = {
        "entity_id": entity_id,
        "event_time": event_time,
        "seq": seq,
        "metrics": metrics,
        "targets": targets,
        "source": source,
        "schema_version": version,
        "synthetic": synthetic,
        "generator": generator,
        "confidence": {},
        "fill": {},
        "kind": kind,
    }
    # What Telemetry.model_construct does, without its per-field default handling (the slow part).
    telemetry = Telemetry.__new__(Telemetry)
    object.__setattr__(telemetry, "__dict__", values)
    object.__setattr__(telemetry, "__pydantic_fields_set__", set(body))
    object.__setattr__(telemetry, "__pydantic_extra__", None)
    object.__setattr__(telemetry, "__pydantic_private__", None)
    return telemetry
