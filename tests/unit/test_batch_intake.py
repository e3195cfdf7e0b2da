"""The buffer between the worker's fetch loop and its ingest agent: order, capacity, clearing."""

from __future__ import annotations

import asyncio

import pytest

from twinstream.streams.batch_intake import EventBuffer


def run(coro):
    return asyncio.run(coro)


def test_batches_keep_fetch_order_across_puts_and_are_cut_at_max_events() -> None:
    async def main() -> list[list[int]]:
        buffer = EventBuffer(capacity=100)
        await buffer.put(range(0, 7))
        await buffer.put(range(7, 10))
        return [await buffer.take(4), await buffer.take(4), await buffer.take(4)]

    assert run(main()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_take_waits_for_the_next_put() -> None:
    async def main() -> list[int]:
        buffer = EventBuffer(capacity=10)
        taker = asyncio.ensure_future(buffer.take(5))
        await asyncio.sleep(0.01)
        assert not taker.done()
        await buffer.put([1, 2])
        return await asyncio.wait_for(taker, 1)

    assert run(main()) == [1, 2]


def test_a_full_buffer_holds_the_fetch_loop_until_the_agent_takes() -> None:
    async def main() -> tuple[bool, bool, list[int]]:
        buffer = EventBuffer(capacity=3)
        await buffer.put([1, 2, 3])
        putter = asyncio.ensure_future(buffer.put([4]))
        await asyncio.sleep(0.01)
        held = not putter.done()
        taken = await buffer.take(2)
        await asyncio.wait_for(putter, 1)
        return held, putter.done(), taken + await buffer.take(10)

    held, released, events = run(main())
    assert held and released
    assert events == [1, 2, 3, 4]


def test_a_fetch_may_overfill_by_itself_but_the_next_one_waits() -> None:
    async def main() -> tuple[int, bool]:
        buffer = EventBuffer(capacity=3)
        await buffer.put([1, 2])
        await asyncio.wait_for(buffer.put([3, 4, 5, 6]), 1)  # below capacity when it came: taken whole
        putter = asyncio.ensure_future(buffer.put([7]))
        await asyncio.sleep(0.01)
        waiting = not putter.done()
        putter.cancel()
        return len(buffer), waiting

    assert run(main()) == (6, True)


def test_clear_drops_the_events_and_frees_a_waiting_put() -> None:
    async def main() -> tuple[int, list[int]]:
        buffer = EventBuffer(capacity=2)
        await buffer.put([1, 2])
        putter = asyncio.ensure_future(buffer.put([3]))
        await asyncio.sleep(0.01)
        dropped = buffer.clear()
        await asyncio.wait_for(putter, 1)
        return dropped, await buffer.take(10)

    assert run(main()) == (2, [3])


def test_a_cancelled_put_leaves_nothing_behind() -> None:
    """The fetch loop races each put against the flow's suspension; the loser must not half-apply."""

    async def main() -> int:
        buffer = EventBuffer(capacity=1)
        await buffer.put([1])
        putter = asyncio.ensure_future(buffer.put([2, 3]))
        await asyncio.sleep(0.01)
        putter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await putter
        return len(buffer)

    assert run(main()) == 1


def drain_of_worker_consumer(tmp_path, **settings: object) -> tuple[object, object]:
    """The fetch loop a worker app's consumer will run, and the agent's intake (built, never started)."""
    from twinstream.settings import Settings
    from twinstream.streams.worker import build_worker_app

    async def build() -> tuple[object, object]:
        app, agent = build_worker_app(Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, **settings))
        return app.consumer._drain_messages, agent.intake

    return asyncio.run(build())


def test_the_worker_consumer_hands_input_to_the_intake_by_default(tmp_path) -> None:
    drain, intake = drain_of_worker_consumer(tmp_path / "on")
    assert intake is not None and drain.__qualname__.startswith("BatchIntake.")
    assert intake.topics == {"twinstream.telemetry", "twinstream.telemetry.synthetic"}


