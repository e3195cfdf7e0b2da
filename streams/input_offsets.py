"""Which input offsets the checkpointed twin state reflects, per partition.

Why this exists: the promise "no lost and no double-applied update" needs one invariant,
*an input offset is committed only when the table state that will be read back after
any rebalance contains its effect*. Acknowledging events only after their checkpoint
gives that for the group's committed offsets, but the committed offsets are a second
copy of the truth, kept by a different system (the consumer group), and a rebalance can
separate the two. So every checkpoint also writes, next to the twins of a partition and
after them, a marker that names the next input offset of every input topic of that
partition. After each rebalance the worker reads the markers back from the recovered
table and makes the group's committed offsets equal to them before consuming resumes:
what is replayed then is exactly what the table lacks, whatever the group had committed.

The marker doubles as the one-record batch that ends each checkpoint on the changelog
(the embedded broker reports a partition's high watermark as the base offset of its last
record batch + 1, so without a trailing one-record batch the tail of a multi-record batch
would be invisible to changelog recovery).

>>> offsets = InputOffsets()
>>> offsets.advance("t", 0, 41)
>>> offsets.advance("s", 0, 7)
>>> offsets.advance("t", 1, 3)
>>> snapshot = offsets.snapshot()
>>> decode_marker(encode_marker(5, snapshot[0], now=0.0))
{'s': 8, 't': 42}
>>> decode_marker(b'{"checkpoint": 1, "time": 0}') is None  # a marker that names no offsets
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

MARKER_KEY_PREFIX = "__checkpoint__."


def marker_key(partition: int) -> bytes:
    """Table key of a partition's marker; not a valid entity id, so it never collides with a twin."""
    return f"{MARKER_KEY_PREFIX}{partition}".encode()


def encode_marker(checkpoint: int, offsets: dict[str, int], now: float) -> bytes:
    """Marker value: checkpoint number, wall time, and the next input offset per topic."""
    return orjson.dumps({"checkpoint": checkpoint, "time": now, "offsets": dict(sorted(offsets.items()))})


def decode_marker(blob: bytes | None) -> dict[str, int] | None:
    """Next input offset per topic from a marker, or None when it names none (or is unreadable)."""
    if not blob:
        return None
    try:
        value = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return None
    offsets = value.get("offsets") if isinstance(value, dict) else None
    if not isinstance(offsets, dict):
        return None
    return {str(topic): int(offset) for topic, offset in sorted(offsets.items()) if isinstance(offset, int)}


@dataclass
class InputOffsets:
    """Next input offset per (topic, partition): what the in-memory twins reflect.

    ``advance`` is called for every event applied to the in-memory twins; ``known``
    holds what the table is known to reflect (read back after a rebalance, or written by
    a checkpoint) so that a partition's marker keeps naming a topic that had no new
    events since the last checkpoint.
    """

    applied: dict[tuple[str, int], int] = field(default_factory=dict)
    known: dict[tuple[str, int], int] = field(default_factory=dict)

    def advance(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset + 1 > self.applied.get(key, -1):
            self.applied[key] = offset + 1

    def snapshot(self) -> dict[int, dict[str, int]]:
        """Offsets to write per partition at a checkpoint: partitions with applied events only."""
        touched = {partition for _, partition in self.applied}
        merged: dict[int, dict[str, int]] = {}
        for (topic, partition), offset in {**self.known, **self.applied}.items():
            if partition in touched:
                merged.setdefault(partition, {})[topic] = offset
        return merged

    def written(self, snapshot: dict[int, dict[str, int]]) -> None:
        """The snapshot is in the changelog: it becomes known, and applied starts afresh."""
        for partition, offsets in snapshot.items():
            for topic, offset in offsets.items():
                self.known[(topic, partition)] = offset
                if self.applied.get((topic, partition)) == offset:
                    del self.applied[(topic, partition)]

    def reset(self) -> None:
        """Forget everything (a rebalance): the table is read back before anything is applied."""
        self.applied.clear()
        self.known.clear()


class OffsetGuard:
    """Per input partition, the next offset the agent must apply: a skipped offset is never silent.

    Why: the table's markers say where each partition must resume, but between the
    broker and the agent sit a fetcher, Faust's read-offset bookkeeping and a take
    buffer, each of which has dropped or reordered records around a rebalance or a
    seek. So the agent checks every event against the offset it expects next (seeded
    from the markers after a rebalance): an earlier offset is already reflected (it is
    acknowledged, not applied again); a later one means records were skipped, so the
    partition is sought back to the expected offset and events are discarded until it
    arrives. While it waits, the seek is repeated every ``reseek_s``: Faust's fetch loop
    records the offset of every record it hands on, so records fetched before the seek
    and handed on after it can overwrite the sought position, and the fetch loop then
    drops the records the seek asked for. Input topics are neither compacted nor
    transactional, so their offsets are contiguous; should a partition really have a hole
    (a transactional producer's control records), the first offset after it is accepted
    once ``gap_timeout_s`` has passed without the expected offset arriving.

    >>> guard = OffsetGuard(gap_timeout_s=30.0)
    >>> guard.start({"t0": 10})
    >>> [guard.check("t0", o, now=0.0) for o in (9, 10, 11, 13)]
    ['ack', 'apply', 'apply', 'seek']
    >>> guard.check("t0", 14, now=1.0), guard.check("t0", 12, now=2.0), guard.check("t0", 13, now=2.0)
    ('discard', 'apply', 'apply')
    >>> guard.check("t0", 20, now=3.0), guard.check("t0", 21, now=4.0), guard.check("t0", 22, now=5.0)
    ('seek', 'discard', 'seek')
    >>> guard.check("t1", 500, now=3.0)  # no marker: the first offset seen starts the partition
    'apply'
    """

    APPLY, ACK, SEEK, DISCARD = "apply", "ack", "seek", "discard"

    def __init__(self, gap_timeout_s: float = 30.0, reseek_s: float = 2.0) -> None:
        self.gap_timeout_s = gap_timeout_s
        self.reseek_s = reseek_s
        self.expected: dict[object, int] = {}
        self.seeking: dict[object, float] = {}  # partition -> when it was first sought back
        self.last_seek: dict[object, float] = {}  # partition -> when it was last sought back

    def start(self, offsets: dict) -> None:
        """After a rebalance: expect each partition's marker offset (others start at their first event)."""
        self.expected = dict(offsets)
        self.seeking = {}
        self.last_seek = {}

    def check(self, tp: object, offset: int, now: float) -> str:
        expected = self.expected.get(tp)
        if expected is None or offset == expected:
            return self._take(tp, offset)
        if offset < expected:
            return self.ACK
        since = self.seeking.get(tp)
        if since is None:
            self.seeking[tp] = self.last_seek[tp] = now
            return self.SEEK
        if now - since >= self.gap_timeout_s:
            return self._take(tp, offset)
        if now - self.last_seek.get(tp, since) >= self.reseek_s:  # the seek may have been overwritten: again
            self.last_seek[tp] = now
            return self.SEEK
        return self.DISCARD

    def _take(self, tp: object, offset: int) -> str:
        self.expected[tp] = offset + 1
        self.seeking.pop(tp, None)
        self.last_seek.pop(tp, None)
        return self.APPLY
