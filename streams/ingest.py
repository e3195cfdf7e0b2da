"""The ingest agent: telemetry in, twins updated, predictions and dead letters out.

Delivery contract (why the code is shaped like this):

* Twins live in memory while the worker runs and are written to the changelog-backed
  ``twins`` table at checkpoints, not per event (a table write per event costs more
  than the learning itself).
* An input event is acknowledged (its offset becomes committable) only after the
  checkpoint that holds its effect: first every prediction and dead letter sent so far
  is confirmed by the broker, then the dirty twins are written to the table and the
  changelog is flushed, then the events are acked. A crash at any point therefore
  redelivers only events whose effect is not in the table, and the twin's sequence
  check skips the ones that are. Result: no update lost, none applied twice, every
  (entity, seq) prediction published at least once.
* The agent waits for none of that: a checkpoint takes the changed twins and the offsets
  they reflect in line, and the pickling (copy on write), confirmations, writes and acks
  follow in the background while the agent takes the next batches
  (:mod:`twinstream.streams.checkpoint`).
* On a rebalance every cached twin is dropped, and a checkpoint that straddles a
  rebalance does not ack. Events fetched before the rebalance but handed to the agent
  after it (Faust's take buffer is not cleared on revocation) are discarded unapplied
  and unacked: applied to a twin freshly read from the table they would jump over the
  events the dropped twin had applied, and acked they would commit past effects that
  were just thrown away.
* Each checkpoint ends every written partition with a marker naming the next input
  offset of each input topic (:mod:`twinstream.streams.input_offsets`). After every
  rebalance, once the table is recovered and before consuming resumes, the group's
  committed offsets are set to the markers, so what is replayed is exactly what the
  table lacks; a partition without a marker (no checkpoint has written it) resumes from
  the start of its log. If the first event of a partition is still ahead of where it
  resumes, the partition is sought back (and counted): that would otherwise be a silent loss.
* The agent reads the measured telemetry topic and the synthetic topic (the sidecar's
  fills) as one stream: both are keyed by entity id with the same partition count, so
  Faust assigns partition *p* of both to the same worker, next to the twins of *p*.
  Gaps found by the twins' detectors go to the gaps topic under the same contract as
  predictions (confirmed before the events that revealed them are acked).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust
from faust.types import TP

from twinstream.kafka_security import client_options
from twinstream.settings import Settings
from twinstream.streams.agent_guards import exit_on_agent_crash
from twinstream.streams.batch_intake import BatchIntake
from twinstream.streams.checkpoint import CheckpointSteps, PendingWork
from twinstream.streams.input_offsets import (
    InputOffsets,
    OffsetGuard,
    decode_marker,
    marker_key,
)
from twinstream.streams.metrics import WorkerMetrics, observe_ages
from twinstream.streams.output import BatchPublisher
from twinstream.streams.processor import TwinProcessor
from twinstream.streams.records import Record

log = logging.getLogger(__name__)

TWIN_TABLE = "twins"


class IngestAgent(CheckpointSteps):
    """Wires a :class:`TwinProcessor` into a Faust app (agent, table, timer, rebalance hooks)."""

    def __init__(self, app: faust.App, settings: Settings, topics: dict[str, faust.TopicT], metrics: WorkerMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.telemetry = topics["twinstream.telemetry"]
        self.predictions_topic = topics["twinstream.predictions"].get_topic_name()
        self.dlq_topic = topics["twinstream.telemetry.dlq"].get_topic_name()
        self.gaps_topic = topics["twinstream.gaps"].get_topic_name()
        synthetic = topics["twinstream.telemetry.synthetic"]
        self.inputs = app.topic(
            self.telemetry.get_topic_name(), synthetic.get_topic_name(), key_type=bytes, value_type=bytes,
            partitions=settings.partitions, key_serializer="raw", value_serializer="raw", internal=False,
        )
        self.table = app.Table(
            TWIN_TABLE,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            help="Twin state per entity id (pickled twinstream.models.twin.Twin).",
        )
        self.processor = TwinProcessor(settings, self._load_twin, metrics)
        self.publisher = BatchPublisher(settings.broker_servers, client_id=f"{settings.app_id}-outputs",
                                        security=client_options(settings))
        self.input_topics = frozenset({self.telemetry.get_topic_name(), synthetic.get_topic_name()})
        self.pending = PendingWork()
        self.offsets = InputOffsets()
        self.lock = asyncio.Lock()
        self.generation = 0
        # True from a revocation until the table is recovered and offsets are aligned;
        # also at start, until the first assignment has been recovered.
        self.rebalancing = True
        # Per input partition, the next offset to apply (seeded from the markers).
        self.guard = OffsetGuard()
        self.last_checkpoint = time.monotonic()  # when the latest checkpoint began
        self.checkpoint_number = 0
        # The checkpoint finishing in the background, and its twin states until they are in the table.
        self.finishing: asyncio.Future[None] | None = None
        self.writing: dict[str, bytes] = {}
        self.stopping = False
        self.stream: faust.StreamT | None = None
        # Input records a fetch at a time, past Faust's per-record stream (None: Faust's stream).
        self.intake = (BatchIntake(app, self.input_topics, capacity=max(settings.batch_size, 16384))
                       if settings.batch_intake else None)
        # Told the records of every applied batch (the twin API publishes the twins they touched).
        self.on_batch: Callable[[list[Record]], None] | None = None
        app.agent(self.inputs, name="twinstream.ingest")(self._agent)
        app.timer(max(settings.checkpoint_interval_s, 0.05))(self._on_timer)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_rebalance_complete.connect(self._on_rebalance_complete)

    # --- Faust callbacks ---------------------------------------------------------
    async def _agent(self, stream: faust.StreamT) -> None:
        self.stream = stream
        await self.publisher.start()
        try:
            async for events in self._batches(stream):
                async with self.lock:
                    await self._handle(events)
                    if self._checkpoint_due():
                        await self._checkpoint()
        except Exception as exc:
            exit_on_agent_crash(exc)
        finally:
            self.stopping = True
            await self._settle_on_stop()
            await self.publisher.stop()

    def _batches(self, stream: faust.StreamT) -> AsyncIterator[list[faust.EventT]]:
        if self.intake is None:
            return stream.noack_take(self.settings.batch_size, within=self.settings.batch_timeout_s)
        return self._intake_batches(self.intake)

    async def _intake_batches(self, intake: BatchIntake) -> AsyncIterator[list[faust.EventT]]:
        while True:
            yield await intake.take(self.settings.batch_size)

    async def _on_timer(self) -> None:
        if not (self.pending.events and self._checkpoint_due()):
            return
        async with self.lock:
            if not (self.pending.events and self._checkpoint_due()):  # the agent checkpointed meanwhile
                return
            try:
                await self._checkpoint()
            except Exception as exc:
                exit_on_agent_crash(exc)

    async def _on_revoked(self, app: faust.App, revoked: set[Any], **_: Any) -> None:
        # Drop every cached twin, not only those of revoked partitions: the group's
        # offsets are reset to the table's markers after the rebalance, so the
        # unacked tail of every partition is redelivered and re-applied to the table state.
        partitions = {tp.partition for tp in revoked if tp.topic in self.input_topics}
        self.generation += 1
        self.rebalancing = True
        dropped = self.processor.drop_all()
        self.writing = {}  # a checkpoint straddling the rebalance writes nothing more
        if self.intake is not None:
            self.intake.clear()
        self.pending.clear()
        self.offsets.reset()
        self.guard.start({})
        log.info("rebalance: revoked partitions=%s, dropped %d cached twins; unacked events will be redelivered",
                 sorted(partitions), dropped)

    async def _on_assigned(self, app: faust.App, assigned: set[Any], **_: Any) -> None:
        partitions = sorted({tp.partition for tp in assigned if tp.topic in self.input_topics})
        log.info("rebalance: assigned partitions=%s; recovering their twins before consuming", partitions)

    async def _on_rebalance_complete(self, app: faust.App, **_: Any) -> None:
        """Tables are recovered and consuming has not resumed: align committed offsets to the markers."""
        assigned = [tp for tp in app.consumer.assignment() if tp.topic in self.input_topics]
        targets: dict[TP, int] = {}
        for partition in sorted({tp.partition for tp in assigned}):
            offsets = decode_marker(self._read_key(partition, marker_key(partition)))
            for tp in assigned:
                if tp.partition == partition and offsets and tp.topic in offsets:
                    targets[tp] = offsets[tp.topic]
                    self.offsets.known[(tp.topic, partition)] = offsets[tp.topic]
        from_start = await self._log_starts(app, [tp for tp in assigned if tp not in targets])
        targets.update(from_start)
        if targets and not await app.consumer._commit(targets):
            log.warning("rebalance: could not set committed offsets to the table's markers %s; "
                        "a newer rebalance will retry", _describe(targets))
        self.guard.start(targets)
        self.rebalancing = False
        log.info("rebalance complete: %d input partitions, resuming from the table's markers %s; "
                 "without a marker, from the log start %s", len(assigned),
                 _describe({tp: offset for tp, offset in targets.items() if tp not in from_start}), _describe(from_start))

    @staticmethod
    async def _log_starts(app: faust.App, unmarked: list[TP]) -> dict[TP, int]:
        """Where a partition without a marker resumes: the start of its log, since the table holds none of it.

        Why not the group's committed offset, or the first offset fetched: a partition that
        no checkpoint has written has no effect in the table, so everything in it must be
        applied. Its committed offset can be ahead of that (committed by an earlier design,
        or by hand), and the first record fetched can be too: records fetched while
        Faust's flow is suspended are dropped and fetched again by a seek to the committed
        offsets, which the client skips for a partition with none. The offset guard then
        seeks such a partition back to its log start instead of accepting a later offset.
        """
        if not unmarked:
            return {}
        try:
            starts = await app.consumer.earliest_offsets(*unmarked)
        except Exception as exc:  # noqa: BLE001 - the broker is asked again at the next rebalance
            # 0 is never past the log start; should the log start later, the guard takes its
            # first offset once its gap timeout has passed.
            log.warning("rebalance: could not read the log start of %s (%r); expecting offset 0",
                        ", ".join(f"{tp.topic}[{tp.partition}]" for tp in unmarked), exc)
            starts = {}
        return {tp: int(starts.get(tp) or 0) for tp in unmarked}

    # --- work -----------------------------------------------------------------------
    def _load_twin(self, entity_id: str) -> bytes | None:
        blob = self.writing.get(entity_id)  # a checkpoint in the background has not written it yet
        return blob if blob is not None else self.table.get(entity_id.encode())

    def _read_key(self, partition: int, key: bytes) -> bytes | None:
        """Read a key from one partition's local store (no current event places it here)."""
        db_for_partition = getattr(self.table.data, "_db_for_partition", None)
        if db_for_partition is not None:  # RocksDB: one database per partition
            return db_for_partition(partition).get(key)
        return self.table.get(key)

    async def _current(self, events: list[faust.EventT]) -> tuple[list[faust.EventT], list[faust.EventT]]:
        """Split a batch into events to apply and events only to acknowledge; discard the rest.

        Discarded (neither applied nor acked, so redelivered): events fetched before a
        rebalance, and events past an offset that has not been applied yet (the
        partition is sought back to it, :class:`OffsetGuard`). Acknowledged only: events
        the table or this generation already reflects.
        """
        if self.rebalancing:
            self._discard_stale(len(events), "while the group rebalances")
            return [], []
        generation = self.app.consumer_generation_id
        apply: list[faust.EventT] = []
        ack_only: list[faust.EventT] = []
        stale = skipped = 0
        now = time.monotonic()
        for event in events:
            message = event.message
            if message.generation_id != generation:
                stale += 1
                continue
            verdict = self.guard.check(message.tp, message.offset, now)
            if verdict == OffsetGuard.APPLY:
                apply.append(event)
            elif verdict == OffsetGuard.ACK:
                ack_only.append(event)
            else:
                skipped += 1
                if verdict == OffsetGuard.SEEK:
                    expected = self.guard.expected[message.tp]
                    log.error("offset skipped: topic=%s partition=%d got offset=%d, expected %d; seeking back",
                              message.topic, message.partition, message.offset, expected)
                    self.metrics.offset_rewinds.inc()
                    await self.app.consumer.seek(message.tp, expected)
        if stale:
            self._discard_stale(stale, "fetched before the rebalance")
        if skipped:
            self._discard_stale(skipped, "past an offset not yet applied")
        return apply, ack_only

    def _discard_stale(self, count: int, why: str) -> None:
        self.metrics.stale_events.inc(count)
        log.info("discarded %d events %s, unapplied and unacked; they will be redelivered", count, why)

    async def _handle(self, events: list[faust.EventT]) -> None:
        generation = self.generation
        events, ack_only = await self._current(events)
        if generation != self.generation:
            return
        self.pending.events.extend(ack_only)
        if not events:
            return
        records = []
        per_topic: dict[str, int] = {}
        for event in events:
            message = event.message
            records.append(Record(message.key, message.value, message.topic, message.partition, message.offset))
            self.pending.last_event_of_partition[message.partition] = event
            self.offsets.advance(message.topic, message.partition, message.offset)
            per_topic[message.topic] = per_topic.get(message.topic, 0) + 1
        for topic, count in per_topic.items():
            self.metrics.events_in.labels(topic).inc(count)
        output = self.processor.process(records)
        if self.on_batch is not None:
            self.on_batch(records)
        partitions = self.settings.partitions
        sends: list[Awaitable[Any]] = []
        if output.predictions:
            sends += await self.publisher.publish(self.predictions_topic, partitions, output.predictions)
        if output.dead_letters:
            sends += await self.publisher.publish(self.dlq_topic, partitions, output.dead_letters)
        if output.gaps:
            sends += await self.publisher.publish(self.gaps_topic, partitions, output.gaps)
        # the outputs' timestamps are taken by now
        observe_ages(self.metrics.ingest_latency, [event.message.timestamp for event in events], time.time())
        if generation != self.generation:
            # Revoked while publishing: the twins these events changed were dropped, so
            # the events must come again rather than be acked.
            log.info("batch straddled a rebalance; %d events will be redelivered", len(events))
            return
        self.pending.sends.extend(sends)
        self.pending.events.extend(events)

def _describe(offsets: dict[TP, int]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]={offset}" for tp, offset in sorted(offsets.items())) or "(none)"