def test_without_the_intake_the_consumer_keeps_fausts_fetch_loop(tmp_path) -> None:
    from faust.transport.consumer import Consumer

    drain, intake = drain_of_worker_consumer(tmp_path / "off", batch_intake=False)
    assert intake is None and drain.__func__ is Consumer._drain_messages


class _Record:
    """What aiokafka hands the fetch loop, reduced to what Faust's ``_to_message`` reads."""

    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = topic, partition, offset
        self.timestamp, self.timestamp_type, self.headers = 0, 0, []
        self.key, self.value, self.checksum = b"e", b"{}", None
        self.serialized_key_size = self.serialized_value_size = 1


class _Consumer:
    """The Faust consumer state the intake's loop reads and writes, with Faust's own offset rules."""

    def __init__(self) -> None:
        from collections import defaultdict
        from weakref import WeakSet

        self._read_offset: dict = defaultdict(lambda: None)
        self._commit_every = None
        self._buffered_partitions: set = set()
        self._unacked_messages: WeakSet = WeakSet()
        self.flow_active = True
        self.gaps: list[tuple[int, int]] = []
        self.sought: list[int] = []
        self.suspend_flow = asyncio.Event()
        self.assigned: set = set()

    def assignment(self) -> set:
        return self.assigned

    async def wait_first(self, *coros):  # Faust's race: the first to finish wins, the others are cancelled
        futures = [asyncio.ensure_future(coro) for coro in coros]
        _, pending = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()

    def _to_message(self, tp, record):
        from faust.types import Message

        return Message(record.topic, record.partition, record.offset, 0.0, 0, record.headers, record.key,
                       record.value, None, 1, 1, tp, generation_id=1)

    def _on_message_in(self, *args: object) -> None:
        pass

    def highwater(self, tp) -> int:
        return 0

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        self.gaps.append((offset_from, offset_to))

    async def seek(self, tp, offset: int) -> None:  # Faust: the read offset follows a seek
        self.sought.append(offset)
        self._read_offset[tp] = offset if offset else None

    async def perform_seek(self) -> None:
        pass


class _App:
    consumer_generation_id = 1

    class topics:
        @staticmethod
        def acks_enabled_for(topic: str) -> bool:
            return True

    class monitor:
        @staticmethod
        def track_tp_end_offset(tp, offset: int) -> None:
            pass


def convert(offsets: list[int], *, seek_to: int | None = None, read_offset: int | None = None,
            active: bool = True, flow: bool = True, assigned: bool = True):
    """Run one fetch of ``offsets`` through the intake; ``seek_to``: a seek between the fetch and its conversion.

    ``active``: the partition is active (not paused while a rebalance recovers the tables);
    ``flow``: the consumer's flow is on; ``assigned``: the partition is still this worker's.
    """
    from faust.types import TP

    from twinstream.streams.batch_intake import BatchIntake

    tp = TP("in", 0)
    consumer, intake = _Consumer(), BatchIntake(_App(), frozenset({"in"}), capacity=100)  # type: ignore[arg-type]
    intake.install(consumer)
    consumer._read_offset[tp] = read_offset
    consumer.flow_active = flow
    consumer.assigned = {tp} if assigned else set()

    async def main() -> list:
        seeks = intake.seeks
        if seek_to is not None:
            await consumer.seek(tp, seek_to)
        partitions = {tp} if active else set()
        return await intake._to_events(consumer, {tp: [_Record("in", 0, o) for o in offsets]}, partitions, seeks)

    events = asyncio.run(main())
    return [e.message.offset for e in events], consumer._read_offset[tp], consumer.gaps, consumer.sought


def test_a_fetch_becomes_tracked_events_and_moves_the_read_offset() -> None:
    offsets, read, gaps, sought = convert([10, 11, 12], read_offset=9)
    assert (offsets, read, gaps, sought) == ([10, 11, 12], 12, [], [])


