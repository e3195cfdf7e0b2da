"""A checkpoint's snapshot pickles its twins later, yet holds each as it was when the snapshot began.

The processor alone, no broker: the snapshot's bytes are compared with the twins' bytes
taken at the moment it began, after the batch path, an eviction or a prior swap changed
or dropped some of them first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ENTITIES = ("e1", "e2", "e3")


def telemetry(entity: str, seq: int) -> bytes:
    return json.dumps({
        "entity_id": entity, "event_time": (NOW - timedelta(minutes=10 - seq)).isoformat(), "seq": seq,
        "metrics": {"a": 1.0 + seq, "b": 2.0 - seq * 0.1}, "targets": {"rul": 100.0 - seq},
    }).encode()


class Harness:
    def __init__(self, **settings: object) -> None:
        self.now = NOW
        self.processor = TwinProcessor(Settings(**{"twins_spec": "none", "learner": "river-linear", **settings}),
                                       lambda _entity: None, clock=lambda: self.now)
        self.offset = 0

    def feed(self, entity: str, seq: int) -> None:
        self.offset += 1
        out = self.processor.process([Record(entity.encode(), telemetry(entity, seq), "twinstream.telemetry", 0, self.offset)])
        assert len(out.predictions) == 1, out.dead_letters

    def feed_all(self, seq: int = 0) -> None:
        for entity in ENTITIES:
            self.feed(entity, seq)

    def states(self) -> dict[str, bytes]:
        return {entity: twin.to_bytes() for entity, twin in self.processor.twins.items()}


def test_a_twin_changed_after_the_snapshot_began_is_kept_as_it_was() -> None:
    h = Harness()
    h.feed_all()
    before = h.states()
    snapshot = h.processor.begin_snapshot()
    assert set(snapshot.pending) == set(ENTITIES) and snapshot.blobs == {}  # nothing pickled in line
    h.feed("e3", 1)  # the batch path changes two twins before the snapshot got to them
    h.feed("e1", 1)
    assert set(snapshot.pending) == {"e2"}
    assert not h.processor.snapshot_some(0) and h.processor.snapshot_some(1)
    assert snapshot.blobs == before
    assert h.states()["e1"] != before["e1"] and h.processor.dirty == {"e1", "e3"}  # the next checkpoint's
    assert snapshot.by_partition() == {0: [(entity, before[entity]) for entity in ("e3", "e1", "e2")]}


def test_an_idle_twin_is_pickled_before_it_is_evicted() -> None:
    h = Harness(twin_idle_evict_s=60.0)
    h.feed_all()
    h.processor.take_dirty()
    h.now += timedelta(seconds=30)
    h.feed("e2", 1)
    before = h.states()
    h.now += timedelta(seconds=45)  # e1 and e3 idle for 75 s, e2 for 45 s
    snapshot = h.processor.begin_snapshot()  # e2 is the only dirty twin, and not idle
    assert set(snapshot.pending) == {"e2"} and set(h.processor.twins) == {"e2"}
    h.now += timedelta(seconds=30)
    assert h.processor.evict_idle() == 1  # e2, still waited for: pickled first
    assert snapshot.complete and snapshot.blobs == {"e2": before["e2"]}


def test_a_prior_swap_gets_the_twins_after_the_snapshot_has_them() -> None:
    h = Harness()
    h.feed_all()
    before = h.states()
    snapshot = h.processor.begin_snapshot()
    twins = h.processor.twins_about_to_change()
    assert snapshot.complete and snapshot.blobs == before and len(twins) == len(ENTITIES)


def test_a_rebalance_abandons_the_snapshot() -> None:
    h = Harness()
    h.feed("e1", 0)
    snapshot = h.processor.begin_snapshot()
    h.processor.drop_all()
    assert h.processor.snapshot is not snapshot and h.processor.snapshot_some(10)
    h.processor.begin_snapshot()  # a new one may begin


def test_a_snapshot_may_not_begin_before_the_previous_is_complete() -> None:
    h = Harness()
    h.feed("e1", 0)
    h.processor.begin_snapshot()
    with pytest.raises(RuntimeError, match="incomplete"):
        h.processor.begin_snapshot()
