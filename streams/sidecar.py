"""The synthetic-data sidecar: gaps in, synthetic fills out, as its own Faust app.

Why its own app (app id ``{app_id}-sidecar``, its own consumer group), like the InfluxDB
sink: filling gaps is optional. If the sidecar is down or slow the twins keep running
on measured data (missing sensors keep their last state); when it comes back it resumes
from its committed offsets and fills what was published meanwhile.

Data flow: one agent reads the measured telemetry topic (each entity's recent window,
the context fills are conditioned on) and the gaps topic (what to fill) as one stream;
both are keyed by entity id with the same partition count, so an entity's telemetry and
gaps reach the same sidecar instance. :class:`~twinstream.streams.filler.GapFiller`
decides what to fill and :mod:`.fill_method` computes values and confidences; fills go
to the synthetic topic keyed by entity id.

Offsets (at-least-once): events are taken with ``noack_take`` and acknowledged only
after the fills they caused are confirmed by the broker, so a committed offset never
passes a gap whose fills are not on the topic. An open ``missing_sensor`` gap is
acknowledged only when its closing message has been handled: the gap's state lives in
memory, and leaving its offset uncommitted is what brings it back after a restart. A
restarted sidecar therefore re-reads from its committed offsets: open gaps, the
telemetry since (its new context) and every gap published while it was down. Fills
for redelivered messages are produced again; the twins keep the first fill per
``(entity, seq, sensor)`` and count the rest as duplicates. The context before the
committed telemetry offset would be lost with the process, so on every partition
assignment the sidecar first re-reads up to ``sidecar_warmup_records`` telemetry
records before its committed offset of each assigned partition (no group, no commit)
as context.

Run: ``twinstream sidecar`` (or ``python -m twinstream.streams.sidecar``) with the
worker's ``TWINSTREAM_*`` settings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import EventT, StreamT
from kafka import KafkaConsumer, TopicPartition
from pydantic import ValidationError

from twinstream.kafka_security import client_options, require_kafka
from twinstream.schemas.gaps import Gap, GapKind
from twinstream.schemas.telemetry import Telemetry
from twinstream.settings import Settings, settings_from_env
from twinstream.streams.app import create_app, declare_topics, quiet_library_loggers
from twinstream.streams.fill_method import BASELINE_VERSION, FillMethod, choose_fill_method
from twinstream.streams.filler import GapFiller
from twinstream.streams.influx_sink import describe_events
from twinstream.streams.metrics import WorkerMetrics, serve_metrics
from twinstream.streams.output import BatchPublisher
from twinstream.streams.topic_admin import ensure_topics

log = logging.getLogger(__name__)

MAX_HELD = 10_000  # open gaps whose offsets are held uncommitted; beyond it the oldest is acked


def sidecar_app_id(settings: Settings) -> str:
    """The sidecar's app id = consumer group, derived from the worker's so they never collide."""
    return f"{settings.app_id}-sidecar"


class Sidecar:
    """Wires a :class:`GapFiller` into a Faust app: agent, publisher, held open gaps."""

    def __init__(self, app: faust.App, settings: Settings, method: FillMethod, metrics: WorkerMetrics) -> None:
        topics = declare_topics(app, settings)
        self.settings = settings
        self.metrics = metrics
        self.method = method
        self.telemetry_topic = topics["twinstream.telemetry"].get_topic_name()
        self.gaps_topic = topics["twinstream.gaps"].get_topic_name()
        self.synthetic_topic = topics["twinstream.telemetry.synthetic"].get_topic_name()
        self.inputs = app.topic(
            self.telemetry_topic, self.gaps_topic, key_type=bytes, value_type=bytes,
            partitions=settings.partitions, key_serializer="raw", value_serializer="raw", internal=False,
        )
        self.filler = GapFiller(method, window=settings.sidecar_window, max_missed=settings.sidecar_max_missed)
        self.publisher = BatchPublisher(settings.broker_servers, client_id=f"{sidecar_app_id(settings)}-fills",
                                        security=client_options(settings))
        self.held: dict[tuple[str, str, int], EventT] = {}  # (entity, sensor, first_seq) -> open-gap event
        self.unacked_by_event: dict[int, set[tuple[str, str, int]]] = {}  # id(event) -> its still-open sensors
        self.fills_published = 0
        self.bad_messages = 0
        self._reported: dict[str, int] = {}
        self._fallbacks_reported: dict[str, int] = {}
        self.stream: StreamT | None = None
        self.context_ready = asyncio.Event()  # set once the context of the current assignment is re-read
        self.filler_lock = asyncio.Lock()
        app.agent(self.inputs, name="twinstream.sidecar")(self._agent)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_partitions_assigned.connect(self._on_assigned)

    async def _on_assigned(self, app: faust.App, assigned: set[Any], **_: Any) -> None:
        """Context before the committed offsets: re-read it (partitions are paused meanwhile)."""
        partitions = sorted(tp.partition for tp in assigned if tp.topic == self.telemetry_topic)
        if not partitions or self.settings.sidecar_warmup_records <= 0:
            self.context_ready.set()
            return
        started = time.monotonic()
        values = await asyncio.to_thread(
            read_before_committed, self.settings.broker_servers, sidecar_app_id(self.settings), self.telemetry_topic,
            partitions, self.settings.sidecar_warmup_records, security=client_options(self.settings),
        )
        primed = 0
        async with self.filler_lock:
            for value in values:
                try:
                    sample = Telemetry.model_validate_json(value)
                except (ValidationError, ValueError, TypeError):
                    continue
                self.filler.prime(sample)
                primed += 1
        self.context_ready.set()
        log.info("sidecar context: re-read %d telemetry records before the committed offsets of partitions %s in %.2f s",
                 primed, partitions, time.monotonic() - started)

    async def _agent(self, stream: StreamT) -> None:
        self.stream = stream
        await self.publisher.start()
        log.info("sidecar consuming %s + %s -> %s; fills by %s %s (%s)", self.telemetry_topic, self.gaps_topic,
                 self.synthetic_topic, self.method.kind, self.method.version, self.method.reason)
        try:
            async for events in stream.noack_take(self.settings.batch_size, within=self.settings.batch_timeout_s):
                await self.handle(stream, events)
        finally:
            await self.publisher.stop()

    async def _on_revoked(self, app: faust.App, revoked: set[Any], **_: Any) -> None:
        # Unacked events (held open gaps included) are redelivered from the committed offsets.
        self.context_ready.clear()
        async with self.filler_lock:
            self.filler.forget()
        self.held.clear()
        self.unacked_by_event.clear()
        log.info("rebalance: sidecar windows and held gaps dropped; uncommitted events will be redelivered")

    def _decode(self, event: EventT) -> Gap | Telemetry | None:
        message = event.message
        try:
            if message.topic == self.gaps_topic:
                return Gap.model_validate_json(message.value)
            return Telemetry.model_validate_json(message.value)
        except (ValidationError, ValueError, TypeError) as exc:
            if message.topic == self.gaps_topic:  # telemetry errors are the worker's (dead-letter topic)
                self.bad_messages += 1
                log.error("undecodable gap skipped: topic=%s partition=%s offset=%s error=%s",
                          message.topic, message.partition, message.offset, str(exc).splitlines()[0][:200])
            return None

    async def handle(self, stream: StreamT, events: Sequence[EventT]) -> None:
        """Update windows and gaps, publish the fills they call for, then ack (never before)."""
        # Faust may hand over events before the assignment's context is re-read; a gap
        # handled before its context would be filled from nothing.
        await self.context_ready.wait()
        ack: list[EventT] = []
        if log.isEnabledFor(logging.DEBUG):
            log.debug("sidecar batch: %d events %s", len(events), describe_events(events))
        items: list[Gap | Telemetry] = []
        for event in events:
            item = self._decode(event)
            if isinstance(item, Gap):
                ack.extend(self._hold_or_release(event, item))
            else:
                ack.append(event)
            if item is not None:
                items.append(item)
        # The fills run in a thread, so the event loop keeps heartbeats and fetching going;
        # the lock keeps a rebalance's forget/prime from touching the windows meanwhile. The
        # generator's part waits at most sidecar_generator_budget_s (fill_method), so a batch
        # is held up by no more than that plus the baseline's milliseconds.
        async with self.filler_lock:
            fills = await asyncio.to_thread(self._apply, items)
        self._report_fallbacks(fills)
        if fills:
            futures = await self.publisher.publish(
                self.synthetic_topic, self.settings.partitions,
                [(f.entity_id.encode(), f.model_dump_json().encode()) for f in fills],
            )
            await asyncio.gather(*futures)  # raises if the broker refused a fill: nothing is acked
            self.fills_published += len(fills)
            for fill in fills:
                self.metrics.sidecar_fills.labels(fill.generator or "unknown").inc()
            log.debug("published %d fills", len(fills))
        for reason, total in self.filler.unfilled.items():
            delta = total - self._reported.get(reason, 0)
            if delta:
                self.metrics.sidecar_unfilled.labels(reason).inc(delta)
                self._reported[reason] = total
        for event in ack:
            await stream.ack(event)

    def _report_fallbacks(self, fills: list[Telemetry]) -> None:
        """Count and log batches whose generator fills were replaced by the baseline (over budget, busy, error)."""
        counts = self.method.fallbacks
        for reason, total in counts.items():
            delta = total - self._fallbacks_reported.get(reason, 0)
            if not delta:
                continue
            self._fallbacks_reported[reason] = total
            self.metrics.sidecar_generator_fallbacks.labels(reason).inc(delta)
            sensors = set(getattr(self.method.generator, "sensors", ()))
            entities = sorted({f.entity_id for f in fills if sensors & set(f.metrics)})
            shown = ", ".join(entities[:10]) + (f" (+{len(entities) - 10} more)" if len(entities) > 10 else "")
            # busy follows a timeout for every batch until the abandoned call ends: quieter
            log.log(logging.INFO if reason == "busy" else logging.WARNING,
                    "generator %s not used for %d batch(es) (%s); their fills are the baseline's (%s); "
                    "entities with fills of generator sensors: %s",
                    self.method.version, delta, self.method.last_fallback, BASELINE_VERSION, shown or "none")

    def _apply(self, items: list[Gap | Telemetry]) -> list[Telemetry]:
        started = time.monotonic()
        for item in items:
            if isinstance(item, Gap):
                self.filler.on_gap(item)
            else:
                self.filler.on_telemetry(item)
        fills = self.filler.produce()
        if fills:
            log.debug("computed %d fills in %.2f s", len(fills), time.monotonic() - started)
        return fills

    def _hold_or_release(self, event: EventT, gap: Gap) -> list[EventT]:
        """Events to ack now: an open sensor gap is held until it closes (see the module doc)."""
        if gap.kind is not GapKind.MISSING_SENSOR or gap.first_seq is None:
            return [event]
        keys = {(gap.entity_id, sensor, gap.first_seq) for sensor in gap.sensors}
        if gap.open:
            for key in keys:
                self.held[key] = event
            self.unacked_by_event[id(event)] = set(keys)
            out = []
            while len(self.held) > MAX_HELD:  # bounded: the oldest open gap gives up its offset hold
                key, old = next(iter(self.held.items()))
                out.extend(self._release(key, old))
            return out
        out = [event]
        for key in keys:
            held = self.held.get(key)
            if held is not None:
                out.extend(self._release(key, held))
        return out

    def _release(self, key: tuple[str, str, int], event: EventT) -> list[EventT]:
        self.held.pop(key, None)
        remaining = self.unacked_by_event.get(id(event))
        if remaining is None:
            return []
        remaining.discard(key)
        if remaining:
            return []
        del self.unacked_by_event[id(event)]
        return [event]


def read_before_committed(bootstrap: str, group: str, topic: str, partitions: list[int], records: int,
                          timeout_s: float = 15.0, security: dict[str, Any] | None = None) -> list[bytes]:
    """Values of up to ``records`` messages before ``group``'s committed offset, per partition (blocking)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, **(security or {}))
    out: list[bytes] = []
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends: dict[TopicPartition, int] = {}
        for tp in tps:
            committed = consumer.committed(tp) or 0
            start = max(0, committed - records)
            if committed > start:
                consumer.seek(tp, start)
                ends[tp] = committed
            else:
                consumer.pause(tp)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=300, max_records=5000).items():
                end = ends.get(tp)
                if end is None:
                    continue
                out.extend(m.value for m in messages if m.offset < end and m.value)
                if messages and messages[-1].offset >= end - 1:
                    del ends[tp]
                    consumer.pause(tp)
        if ends:
            log.warning("sidecar context: gave up re-reading %s after %.0f s", sorted(tp.partition for tp in ends), timeout_s)
    finally:
        consumer.close(autocommit=False)
    return out