def test_a_hole_in_the_offsets_is_recorded_as_a_gap_as_faust_does() -> None:
    offsets, read, gaps, _ = convert([10, 11, 15], read_offset=9)
    assert (offsets, read, gaps) == ([10, 11, 15], 15, [(12, 15)])


def test_records_behind_the_read_offset_are_dropped_as_faust_does() -> None:
    offsets, read, _, _ = convert([8, 9, 10], read_offset=9)
    assert (offsets, read) == ([9, 10], 10)


def test_a_fetch_from_before_a_seek_is_fetched_again_not_taken() -> None:
    """Taken, records 20.. after a seek back to 5 would record 6..19 as a gap, although they come again."""
    offsets, read, gaps, sought = convert([20, 21, 22], read_offset=19, seek_to=5)
    assert offsets == [] and gaps == []
    assert read == 5 and sought == [5, 5]  # the seek, then the intake's seek to the same place


def test_after_a_seek_to_nothing_committed_the_fetch_is_taken_as_faust_would() -> None:
    """With no read offset to seek back to, leaving the records would lose them: they are taken."""
    offsets, read, _, sought = convert([0, 1, 2], seek_to=0)
    assert (offsets, read, sought) == ([0, 1, 2], 2, [0])


def test_records_of_a_partition_not_active_are_fetched_again_not_dropped() -> None:
    """Faust drops them and counts on a seek to the committed offset, which the client skips without one."""
    offsets, read, _, sought = convert([0, 1, 2], active=False)
    assert (offsets, read, sought) == ([], None, [0])


def test_records_fetched_while_the_flow_is_suspended_are_fetched_again() -> None:
    offsets, _, _, sought = convert([40, 41], read_offset=39, flow=False)
    assert (offsets, sought) == ([], [40])


def test_a_partition_no_longer_assigned_is_not_sought() -> None:
    offsets, _, _, sought = convert([40, 41], read_offset=39, flow=False, assigned=False)
    assert (offsets, sought) == ([], [])


def test_events_a_suspension_keeps_from_the_agent_are_fetched_again() -> None:
    from faust.types import TP

    from twinstream.streams.batch_intake import BatchIntake

    tp = TP("in", 0)
    consumer, intake = _Consumer(), BatchIntake(_App(), frozenset({"in"}), capacity=1)  # type: ignore[arg-type]
    intake.install(consumer)
    consumer.assigned = {tp}

    async def main() -> None:
        await intake.buffer.put(["taken by nobody"])  # full: the next hand-over waits
        events = await intake._to_events(consumer, {tp: [_Record("in", 0, o) for o in (7, 8)]}, None, intake.seeks)
        consumer.suspend_flow.set()
        await intake._hand_over(consumer, events)

    asyncio.run(main())
    assert consumer.sought == [7]


def test_a_long_fetch_reaches_the_agent_in_parts_while_it_is_turned_into_events(monkeypatch) -> None:
    """The agent must not wait for a whole fetch to be converted: each turn hands the events so far over."""
    from faust.types import TP

    from twinstream.streams import batch_intake
    from twinstream.streams.batch_intake import BatchIntake

    monkeypatch.setattr(batch_intake, "HAND_OVER_EVERY", 3)
    tp = TP("in", 0)
    consumer, intake = _Consumer(), BatchIntake(_App(), frozenset({"in"}), capacity=100)  # type: ignore[arg-type]
    intake.install(consumer)

    async def main() -> tuple[list[int], list[int], list[int]]:
        taker = asyncio.ensure_future(intake.take(100))
        rest = await intake._to_events(consumer, {tp: [_Record("in", 0, o) for o in range(8)]}, None, intake.seeks)
        first = await asyncio.wait_for(taker, 1)
        later = await intake.take(100)
        return [e.message.offset for e in first], [e.message.offset for e in later], [e.message.offset for e in rest]

    first, later, rest = asyncio.run(main())
    assert first == [0, 1]  # taken while the fetch was still being converted
    assert first + later + rest == list(range(8))
    assert consumer._read_offset[tp] == 7
