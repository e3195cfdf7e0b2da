"""Turn raw telemetry bytes into a :class:`Telemetry` or a precise rejection.

Why here and not in the schema: the reason for a rejection is an API. Operators
filter the dead-letter topic by reason, so each kind of bad input maps to one
:class:`RejectReason`, decided once, in this module.

What passes is bounded in every field (the schema's limits, :mod:`twinstream.schemas.telemetry`,
plus the worker's payload size, metric count and future skew), so it can always be
encoded and applied; the processor still turns any exception into a dead letter.

>>> from datetime import datetime, timezone
>>> now = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> decode_telemetry(b"", b"e1", now=now).reason
<RejectReason.EMPTY: 'empty'>
>>> decode_telemetry(b'{"entity_id": "e1"', b"e1", now=now).reason
<RejectReason.BAD_JSON: 'bad_json'>
>>> huge_seq = b'{"entity_id":"e1","event_time":"2025-12-31T23:59:00Z","seq":18446744073709551616,"metrics":{}}'
>>> decode_telemetry(huge_seq, b"e1", now=now).reason
<RejectReason.OUT_OF_RANGE: 'out_of_range'>
>>> ok = decode_telemetry(b'{"entity_id":"e1","event_time":"2025-12-31T23:59:00Z","seq":0,"metrics":{"a":1.5}}', b"e1", now=now)
>>> ok.entity_id, ok.metrics
('e1', {'a': 1.5})
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from twinstream.schemas.dead_letter import RejectReason
from twinstream.schemas.telemetry import SCHEMA_VERSION, Telemetry

DEFAULT_MAX_PAYLOAD = 64 * 1024
DEFAULT_MAX_FUTURE_SKEW = timedelta(minutes=5)
MAX_ERROR_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message cannot be used, with detail for a human."""

    reason: RejectReason
    error: str
    entity_id: str | None = None


def _reason_for(exc: ValidationError) -> RejectReason:
    errors = exc.errors(include_url=False)
    types = {error["type"] for error in errors}
    if "json_invalid" in types or "json_type" in types:
        return RejectReason.BAD_JSON
    if any(error["type"] == "model_type" and not error["loc"] for error in errors):
        return RejectReason.NOT_AN_OBJECT
    if any(error["loc"][:1] == ("schema_version",) for error in errors):
        return RejectReason.SCHEMA_VERSION
    if any("not finite" in str(error.get("msg", "")) for error in errors):
        return RejectReason.NON_FINITE
    if any(error["type"] in _RANGE_ERRORS or "out of range" in str(error.get("msg", "")) for error in errors):
        return RejectReason.OUT_OF_RANGE
    return RejectReason.INVALID


# pydantic's bound checks on numbers (seq < 0 or >= 2**63); lengths and counts stay "invalid"
_RANGE_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _summary(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in error["loc"]) or "<message>"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)[:MAX_ERROR_CHARS]


def _entity_hint(raw: bytes, key: bytes | None) -> str | None:
    if key:
        try:
            return key[:128].decode("utf-8")
        except UnicodeDecodeError:
            return None
    return None


def decode_telemetry(
    raw: bytes | None,
    key: bytes | None,
    *,
    now: datetime | None = None,
    max_payload: int = DEFAULT_MAX_PAYLOAD,
    max_future_skew: timedelta = DEFAULT_MAX_FUTURE_SKEW,
    max_metrics: int = 256,
) -> Telemetry | Rejection:
    """Validate one message; never raises for bad input."""
    if not raw:
        return Rejection(RejectReason.EMPTY, "empty message value", _entity_hint(b"", key))
    if len(raw) > max_payload:
        return Rejection(
            RejectReason.OVERSIZED, f"payload is {len(raw)} bytes, limit {max_payload}", _entity_hint(raw, key)
        )
    try:
        telemetry = Telemetry.model_validate_json(raw)
    except ValidationError as exc:
        reason = _reason_for(exc)
        detail = _summary(exc)
        if reason is RejectReason.SCHEMA_VERSION:
            detail = f"{detail} (this worker reads schema_version {SCHEMA_VERSION})"
        return Rejection(reason, detail, _entity_hint(raw, key))
    if len(telemetry.metrics) > max_metrics:
        return Rejection(
            RejectReason.INVALID, f"{len(telemetry.metrics)} metrics, limit {max_metrics}", telemetry.entity_id
        )
    if key is None:
        return Rejection(RejectReason.KEY_MISMATCH, "message has no key; the key must be the entity id", telemetry.entity_id)
    if key != telemetry.entity_id.encode("utf-8"):
        return Rejection(
            RejectReason.KEY_MISMATCH,
            f"message key {key[:128]!r} differs from entity_id {telemetry.entity_id!r}",
            telemetry.entity_id,
        )
    now = now or datetime.now(UTC)
    if telemetry.event_time > now + max_future_skew:
        return Rejection(
            RejectReason.FUTURE_TIMESTAMP,
            f"event_time {telemetry.event_time.isoformat()} is more than {max_future_skew} ahead of {now.isoformat()}",
            telemetry.entity_id,
        )
    return telemetry
