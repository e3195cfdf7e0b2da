"""Idle twins leave worker memory after a checkpoint holds their state, and come back unchanged.

A processor with eviction on and one without see the same events; their predictions must
agree event for event, although the first one drops and reloads its twins in between.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def event(entity: str, seq: int) -> bytes:
    return json.dumps(
        {
            "entity_id": entity,
            "event_time": (START - timedelta(hours=1)).isoformat(),
            "seq": seq,
            "metrics": {"a": 1.0 + seq * 0.1, "b": 2.0 - seq * 0.05},
            "targets": {"rul": 100.0 - seq},
        }
    ).encode()


class Worker:
    def __init__(self, clock: Clock, **settings: object) -> None:
        self.table: dict[str, bytes] = {}
        self.loads: list[str] = []
        self.processor = TwinProcessor(Settings(twins_spec="none", learner="river-linear", **settings), self.load, clock=clock)
        self.offset = 0

    def load(self, entity_id: str) -> bytes | None:
        self.loads.append(entity_id)
        return self.table.get(entity_id)

    def feed(self, entity: str, seq: int) -> bytes:
        self.offset += 1
        out = self.processor.process([Record(entity.encode(), event(entity, seq), "twinstream.telemetry", 0, self.offset)])
        assert len(out.predictions) == 1, out
        return out.predictions[0][1]

    def checkpoint(self) -> None:
        for items in self.processor.take_dirty().values():
            self.table.update(items)


def test_idle_twins_are_evicted_after_checkpoint_and_reload_unchanged() -> None:
    clock = Clock()
    evicting, resident = Worker(clock, twin_idle_evict_s=60.0), Worker(clock)
    for worker in (evicting, resident):
        for seq in range(20):
            assert worker.feed("busy", seq) and worker.feed("quiet", seq)
        worker.checkpoint()
    assert set(evicting.processor.twins) == {"busy", "quiet"}

    clock.now += timedelta(seconds=50)
    for worker in (evicting, resident):
        worker.feed("busy", 20)
        worker.checkpoint()
    assert set(evicting.processor.twins) == {"busy", "quiet"}  # quiet for 50 s only

    clock.now += timedelta(seconds=20)  # quiet: 70 s idle, busy: 20 s
    for worker in (evicting, resident):
        worker.checkpoint()
    assert set(evicting.processor.twins) == {"busy"}
    assert set(resident.processor.twins) == {"busy", "quiet"}
    assert "quiet" not in evicting.processor.partition_of and "quiet" not in evicting.processor.journal.records

    loads = len(evicting.loads)
    for seq in range(21, 40):  # the evicted twin reloads from the table and goes on where it was
        assert evicting.feed("quiet", seq) == resident.feed("quiet", seq)
    assert evicting.loads[loads:] == ["quiet"]
    a, b = evicting.processor.twins["quiet"], resident.processor.twins["quiet"]
    assert (a.last_seq, a.updates, a.labelled) == (b.last_seq, b.updates, b.labelled) == (39, 39, 39)  # seq 20 never came


def test_dirty_twin_is_never_evicted() -> None:
    clock = Clock()
    worker = Worker(clock, twin_idle_evict_s=10.0)
    worker.feed("e1", 0)
    worker.checkpoint()
    worker.feed("e1", 1)  # changed since the checkpoint: only the next checkpoint may let it go
    clock.now += timedelta(seconds=30)
    assert worker.processor.evict_idle() == 0
    assert "e1" in worker.processor.twins and worker.processor.dirty == {"e1"}
    worker.checkpoint()
    assert "e1" not in worker.processor.twins
    later = Worker(clock)
    later.table = worker.table  # a fresh worker from the table sees both events
    later.feed("e1", 2)
    assert later.processor.twins["e1"].last_seq == 2 and later.processor.twins["e1"].updates == 3


def test_eviction_off_by_default() -> None:
    clock = Clock()
    worker = Worker(clock)
    worker.feed("e1", 0)
    clock.now += timedelta(days=30)
    worker.checkpoint()
    assert "e1" in worker.processor.twins  # take_dirty evicts nothing with eviction off
    assert Settings().twin_idle_evict_s == 0.0
