"""The disk buffer between the sources and Kafka: every sample is written here first.

Why every sample, not only during outages: a sample and its sequence number are
committed together (outbox pattern), so neither a Kafka outage nor a connector crash
loses an acknowledged reading or reuses a seq. The sender (:mod:`.sink`) reads rows in
insertion order and deletes them only after Kafka acknowledged them, which keeps the
per-entity order. A sample sent but not yet deleted when the process dies is sent again
with the same (entity, seq), which the twins skip as a duplicate.

Bounds are explicit: ``max_bytes`` of payload and ``max_age_s``. When full, ``overflow:
drop_oldest`` deletes the oldest samples (counted in ``dropped{reason="overflow"}``) and
``block`` holds the sources back until the sender frees space; samples older than
``max_age_s`` are dropped as ``expired``.

>>> import asyncio, datetime
>>> buf = DiskBuffer(":memory:", max_bytes=10_000, max_age_s=3600)
>>> t = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
>>> asyncio.run(buf.put("line1", "press-1", t, {"temp": 21.5}))
0
>>> rows = buf.peek(10); [(r.entity, r.seq) for r in rows], buf.depth()
([('press-1', 0)], (1, ...))
>>> buf.ack(rows)["line1"], buf.depth()
(1, (0, 0))
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import ValidationError

from twinstream.connectors.metrics import ConnectorMetrics
from twinstream.connectors.seqstore import SeqStore
from twinstream.schemas.telemetry import Telemetry

log = logging.getLogger(__name__)


class InvalidSample(ValueError):
    """The mapped sample is not valid telemetry (bad entity id, infinite value, ...)."""


@dataclass(frozen=True, slots=True)
class BufferedRow:
    id: int
    source: str
    entity: str
    seq: int
    value: bytes


class DiskBuffer:
    """SQLite-backed FIFO of telemetry messages, bounded by bytes and age."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int,
        max_age_s: float,
        overflow: Literal["drop_oldest", "block"] = "drop_oldest",
        metrics: ConnectorMetrics | None = None,
        validate: bool = True,
    ) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")  # WAL: a crash loses no committed row, a power cut at most the last ones
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,"
            " entity TEXT NOT NULL, seq INTEGER NOT NULL, created REAL NOT NULL, value BLOB NOT NULL)"
        )
        self.seqs = SeqStore(self.conn)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.overflow = overflow
        self.metrics = metrics or ConnectorMetrics()
        self.validate = validate
        self._count: dict[str, int] = defaultdict(int)
        self._bytes: dict[str, int] = defaultdict(int)
        for source, count, size in self.conn.execute("SELECT source, COUNT(*), SUM(LENGTH(value)) FROM samples GROUP BY source"):
            self._count[source], self._bytes[source] = int(count), int(size or 0)
            self._gauges(source)
        self._space = asyncio.Event()
        self._data = asyncio.Event()
        self._last_expiry = 0.0

    # --- accounting ----------------------------------------------------------------------

    def depth(self) -> tuple[int, int]:
        """(samples, bytes) waiting, over all sources."""
        return sum(self._count.values()), sum(self._bytes.values())

    def _gauges(self, source: str) -> None:
        self.metrics.buffer_samples.labels(source).set(self._count[source])
        self.metrics.buffer_bytes.labels(source).set(self._bytes[source])

    def _removed(self, rows: list[tuple[str, int]]) -> dict[str, int]:
        per_source: dict[str, int] = defaultdict(int)
        for source, size in rows:
            self._count[source] -= 1
            self._bytes[source] -= int(size)
            per_source[source] += 1
        for source in per_source:
            self._gauges(source)
        if per_source:
            self._space.set()
        return per_source

    # --- writing -------------------------------------------------------------------------

    def encode(self, source: str, entity: str, seq: int, event_time: datetime, metrics: dict[str, float | None]) -> bytes:
        message = {"entity_id": entity, "event_time": event_time, "seq": seq, "metrics": metrics,
                   "source": source, "schema_version": 1, "synthetic": False}
        if self.validate:
            try:
                Telemetry.model_validate(message)
            except ValidationError as exc:
                raise InvalidSample(f"source {source!r} entity {entity!r}: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
        return orjson.dumps(message)

    async def put(
        self, source: str, entity: str, event_time: datetime, metrics: dict[str, float | None], *, seq: int | None = None
    ) -> int:
        """Assign the entity's next seq (or record ``seq``) and store the sample; returns the seq.

        Raises :class:`InvalidSample` (nothing stored, no seq used) if it is not valid telemetry.
        """
        metrics = {name: (None if v is not None and math.isnan(v) else v) for name, v in metrics.items()}
        if self.overflow == "block":
            while sum(self._bytes.values()) >= self.max_bytes:
                self._space.clear()
                await self._space.wait()
        self.conn.execute("BEGIN")
        try:
            if seq is None:
                seq = self.seqs.reserve(entity)
            else:
                self.seqs.at_least(entity, seq)
            value = self.encode(source, entity, seq, event_time, metrics)
            self.conn.execute(
                "INSERT INTO samples (source, entity, seq, created, value) VALUES (?, ?, ?, ?, ?)",
                (source, entity, seq, time.time(), value),
            )
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            self.seqs.forget_cache()
            raise
        self._count[source] += 1
        self._bytes[source] += len(value)
        self._gauges(source)
        self.metrics.samples_buffered.labels(source).inc()
        self._data.set()
        if self.overflow == "drop_oldest" and sum(self._bytes.values()) > self.max_bytes:
            self._drop_oldest()
        return seq

    def _drop_oldest(self) -> None:
        while (excess := sum(self._bytes.values()) - self.max_bytes) > 0:
            samples, size = self.depth()
            batch = max(1, math.ceil(excess / max(1, size / max(1, samples))))
            rows = self.conn.execute(
                "DELETE FROM samples WHERE id IN (SELECT id FROM samples ORDER BY id LIMIT ?) RETURNING source, LENGTH(value)",
                (batch,),
            ).fetchall()
            if not rows:
                break
            for source, count in self._removed(rows).items():
                self.metrics.dropped.labels(source, "overflow").inc(count)
                log.warning("buffer full: dropped %d oldest samples of source %s", count, source)

    def expire(self, now: float | None = None) -> int:
        """Drop samples older than ``max_age_s`` (counted as ``expired``); returns how many."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "DELETE FROM samples WHERE created < ? RETURNING source, LENGTH(value)", (now - self.max_age_s,)
        ).fetchall()
        for source, count in self._removed(rows).items():
            self.metrics.dropped.labels(source, "expired").inc(count)
            log.warning("dropped %d samples of source %s older than %.0f s", count, source, self.max_age_s)
        return len(rows)

    # --- reading (the sender) ------------------------------------------------------------

    def peek(self, limit: int) -> list[BufferedRow]:
        """The oldest ``limit`` samples, in insertion order (expired ones dropped first, at most once a second)."""
        now = time.time()
        if now - self._last_expiry >= 1.0:
            self._last_expiry = now
            self.expire(now)
        return [BufferedRow(*row) for row in self.conn.execute(
            "SELECT id, source, entity, seq, value FROM samples ORDER BY id LIMIT ?", (limit,))]

    def ack(self, rows: list[BufferedRow]) -> dict[str, int]:
        """Delete samples Kafka acknowledged; returns samples removed per source."""
        if not rows:
            return {}
        removed = self.conn.execute(
            "DELETE FROM samples WHERE id >= ? AND id <= ? RETURNING source, LENGTH(value)", (rows[0].id, rows[-1].id)
        ).fetchall()
        return self._removed(removed)

    async def wait_for_data(self, timeout_s: float) -> None:
        """Return when a sample was added since the last call (or after ``timeout_s``)."""
        try:
            await asyncio.wait_for(self._data.wait(), timeout_s)
        except TimeoutError:
            pass
        self._data.clear()

    def close(self) -> None:
        self.conn.close()
