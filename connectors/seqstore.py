"""Per-entity sequence numbers that survive a connector restart (one SQLite table).

Why persisted: the sequence number is the platform's idempotency key. A connector that
restarted at seq 0 would have its new samples skipped as duplicates by the twins; one
that forgot nothing keeps the exactly-once effect end to end. The table lives in the
same SQLite file as the disk buffer, so a sample and the seq it took are committed in
one transaction (:class:`~twinstream.connectors.buffer.DiskBuffer`): after a crash
either both are on disk or neither.

>>> import sqlite3
>>> conn = sqlite3.connect(":memory:")
>>> store = SeqStore(conn)
>>> [store.reserve("press-1") for _ in range(3)], store.reserve("press-2")
([0, 1, 2], 0)
>>> conn.commit(); SeqStore(conn).reserve("press-1")
3
"""

from __future__ import annotations

import sqlite3


class SeqStore:
    """``reserve(entity)`` returns the entity's next seq; the caller commits."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS seq (entity TEXT PRIMARY KEY, next INTEGER NOT NULL) WITHOUT ROWID")
        self._next: dict[str, int] = {}

    def reserve(self, entity: str) -> int:
        seq = self._next.get(entity)
        if seq is None:
            row = self.conn.execute("SELECT next FROM seq WHERE entity = ?", (entity,)).fetchone()
            seq = 0 if row is None else int(row[0])
        self.conn.execute(
            "INSERT INTO seq (entity, next) VALUES (?, ?) ON CONFLICT(entity) DO UPDATE SET next = excluded.next",
            (entity, seq + 1),
        )
        self._next[entity] = seq + 1
        return seq

    def at_least(self, entity: str, seq: int) -> None:
        """Seqs taken from a file column: later reservations continue after them."""
        current = self._next.get(entity)
        if current is None:
            row = self.conn.execute("SELECT next FROM seq WHERE entity = ?", (entity,)).fetchone()
            current = 0 if row is None else int(row[0])
        if seq + 1 > current:
            self.conn.execute(
                "INSERT INTO seq (entity, next) VALUES (?, ?) ON CONFLICT(entity) DO UPDATE SET next = excluded.next",
                (entity, seq + 1),
            )
            self._next[entity] = seq + 1

    def forget_cache(self) -> None:
        """After a rolled-back transaction the cache may be ahead of the table."""
        self._next.clear()
