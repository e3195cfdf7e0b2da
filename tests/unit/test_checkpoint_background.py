"""A checkpoint's waits run in the background: the agent goes on, and nothing is acked early.

The broker is left out on purpose: sends, changelog records and markers are futures the
test resolves by hand, so every step of a checkpoint can be looked at while it waits.
Whether the real broker path holds is the failover and crash tests' job.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from twinstream.settings import Settings
from twinstream.streams import checkpoint as checkpoint_module
from twinstream.streams.app import create_app, declare_topics
from twinstream.streams.ingest import IngestAgent
from twinstream.streams.input_offsets import marker_key
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.records import Record

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def telemetry(entity: str, seq: int) -> bytes:
    return json.dumps({
        "entity_id": entity, "event_time": (START - timedelta(hours=1)).isoformat(), "seq": seq,
        "metrics": {"a": 1.0 + seq * 0.1, "b": 2.0 - seq * 0.05}, "targets": {"rul": 100.0 - seq},
    }).encode()


class Event:
    """What the checkpoint reads of a Faust event (a class: Faust's current-event slot holds a weak reference)."""

    def __init__(self, topic: str, offset: int) -> None:
        self.message = SimpleNamespace(topic=topic, partition=0, offset=offset)


class Harness:
    """An IngestAgent whose table writes, sends and acks are recorded instead of sent."""

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.settings = Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, twins_spec="none",
                                 learner="river-linear", gap_detection=False, **settings)
        app = create_app(self.settings)
        self.agent = IngestAgent(app, self.settings, declare_topics(app, self.settings), WorkerMetrics())
        self.topic = self.agent.telemetry.get_topic_name()
        self.store: dict[bytes, bytes] = {}
        self.writes: list[tuple[bytes, asyncio.Future[None]]] = []
        self.acked: list[int] = []
        self.sends: list[asyncio.Future[None]] = []
        self.now = START
        self.offset = 0
        self.agent.table = self.store  # type: ignore[assignment]  # what _load_twin reads
        self.agent._write_table = self._write_table  # type: ignore[method-assign]
        self.agent.stream = SimpleNamespace(ack=self._ack)  # type: ignore[assignment]
        self.agent.processor.clock = lambda: self.now

    def _write_table(self, partition: int, key: bytes, value: bytes) -> asyncio.Future[None]:
        self.store[key] = value
        future = asyncio.get_running_loop().create_future()
        self.writes.append((key, future))
        return future

    async def _ack(self, event: Any) -> None:
        self.acked.append(event.message.offset)

    def apply(self, entity: str, seq: int) -> bytes:
        """One event through the processor, with its prediction's send left unconfirmed."""
        self.offset += 1
        out = self.agent.processor.process([Record(entity.encode(), telemetry(entity, seq), self.topic, 0, self.offset)])
        event = Event(self.topic, self.offset)
        send = asyncio.get_running_loop().create_future()
        self.sends.append(send)
        pending = self.agent.pending
        pending.events.append(event)
        pending.sends.append(send)
        pending.last_event_of_partition[0] = event
        self.agent.offsets.advance(self.topic, 0, self.offset)
        return out.predictions[0][1]

    def confirm(self, futures: list[asyncio.Future[None]], error: Exception | None = None) -> None:
        for future in futures:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    def confirm_writes(self) -> None:
        """The broker confirms every table write so far (twins, markers)."""
        self.confirm([future for _, future in self.writes])

    async def confirm_checkpoint(self) -> None:
        """The broker confirms the sends, then the twins' writes, then the markers, as a checkpoint awaits them in turn."""
        self.confirm(self.sends)
        await settle()
        self.confirm_writes()
        await settle()
        self.confirm_writes()
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_checkpoint_returns_before_its_waits_and_acks_only_after_them(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        h.apply("e1", 0)
        h.apply("e1", 1)
        await asyncio.wait_for(h.agent._checkpoint(), timeout=1.0)  # returns with every send unconfirmed
        await settle()
        assert h.writes == [] and h.acked == []  # no twin state before its predictions are with the broker

        h.apply("e1", 2)  # the agent goes on meanwhile; this event is the next checkpoint's
        h.confirm(h.sends[:2])
        await settle()
        assert [key for key, _ in h.writes] == [b"e1"] and h.acked == []  # twin written, no marker before it is delivered

        h.confirm_writes()
        await settle()
        assert [key for key, _ in h.writes] == [b"e1", marker_key(0)] and h.acked == []

        h.confirm_writes()
        await h.agent._checkpoint_done()
        assert h.acked == [1, 2]  # the third event stays pending for the next checkpoint
        assert [event.message.offset for event in h.agent.pending.events] == [3]

    asyncio.run(main())


def test_next_checkpoint_snapshots_only_after_the_previous_finished(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        h.apply("e1", 0)
        await h.agent._checkpoint()
        h.apply("e1", 1)
        second = asyncio.ensure_future(h.agent._checkpoint())
        await settle()
        assert not second.done() and len(h.agent.pending.events) == 1  # waits; its snapshot not taken yet
        h.confirm(h.sends[:1])
        for _ in range(2):  # the first checkpoint's twin, then its marker
            await settle()
            h.confirm_writes()
        await asyncio.wait_for(second, timeout=1.0)
        assert h.acked == [1] and h.agent.pending.events == []

    asyncio.run(main())


def test_twin_evicted_while_its_checkpoint_waits_reloads_the_snapshot(tmp_path: Path) -> None:
    async def main() -> None:
        h, reference = Harness(tmp_path / "a", twin_idle_evict_s=60.0), Harness(tmp_path / "b")
        for seq in range(5):
            h.apply("quiet", seq)
            reference.apply("quiet", seq)
        h.now += timedelta(seconds=120)  # idle long enough: evicted once its state is serialized
        reference.now = h.now
        await h.agent._checkpoint()
        assert "quiet" not in h.agent.processor.twins and h.store == {}  # evicted, not in the table yet
        assert h.apply("quiet", 5) == reference.apply("quiet", 5)  # reloaded from the snapshot
        twin = h.agent.processor.twins["quiet"]
        assert (twin.last_seq, twin.updates) == (5, 6)

    asyncio.run(main())


def test_checkpoint_writes_each_twin_as_it_was_when_it_began(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The twins are pickled in the background, a slice per turn; one the agent changes first keeps its old state."""
    monkeypatch.setattr(checkpoint_module, "SNAPSHOT_TWINS_PER_TURN", 1)

    async def main() -> None:
        h = Harness(tmp_path)
        entities = ("e1", "e2", "e3")
        for entity in entities:
            h.apply(entity, 0)
        expected = {entity.encode(): h.agent.processor.twins[entity].to_bytes() for entity in entities}
        await h.agent._checkpoint()
        assert set(h.agent.processor.snapshot.pending) == set(entities)  # nothing pickled in line
        h.apply("e3", 1)
        h.apply("e1", 1)
        for _ in range(50):  # the broker confirms whatever was sent, turn after turn (the order is tested above)
            h.confirm(h.sends)
            h.confirm_writes()
            await settle()
        await asyncio.wait_for(h.agent._checkpoint_done(), timeout=5.0)
        assert {key: value for key, value in h.store.items() if key in expected} == expected
        assert h.acked == [1, 2, 3] and h.agent.processor.twins["e1"].to_bytes() != expected[b"e1"]

    asyncio.run(main())


def test_a_written_checkpoint_keeps_no_copy_and_an_undo_reads_the_table(tmp_path: Path) -> None:
    """Once its twins are in the table the processor lets their bytes go; a failed step then restores from the table."""
    async def main() -> None:
        h, reference = Harness(tmp_path / "a"), Harness(tmp_path / "b")
        for seq in range(3):
            h.apply("e1", seq)
            reference.apply("e1", seq)
        await h.agent._checkpoint()
        await h.confirm_checkpoint()
        await asyncio.wait_for(h.agent._checkpoint_done(), timeout=1.0)
        processor = h.agent.processor
        assert h.acked == [1, 2, 3] and processor.snapshot.blobs == {} and h.agent.writing == {}
        h.apply("e1", 3)
        reference.apply("e1", 3)
        processor._restore("e1", 0, START)  # what a failed step does: the table's bytes + the record since
        twin = processor.twins["e1"]
        assert (twin.last_seq, twin.updates) == (3, 4)
        assert h.apply("e1", 4) == reference.apply("e1", 4)

    asyncio.run(main())


def test_checkpoint_straddling_a_rebalance_writes_and_acks_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path)
        h.apply("e1", 0)
        await h.agent._checkpoint()
        await h.agent._on_revoked(h.agent.app, set())
        assert h.agent.writing == {}
        h.confirm(h.sends)
        await h.agent._checkpoint_done()
        assert h.writes == [] and h.acked == []  # redelivered to whoever owns the partition now

    asyncio.run(main())


def test_checkpoint_failing_in_the_background_ends_the_worker_unless_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[BaseException] = []
    monkeypatch.setattr(checkpoint_module, "exit_on_agent_crash", crashes.append)

    async def main(stopping: bool) -> None:
        h = Harness(tmp_path / str(stopping))
        h.apply("e1", 0)
        await h.agent._checkpoint()
        h.agent.stopping = stopping
        h.confirm(h.sends, error=RuntimeError("broker refused the prediction"))
        await settle()
        assert h.writes == [] and h.acked == []

    asyncio.run(main(stopping=False))
    assert [str(crash) for crash in crashes] == ["broker refused the prediction"]
    asyncio.run(main(stopping=True))
    assert len(crashes) == 1


def test_a_checkpoint_still_finishing_puts_the_next_off_without_waiting(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, checkpoint_interval_s=0.0)
        h.apply("e1", 0)
        assert h.agent._checkpoint_due()
        await h.agent._checkpoint()
        h.apply("e1", 1)
        assert not h.agent._checkpoint_due()  # the first still waits for its prediction's send
        await asyncio.wait_for(h.agent._on_timer(), timeout=1.0)  # the timer does not wait for it either
        assert [event.message.offset for event in h.agent.pending.events] == [2] and h.acked == []

        await h.confirm_checkpoint()
        assert h.acked == [1] and h.agent._checkpoint_due()
        await asyncio.wait_for(h.agent._on_timer(), timeout=1.0)  # now the put-off checkpoint runs
        assert h.agent.pending.events == []
        await h.confirm_checkpoint()
        await h.agent._checkpoint_done()
        assert h.acked == [1, 2]

    asyncio.run(main())


def test_no_checkpoint_before_its_interval(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path, checkpoint_interval_s=60.0)
        h.apply("e1", 0)
        assert not h.agent._checkpoint_due()
        await h.agent._on_timer()
        assert len(h.agent.pending.events) == 1 and h.agent.finishing is None

    asyncio.run(main())


def test_too_many_events_pending_make_the_checkpoint_wait_for_the_one_finishing(tmp_path: Path, monkeypatch) -> None:
    """Put off without end, a slow broker would grow the pending events without bound."""
    monkeypatch.setattr(checkpoint_module, "PUT_OFF_MAX_EVENTS", 2)

    async def main() -> None:
        h = Harness(tmp_path, checkpoint_interval_s=0.0)
        h.apply("e1", 0)
        await h.agent._checkpoint()
        h.apply("e1", 1)
        assert not h.agent._checkpoint_due()  # one pending: put off
        h.apply("e1", 2)
        assert h.agent._checkpoint_due()  # two: due, and the checkpoint waits for the one finishing
        waiting = asyncio.ensure_future(h.agent._on_timer())
        await settle()
        assert not waiting.done() and len(h.agent.pending.events) == 2
        await h.confirm_checkpoint()
        await asyncio.wait_for(waiting, timeout=1.0)
        assert h.acked == [1] and h.agent.pending.events == []

    asyncio.run(main())
