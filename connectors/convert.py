"""Readings and timestamps from payloads, servers and files, in the form telemetry takes.

Timestamps: ISO 8601 or epoch seconds / ms / ns, always aware UTC.

>>> to_datetime(1767225600, "s"), to_datetime(1767225600500, "ms").microsecond
(datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), 500000)
>>> to_datetime("2026-01-01T01:00:00+01:00", "iso")
datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc)
>>> to_datetime("2026-01-01 00:00:00", "iso").tzinfo   # naive times are read as UTC
datetime.timezone.utc
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_DIVISOR = {"s": 1.0, "ms": 1e3, "ns": 1e9}


def to_datetime(value: Any, unit: str) -> datetime:
    """Aware UTC datetime of ``value`` (``unit``: iso, s, ms, ns); naive datetimes are UTC."""
    if isinstance(value, datetime):
        moment = value
    elif unit == "iso":
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    elif unit == "ns":
        whole, rest = divmod(int(value), 1_000_000_000)
        return datetime.fromtimestamp(whole, UTC).replace(microsecond=rest // 1000)
    else:
        return datetime.fromtimestamp(float(value) / _DIVISOR[unit], UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def number(value: Any) -> float | None:
    """A reading as float: numbers, booleans (1/0) and numeric strings; None otherwise.

    >>> number(3), number(True), number("2.5"), number("on"), number(None)
    (3.0, 1.0, 2.5, None, None)
    """
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