def create_sidecar_app(
    settings: Settings, *, method: FillMethod | None = None, metrics: WorkerMetrics | None = None
) -> tuple[faust.App, Sidecar]:
    """A Faust app whose one agent turns gaps into synthetic fills."""
    app_settings = settings.model_copy(update={"app_id": sidecar_app_id(settings), "store": "memory://"})
    app = create_app(app_settings)
    sidecar = Sidecar(app, settings, method or choose_fill_method(settings), metrics or WorkerMetrics())
    return app, sidecar


def run_sidecar(settings: Settings) -> None:
    """Run the sidecar as a Faust worker until SIGINT/SIGTERM (blocking)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    quiet_library_loggers()
    if settings.broker is None:
        raise SystemExit("the sidecar needs a broker: set TWINSTREAM_BROKER (e.g. kafka://127.0.0.1:9092)")
    require_kafka(settings)  # wrong credentials / TLS settings: exit with the cause, not retry forever
    ensure_topics(settings)
    method = choose_fill_method(settings)
    log.info("sidecar fill method: %s %s: %s", method.kind, method.version, method.reason)
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        serve_metrics(metrics, settings.metrics_port, settings.metrics_addr)
    app, _ = create_sidecar_app(settings, method=method, metrics=metrics)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def main() -> None:
    """Entry point of ``python -m twinstream.streams.sidecar`` (settings from TWINSTREAM_*)."""
    run_sidecar(settings_from_env())


if __name__ == "__main__":
    main()
