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
* On a rebalance every cached twin of a revoked partition is dropped, and a
  checkpoint that straddles a rebalance does not ack: Faust seeks back to the
  committed offsets, so those events come again and are applied to the table state.
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
import weakref
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.streams import _current_event  # see _as_event_of_partition

from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.output import BatchPublisher
from twinstream.streams.processor import Record, TwinProcessor

log = logging.getLogger(__name__)

TWIN_TABLE = "twins"
CHECKPOINT_KEY_PREFIX = "__checkpoint__."


@dataclass
class _Pending:
    """Work done since the last checkpoint: events to ack and sends to confirm."""

    events: list[faust.EventT] = field(default_factory=list)
    sends: list[Awaitable[Any]] = field(default_factory=list)
    last_event_of_partition: dict[int, faust.EventT] = field(default_factory=dict)

    def clear(self) -> None:
        self.events.clear()
        self.sends.clear()
        self.last_event_of_partition.clear()


class IngestAgent:
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
        self.publisher = BatchPublisher(settings.broker_servers, client_id=f"{settings.app_id}-outputs")
        self.pending = _Pending()
        self.lock = asyncio.Lock()
        self.generation = 0
        self.last_checkpoint = time.monotonic()
        self.checkpoint_number = 0
        self.stream: faust.StreamT | None = None
        app.agent(self.inputs, name="twinstream.ingest")(self._agent)
        app.timer(max(settings.checkpoint_interval_s, 0.05))(self._on_timer)
        app.on_partitions_revoked.connect(self._on_revoked)

    # --- Faust callbacks ---------------------------------------------------------
    async def _agent(self, stream: faust.StreamT) -> None:
        self.stream = stream
        await self.publisher.start()
        try:
            async for events in stream.noack_take(self.settings.batch_size, within=self.settings.batch_timeout_s):
                async with self.lock:
                    await self._handle(events)
                    if time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
                        await self._checkpoint()
        finally:
            await self.publisher.stop()

    async def _on_timer(self) -> None:
        if self.pending.events and time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_interval_s:
            async with self.lock:
                await self._checkpoint()

    async def _on_revoked(self, app: faust.App, revoked: set[Any], **_: Any) -> None:
        # Drop every cached twin, not only those of revoked partitions: Faust seeks all
        # assigned partitions back to their committed offsets after a rebalance, so the
        # unacked tail is redelivered and re-applied to the table state.
        partitions = {tp.partition for tp in revoked if tp.topic == self.telemetry.get_topic_name()}
        self.generation += 1
        dropped = self.processor.drop_all()
        self.pending.clear()
        log.info("rebalance: revoked partitions=%s, dropped %d cached twins; unacked events will be redelivered",
                 sorted(partitions), dropped)

    # --- work -----------------------------------------------------------------------
    def _load_twin(self, entity_id: str) -> bytes | None:
        return self.table.get(entity_id.encode())

    async def _handle(self, events: list[faust.EventT]) -> None:
        records = []
        per_topic: dict[str, int] = {}
        for event in events:
            message = event.message
            records.append(Record(message.key, message.value, message.topic, message.partition, message.offset))
            self.pending.last_event_of_partition[message.partition] = event
            per_topic[message.topic] = per_topic.get(message.topic, 0) + 1
        for topic, count in per_topic.items():
            self.metrics.events_in.labels(topic).inc(count)
        output = self.processor.process(records)
        partitions = self.settings.partitions
        sends = self.pending.sends
        if output.predictions:
            sends += await self.publisher.publish(self.predictions_topic, partitions, output.predictions)
        if output.dead_letters:
            sends += await self.publisher.publish(self.dlq_topic, partitions, output.dead_letters)
        if output.gaps:
            sends += await self.publisher.publish(self.gaps_topic, partitions, output.gaps)
        self.pending.events.extend(events)

    async def _checkpoint(self) -> None:
        """Confirm sends, write dirty twins and await their changelog delivery, markers, then ack."""
        generation = self.generation
        started = time.monotonic()
        events = list(self.pending.events)
        sends = list(self.pending.sends)
        last_events = dict(self.pending.last_event_of_partition)
        self.pending.clear()
        if sends:
            await asyncio.gather(*sends)  # raises if the broker refused any prediction/dead letter
        written = 0
        dirty = self.processor.take_dirty()
        changelog: list[Awaitable[Any]] = []
        for partition, items in dirty.items():
            with _as_event_of_partition(last_events.get(partition)):
                for entity_id, blob in items:
                    changelog.append(self._write_table(partition, entity_id.encode(), blob))
                    written += 1
        await asyncio.gather(*changelog)  # every twin is in the changelog before any marker
        if dirty:
            await asyncio.gather(*self._write_markers(dirty.keys(), last_events))
        if generation != self.generation:
            log.info("checkpoint straddled a rebalance; %d events will be redelivered instead of acked", len(events))
            return
        assert self.stream is not None
        for event in events:
            await self.stream.ack(event)
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoints.inc()
        self.metrics.checkpoint_seconds.observe(self.last_checkpoint - started)
        log.debug("checkpoint: %d twins written, %d events acked", written, len(events))

    def _write_table(self, partition: int, key: bytes, value: bytes) -> Awaitable[Any]:
        """Write one table entry and return the future of its changelog delivery.

        Not ``table[key] = value``: that drops the changelog future, and Faust's producer
        buffer flush gives up after 100 ms without a message sent, so a flush can return
        with twin states still unsent. Acknowledging inputs on that basis lost updates
        in the crash test on a loaded machine. Awaiting each record's own delivery does not.
        """
        self.table.data[key] = value  # local RocksDB (partition from the current event)
        return self.table.send_changelog(partition, key, value)

    def _write_markers(self, partitions: Iterable[int], last_events: dict[int, faust.EventT]) -> list[Awaitable[Any]]:
        """End each written changelog partition with a one-record batch.

        The embedded Tansu 0.6.0 reports a partition's high watermark as the base offset
        of its last record batch + 1, so the tail of a multi-record batch would be
        invisible to Faust's changelog recovery. A single marker record, flushed after
        the twins, makes the reported high watermark exact again. With Apache Kafka it
        is one small record per partition per checkpoint. Marker keys are not valid
        entity ids, so they never collide with a twin.
        """
        self.checkpoint_number += 1
        marker = orjson.dumps({"checkpoint": self.checkpoint_number, "time": time.time()})
        futures = []
        for partition in partitions:
            with _as_event_of_partition(last_events.get(partition)):
                futures.append(self._write_table(partition, f"{CHECKPOINT_KEY_PREFIX}{partition}".encode(), marker))
        return futures


class _as_event_of_partition:
    """Make Faust's table write go to ``event``'s partition.

    Faust picks the changelog partition (and the RocksDB partition store) of a table
    write from the *current event*, a context variable that its own stream iteration
    sets. Checkpoints write outside that iteration, so we set it to the latest event
    of the partition being written. This touches one private name of faust-streaming
    (pinned to 0.15.3); the crash-recovery integration test guards it.
    """

    def __init__(self, event: faust.EventT | None) -> None:
        if event is None:
            raise RuntimeError("no event of this partition in the checkpoint; cannot place table writes")
        self.event = event
        self.token: Any = None

    def __enter__(self) -> None:
        self.token = _current_event.set(weakref.ref(self.event))

    def __exit__(self, *exc: object) -> None:
        _current_event.reset(self.token)
