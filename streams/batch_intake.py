"""Records of the input topics go from the consumer to the ingest agent a fetch at a time.

Why: Faust passes every fetched record on by itself: a race of four asyncio tasks per
record in its fetch loop, a decode and a queue put in the conductor, then the stream's
iterator and the take buffer, which waits for the agent to finish a batch before it
fills the next one. Measured on the worker (docs/performance.md), that path cost about
as much per event as the twin step itself, and the agent's batches never filled: 165
events per 10 ms wait, one fetch of 2,000 records every 270 ms. The twins want whole
batches, so the records of the agent's input topics skip that path: the fetch loop
turns each fetch into messages and events in one pass and hands them over in parts of
``HAND_OVER_EVERY`` as it goes (whole, the agent waited for the rest of a large fetch).

What is kept from Faust's fetch loop, in the same order, so offsets, commits and
rebalances behave as before: records older than the partition's read offset are
dropped, gaps are recorded for commits, the read offset advances per record, the
batch is cut short when the flow is suspended or the generation changes, and the
hand-over is raced against the flow's suspension as Faust races its own. One departure:
what is not taken then (or belongs to a partition not active yet) is sought back to,
so it is fetched again; Faust leaves that to a seek to the committed offsets, which the
Kafka client skips for a partition with none (docs/decisions.md). Every message is tracked as unacked
with one reference, so the agent's ``stream.ack(event)`` at a checkpoint makes it
committable exactly as before. Records of other topics (table changelogs, standbys)
take Faust's own per-record path. Setting: ``batch_intake``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import Any

import faust
from faust.events import Event

log = logging.getLogger(__name__)

# Records turned into events between turns given to the event loop; each turn also hands the
# events so far to the agent. The agent takes a batch (1,000 events) per turn, so a turn must
# bring more than that or the agent waits for the rest of the fetch.
HAND_OVER_EVERY = 2000


class EventBuffer:
    """A bounded FIFO of events: the fetch loop puts parts of fetches, the agent takes batches.

    >>> async def main():
    ...     buffer = EventBuffer(capacity=4)
    ...     await buffer.put([1, 2, 3])
    ...     return await buffer.take(2), await buffer.take(10), len(buffer)
    >>> asyncio.run(main())
    ([1, 2], [3], 0)
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._events: deque[Any] = deque()
        self._ready = asyncio.Event()  # set while there are events
        self._room = asyncio.Event()  # set while below capacity
        self._room.set()

    def __len__(self) -> int:
        return len(self._events)

    async def put(self, events: Iterable[Any]) -> None:
        """Append ``events`` once the buffer is below capacity (it may then go over by one fetch)."""
        while len(self._events) >= self.capacity:
            self._room.clear()
            await self._room.wait()
        self._events.extend(events)
        if self._events:
            self._ready.set()

    async def take(self, max_events: int) -> list[Any]:
        """Wait for events and return up to ``max_events`` of them, oldest first."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        events = self._events
        batch = [events.popleft() for _ in range(min(max_events, len(events)))]
        if len(events) < self.capacity:
            self._room.set()
        if not events:
            self._ready.clear()
        return batch

    def clear(self) -> int:
        """Drop every buffered event (on revocation: they would be discarded as stale anyway)."""
        dropped = len(self._events)
        self._events.clear()
        self._ready.clear()
        self._room.set()
        return dropped


class BatchIntake:
    """Installs a fetch loop on a Faust consumer that hands the records of ``topics`` over in bulk."""

    def __init__(self, app: faust.App, topics: frozenset[str], capacity: int) -> None:
        self.app = app
        self.topics = topics
        self.buffer = EventBuffer(capacity)
        # Seeks started on the consumer, and those still running: a fetch that overlaps one
        # may hold records from before it (the seek runs in the consumer's thread).
        self.seeks = 0
        self.seeking = 0

    def install(self, consumer: Any) -> None:
        """Replace ``consumer``'s fetch loop (Faust's Fetcher calls it again after every rebalance)."""

        async def drain_messages(fetcher: Any) -> None:
            await self._drain(consumer, fetcher)

        seek, perform_seek = consumer.seek, consumer.perform_seek

        async def counted_seek(*args: Any, **kwargs: Any) -> None:
            await self._counted(seek(*args, **kwargs))

        async def counted_perform_seek() -> None:
            await self._counted(perform_seek())

        consumer._drain_messages = drain_messages
        consumer.seek, consumer.perform_seek = counted_seek, counted_perform_seek

    async def _counted(self, seek: Any) -> None:
        self.seeks += 1
        self.seeking += 1
        try:
            await seek
        finally:
            self.seeking -= 1

    async def take(self, max_events: int) -> list[faust.EventT]:
        return await self.buffer.take(max_events)

    def clear(self) -> int:
        return self.buffer.clear()

    async def _drain(self, consumer: Any, fetcher: Any) -> None:
        consumer_stopped, fetcher_stopped = consumer._stopped.is_set, fetcher._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await consumer.sleep(0)  # as Faust: a fetch can return at once, again and again
                if consumer.should_stop:
                    continue
                seeks = -1 if self.seeking else self.seeks  # -1: a seek is running, this fetch may overlap it
                records, active = await consumer._wait_next_records(1.0)
                if records is None or consumer.should_stop:
                    continue
                if not consumer.flow_active:
                    # Faust's order: a fetch that finds the flow suspended (it returns no
                    # records then) seeks every partition back to its committed offset, which
                    # also resets the read and committed offsets its commits are based on.
                    await self._seek_back(consumer)
                    continue
                if not records:
                    continue
                events = await self._to_events(consumer, records, active, seeks)
                if events:
                    await self._hand_over(consumer, events)
        except consumer.consumer_stopped_errors:
            if consumer.transport.app.should_stop:
                log.info("broker stopped the consumer; shutting down")
                return
            raise
        except asyncio.CancelledError:
            if consumer.transport.app.should_stop:
                return
            raise

    async def _hand_over(self, consumer: Any, events: list[Any]) -> None:
        """Put ``events`` in the agent's buffer, raced against the flow's suspension as Faust races its own.

        Events the suspension kept from the buffer are fetched again (:meth:`_fetch_later`).
        """
        handed = False

        async def put() -> None:
            nonlocal handed
            await self.buffer.put(events)
            handed = True

        await consumer.wait_first(put(), consumer.suspend_flow.wait())
        if not handed:
            first: dict[Any, int] = {}
            for event in events:
                first.setdefault(event.message.tp, event.message.offset)
            for tp, offset in first.items():
                await self._fetch_later(consumer, tp, offset)

    async def _seek_back(self, consumer: Any) -> None:
        """Faust's answer to records fetched while the flow is suspended: seek to the committed offsets."""
        try:
            await consumer.perform_seek()
        except Exception as exc:  # noqa: BLE001 - Faust logs and goes on here too
            log.warning("seek to committed offsets while the flow is suspended failed: %r", exc)

    async def _fetch_again(self, consumer: Any, tp: Any, first_left: int) -> None:
        """Seek ``tp`` to the read offset a seek set, leaving this fetch's records from ``first_left`` on."""
        offset = consumer._read_offset[tp]
        if offset is None:
            return
        log.info("a fetch of %s[%d] spans a seek: its records from offset %d on are fetched again from %d",
                 tp.topic, tp.partition, first_left, offset)
        await consumer.seek(tp, offset)

    async def _fetch_later(self, consumer: Any, tp: Any, offset: int) -> None:
        """Seek an input partition back to ``offset``: this fetch's records from there on are not taken now.

        Why: Faust's loop drops the records of a partition that is not active (paused
        while a rebalance recovers the tables) and those fetched while its flow is
        suspended, and counts on a seek to the committed offsets to fetch them again. The
        client skips that seek for a partition with no committed offset or with 0, so
        there they were gone: silently, when no later record of the partition came for
        the offset guard to notice (the tail of a partition at the end of its input).
        A partition no longer assigned is left alone: its next owner starts it afresh.
        """
        if tp.topic not in self.topics or tp not in consumer.assignment():
            return
        log.info("records of %s[%d] from offset %d not taken now (partition paused or flow suspended); fetched again",
                 tp.topic, tp.partition, offset)
        try:
            await consumer.seek(tp, offset)
        except Exception as exc:  # noqa: BLE001 - the offset guard still catches a later record
            log.warning("could not seek %s[%d] back to %d for records not taken: %r", tp.topic, tp.partition, offset, exc)

    async def _seeks_finished(self) -> None:
        """Wait for running seeks: the read offsets are theirs only once they are done."""
        while self.seeking:
            await asyncio.sleep(0.005)

    async def _to_events(self, consumer: Any, records: dict[Any, list[Any]], active: set[Any] | None,
                         seeks: int) -> list[Any]:
        """One fetch's records as tracked events, with Faust's per-record bookkeeping.

        Every ``HAND_OVER_EVERY`` records the events so far go to the agent's buffer; the
        rest are returned.

        ``seeks`` is the seek count when the fetch began (-1 if a seek was running then).
        If a seek overlapped the fetch (the agent seeking a partition back, Faust seeking
        to committed offsets after a rebalance; the seek runs in the consumer's thread,
        beside the fetch), an input partition's records may be from before it: taken,
        they would move the read offset the seek just set and record the offsets in
        between as a gap, which Faust's commit then counts as acknowledged next to the
        same offsets acknowledged when they come again. Commits then crawl forward one
        offset at a time (seen in the failover loop's kill scenario). So, once running
        seeks are done, those records are left and the partition is sought to the read
        offset the seek set, from which they come again.
        """
        app = self.app
        generation = app.consumer_generation_id
        read_offset = consumer._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        commit_every = consumer._commit_every
        to_message = consumer._to_message
        buffered = consumer._buffered_partitions
        unacked = consumer._unacked_messages
        on_message_in = consumer._on_message_in
        events: list[Any] = []
        since_hand_over = 0
        fetched = list(records.items())
        for index, (tp, tp_records) in enumerate(fetched):
            if active is not None and tp not in active and tp not in buffered:
                await self._fetch_later(consumer, tp, tp_records[0].offset)  # Faust drops them here
                continue
            app.monitor.track_tp_end_offset(tp, consumer.highwater(tp))
            bulk = check_seeks = tp.topic in self.topics
            acks_enabled = acks_enabled_for(tp.topic)
            for record in tp_records:
                if app.consumer_generation_id != generation:
                    return events  # the rest is fetched again from where the new assignment starts
                if not consumer.flow_active:  # suspended: what is left of this fetch comes again later
                    await self._fetch_later(consumer, tp, record.offset)
                    for later_tp, later_records in fetched[index + 1:]:
                        if later_records:
                            await self._fetch_later(consumer, later_tp, later_records[0].offset)
                    return events
                if check_seeks and self.seeks != seeks:
                    await self._seeks_finished()
                    if read_offset[tp] is None:  # nothing to seek back to: taken, as Faust would
                        check_seeks = False
                    else:
                        await self._fetch_again(consumer, tp, record.offset)
                        break
                since_hand_over += 1
                if since_hand_over >= HAND_OVER_EVERY:
                    since_hand_over = 0
                    if events:  # a rebalance meanwhile is seen at the next record, as after any turn
                        await self._hand_over(consumer, events)
                        events = []
                    else:
                        await asyncio.sleep(0)
                message = to_message(tp, record)
                offset = message.offset
                r_offset = read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # Faust drops what is behind the read offset
                if acks_enabled and r_offset and offset - r_offset > 1:
                    await consumer._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and consumer._n_acked >= commit_every:
                    consumer._n_acked = 0
                    await consumer.commit()
                if check_seeks and self.seeks != seeks:
                    await self._seeks_finished()
                    if read_offset[tp] is not None:
                        await self._fetch_again(consumer, tp, offset)
                        break
                if bulk:
                    message.refcount = 1
                    if acks_enabled:
                        message.tracked = True
                        unacked.add(message)
                        on_message_in(tp, offset, message)
                    events.append(Event(app, message.key, message.value, message.headers, message))
                else:
                    await consumer.wait_first(consumer.callback(message), consumer.suspend_flow.wait())
                read_offset[tp] = offset
        return events
