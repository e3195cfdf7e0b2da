"""The ingest agent's checkpoint: what it takes in line, and what it does and waits for in the background.

Why a module of its own: the checkpoint is the delivery contract's core (docs/architecture.md,
the ingest module's docstring), apart from the batch path and the rebalance hooks; the
agent inherits it, as the processor inherits its cache upkeep.

Order within a checkpoint, and why: (1) the twins changed since the last checkpoint and
the input offsets they reflect are snapshotted together, with nothing awaited in between
(each twin's bytes are taken later, but before anything changes it: copy on write, see
``TwinCacheUpkeep.begin_snapshot``); (2) every prediction, dead letter and gap sent for
the snapshot's events is confirmed by the broker, because a twin state in the table makes
those events skip on redelivery; (3) the snapshot's twins are written to the table and
their changelog records confirmed; (4) each written partition gets a marker naming its
next input offsets; (5) the events are acked. The pickling and steps 2 to 5 run in the
background, a slice per turn of the event loop, while the agent goes on with the next
batches; the next checkpoint begins only once this one has finished, and is put off (not
waited for) while it has not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import faust

from twinstream.settings import Settings
from twinstream.streams.agent_guards import as_event_of_partition, exit_on_agent_crash
from twinstream.streams.input_offsets import InputOffsets, encode_marker, marker_key
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor import TwinProcessor
from twinstream.streams.twin_cache import TwinSnapshot

log = logging.getLogger("twinstream.streams.ingest")

STOP_CHECKPOINT_WAIT_S = 10.0  # how long a stopping worker lets a checkpoint in the background finish
# Events pending (applied, not yet acked) beyond which a due checkpoint waits for the one still
# finishing instead of being put off: a slow broker then slows the agent rather than its memory growing.
PUT_OFF_MAX_EVENTS = 100_000
# Work of a checkpoint in the background done between turns of the event loop: pickling 50 twins
# of about 5 KB takes about 4 ms on a small machine, so an event arriving meanwhile waits that long
# rather than for the whole checkpoint (about a tenth of a second for a thousand twins).
SNAPSHOT_TWINS_PER_TURN = 50
WRITES_PER_TURN = 250
ACKS_PER_TURN = 1000


@dataclass
class PendingWork:
    """Work done since the last checkpoint: events to ack and sends to confirm."""

    events: list[faust.EventT] = field(default_factory=list)
    sends: list[Awaitable[Any]] = field(default_factory=list)
    last_event_of_partition: dict[int, faust.EventT] = field(default_factory=dict)

    def clear(self) -> None:
        self.events.clear()
        self.sends.clear()
        self.last_event_of_partition.clear()


class CheckpointSteps:
    """Methods of :class:`~twinstream.streams.ingest.IngestAgent` that checkpoint its twins."""

    settings: Settings
    metrics: WorkerMetrics
    processor: TwinProcessor
    pending: PendingWork
    offsets: InputOffsets
    table: Any
    stream: faust.StreamT | None
    generation: int
    last_checkpoint: float  # when the latest checkpoint began
    checkpoint_number: int
    finishing: asyncio.Future[None] | None  # the checkpoint finishing in the background
    writing: dict[str, bytes]  # its twin states until they are in the table
    stopping: bool

    async def _settle_on_stop(self) -> None:
        """Let a checkpoint in the background finish (bounded); cut short, its events are redelivered."""
        finishing = self.finishing
        if finishing is None or finishing.done():
            return
        await asyncio.wait({finishing}, timeout=STOP_CHECKPOINT_WAIT_S)
        if not finishing.done():
            log.warning("stopping: a checkpoint did not finish within %.0f s; its events will be redelivered",
                        STOP_CHECKPOINT_WAIT_S)
            finishing.cancel()

    def _checkpoint_due(self) -> bool:
        """Whether to checkpoint now: the interval has passed and no checkpoint is still finishing.

        Why not wait for the one finishing: its waits are the broker's, and an agent that
        waited for them took no events meanwhile (about a tenth of a loaded worker's time
        went there, docs/decisions.md). Its twins stay dirty and its events pending, so a
        later batch (or the timer) checkpoints them once it has finished: the interval
        stretches while the broker is slow, and nothing is acked sooner than before. With
        ``PUT_OFF_MAX_EVENTS`` events pending it is due anyway, and waits as before.
        """
        if time.monotonic() - self.last_checkpoint < self.settings.checkpoint_interval_s:
            return False
        return self.finishing is None or self.finishing.done() or len(self.pending.events) >= PUT_OFF_MAX_EVENTS

    async def _checkpoint(self) -> None:
        """Snapshot the changed twins and the offsets they reflect; the rest of the checkpoint runs in the background.

        Why in the background: confirming the sends, the changelog records and the
        markers is waiting, not work, and while the agent waited it took no events: a
        stall once per interval, seen in latency under load (docs/performance.md).
        The order within a checkpoint is unchanged (:meth:`_finish_checkpoint`); a
        checkpoint begins only after the previous one has finished (the agent puts it
        off meanwhile, :meth:`_checkpoint_due`), so their table writes keep their order
        too. Until its twins are in the table, a twin loaded again (evicted meanwhile)
        comes from the snapshot (:meth:`_load_twin`).
        """
        await self._checkpoint_done()
        generation = self.generation
        started = self.last_checkpoint = time.monotonic()
        events = list(self.pending.events)
        sends = list(self.pending.sends)
        last_events = dict(self.pending.last_event_of_partition)
        self.pending.clear()
        # Nothing awaits between snapshotting the twins and the offsets they reflect, so
        # the two agree; events applied after this belong to the next checkpoint.
        snapshot = self.processor.begin_snapshot()
        offsets = self.offsets.snapshot()
        self.writing = snapshot.blobs  # filled as the snapshot's twins are pickled
        self.finishing = asyncio.ensure_future(
            self._finish_checkpoint(generation, started, events, sends, last_events, snapshot, offsets))
        self.finishing.add_done_callback(self._exit_if_failed)

    async def _checkpoint_done(self) -> None:
        """Wait for the checkpoint in the background, if one runs; its error is the caller's."""
        finishing, self.finishing = self.finishing, None
        if finishing is not None:
            await finishing

    async def _finish_checkpoint(
        self, generation: int, started: float, events: list[faust.EventT], sends: list[Awaitable[Any]],
        last_events: dict[int, faust.EventT], snapshot: TwinSnapshot, offsets: dict[int, dict[str, int]],
    ) -> None:
        """Pickle the snapshot's twins, confirm sends, write the twins and await their changelog, markers, then ack.

        Sends first: a twin state in the table makes its events skip on redelivery, so
        their predictions and dead letters must be with the broker before it is.
        """
        await self._complete_snapshot(snapshot)
        if sends:
            await asyncio.gather(*sends)  # raises if the broker refused any prediction/dead letter
        if self._straddled(generation, events):
            return
        changelog: list[Awaitable[Any]] = []
        for partition, items in snapshot.by_partition().items():
            for start in range(0, len(items), WRITES_PER_TURN):
                # A turn for the agent between slices. A rebalance meanwhile ends the writes: the
                # revoked partitions' stores are closed, and the states written so far are
                # harmless (their sends are confirmed; the events come again and skip).
                await asyncio.sleep(0)
                if self._straddled(generation, events):
                    return
                with as_event_of_partition(last_events.get(partition)):
                    for entity_id, blob in items[start:start + WRITES_PER_TURN]:
                        changelog.append(self._write_table(partition, entity_id.encode(), blob))
        self.writing = {}  # in the table now
        snapshot.written()  # no copy kept: about 4.8 KB a twin, and most twins of a large fleet are idle
        await asyncio.gather(*changelog)  # every twin is in the changelog before any marker
        if offsets:
            await asyncio.gather(*self._write_markers(offsets, last_events))
        if self._straddled(generation, events):
            return
        self.offsets.written(offsets)
        assert self.stream is not None
        for index, event in enumerate(events, 1):
            await self.stream.ack(event)
            if index % ACKS_PER_TURN == 0:
                await asyncio.sleep(0)
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(time.monotonic() - started)
        log.debug("checkpoint: %d twins written, %d events acked", len(changelog), len(events))

    async def _complete_snapshot(self, snapshot: TwinSnapshot) -> None:
        """Pickle the snapshot's remaining twins a slice at a time, the agent taking batches in between.

        A twin the agent changes meanwhile is pickled before the change (``TwinProcessor.twin``),
        so every twin's bytes are its state as of the snapshot. A rebalance replaces the
        processor's snapshot: this one is then abandoned (the checkpoint straddled it).
        """
        processor = self.processor
        while processor.snapshot is snapshot and not processor.snapshot_some(SNAPSHOT_TWINS_PER_TURN):
            await asyncio.sleep(0)

    def _straddled(self, generation: int, events: list[faust.EventT]) -> bool:
        """Whether a rebalance came since the checkpoint began (then its events are redelivered, not acked)."""
        if generation == self.generation:
            return False
        log.info("checkpoint straddled a rebalance; %d events will be redelivered instead of acked", len(events))
        return True

    def _exit_if_failed(self, finishing: asyncio.Future[None]) -> None:
        """A checkpoint that failed in the background ends the worker, as one in the agent does (not while stopping)."""
        if not finishing.cancelled() and finishing.exception() is not None and not self.stopping:
            exit_on_agent_crash(finishing.exception())

    def _write_table(self, partition: int, key: bytes, value: bytes) -> Awaitable[Any]:
        """Write one table entry and return the future of its changelog delivery.

        Not ``table[key] = value``: that drops the changelog future, and Faust's producer
        buffer flush gives up after 100 ms without a message sent, so a flush can return
        with twin states still unsent. Acknowledging inputs on that basis lost updates
        in the crash test on a loaded machine. Awaiting each record's own delivery does not.
        """
        self.table.data[key] = value  # local RocksDB (partition from the current event)
        return self.table.send_changelog(partition, key, value)

    def _write_markers(
        self, offsets: dict[int, dict[str, int]], last_events: dict[int, faust.EventT]
    ) -> list[Awaitable[Any]]:
        """End each partition that had events with a one-record marker naming its next input offsets.

        Sent after the twins' changelog records are confirmed, so the marker is its own
        record batch (the embedded broker's high watermark is then exact) and a reader
        that sees the marker also sees every twin state it vouches for.
        """
        self.checkpoint_number += 1
        now = time.time()
        futures = []
        for partition, topic_offsets in offsets.items():
            marker = encode_marker(self.checkpoint_number, topic_offsets, now)
            with as_event_of_partition(last_events.get(partition)):
                futures.append(self._write_table(partition, marker_key(partition), marker))
        return futures


