"""The InfluxDB sink: predictions topic -> InfluxDB, in batches, losing nothing.

Why a separate Faust app (app id ``{app_id}-influx-sink``, its own consumer group):
the sink must be able to fall behind - InfluxDB down for an hour - without slowing
the twins, and to be scaled, restarted or left out (no ``influx_url``) on its own.

No-loss guarantee: the agent takes events with ``stream.noack_take`` (no automatic
acks), writes the batch, and only then acks its events. Faust commits an offset only
when every event up to it is acked, so a committed offset never passes a point that
is not in InfluxDB. While InfluxDB is down the write is retried with capped
exponential backoff for as long as it takes; the agent does not take the next batch
meanwhile, the stream buffer fills and Faust pauses fetching (back-pressure). If the
process dies mid-outage, the unacked events are delivered again after restart or
rebalance and re-written; points are idempotent (same series and timestamp
overwrite, see :mod:`twinstream.connectors.influx`), so redelivery does no harm.

Points InfluxDB refuses for good (an HTTP 4xx about the data, e.g. 400 for a field
type conflict; not 401/403/404, which concern the server's setup, nor 408/429) are not
retried forever, which would stall the sink on one point: the batch is tried
``REJECT_ATTEMPTS`` times, then split in halves, each half tried once and split again
while refused, down to single points; a single point refused ``REJECT_ATTEMPTS`` times
goes to ``<ns>.predictions.dlq`` as a :class:`~twinstream.schemas.dead_letter.DeadLetter`
(reason ``sink_rejected``, InfluxDB's answer as the error, original bytes and
coordinates), counted in ``twinstream_sink_dead_letters_total{reason}``. Rewriting the
points of a half that was partly written (InfluxDB 1.x writes the rest of a batch with
a bad point) is harmless: points are idempotent. A transient failure met while halving
is retried as before, so nothing is lost while InfluxDB is down. The events are acked
only after the broker confirmed their dead letters.

Messages that are not valid Prediction JSON cannot be written; the worker validates
what it publishes, so they should not exist. Each one is logged with topic,
partition and offset, counted (``twinstream_sink_bad_messages_total``), sent to the
same dead-letter topic (reason ``bad_json`` or ``invalid``) and acked with its batch,
so one bad message cannot stall the sink forever.

Run: ``python -m twinstream.streams.influx_sink`` with ``TWINSTREAM_BROKER``,
``TWINSTREAM_INFLUX_URL`` and the other ``TWINSTREAM_*`` settings in the environment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import EventT, StreamT
from prometheus_client import Counter
from pydantic import ValidationError

from twinstream.connectors.influx import InfluxWriteError, InfluxWriter, backoff_delays, to_line_protocol
from twinstream.kafka_security import client_options, require_kafka
from twinstream.schemas.dead_letter import MAX_ERROR_CHARS, MAX_KEY_BYTES, DeadLetter, RejectReason
from twinstream.schemas.prediction import Prediction
from twinstream.settings import Settings, settings_from_env
from twinstream.streams.app import create_app, declare_topics, quiet_library_loggers
from twinstream.streams.metrics import WorkerMetrics, serve_metrics
from twinstream.streams.output import BatchPublisher

log = logging.getLogger(__name__)

PREDICTIONS_TOPIC = "twinstream.predictions"
PREDICTIONS_DLQ_TOPIC = "twinstream.predictions.dlq"
REJECT_ATTEMPTS = 3  # tries of a batch, and of a single point, that InfluxDB refuses for good

Item = tuple[EventT, Prediction]


def sink_app_id(settings: Settings) -> str:
    """The sink's app id = consumer group, derived from the worker's so they never collide."""
    return f"{settings.app_id}-influx-sink"


def describe_events(events: Sequence[EventT]) -> str:
    """``topic[partition]=first..last`` for every partition in a batch, for log lines."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for event in events:
        message = event.message
        span = ranges.setdefault((message.topic, message.partition), [message.offset, message.offset])
        span[0] = min(span[0], message.offset)
        span[1] = max(span[1], message.offset)
    return ", ".join(f"{topic}[{partition}]={lo}..{hi}" for (topic, partition), (lo, hi) in sorted(ranges.items()))


class PredictionSink:
    """Decodes a batch of prediction events and writes it, retrying until it is written or dead-lettered.

    Kept apart from the Faust agent so the logic can be driven without a broker.
    ``publisher`` and ``dlq_topic`` send dead letters; without them (tests) they are
    kept in :attr:`dead_letters` only.
    """

    def __init__(self, settings: Settings, writer: InfluxWriter, metrics: WorkerMetrics,
                 publisher: BatchPublisher | None = None, dlq_topic: str | None = None,
                 reject_attempts: int = REJECT_ATTEMPTS) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.publisher = publisher
        self.dlq_topic = dlq_topic
        self.reject_attempts = max(1, reject_attempts)
        self.bad_messages = Counter(
            "twinstream_sink_bad_messages_total",
            "Prediction messages the sink could not decode (sent to the sink's dead-letter topic)",
            registry=metrics.registry,
        )
        self.points_written = 0
        self.bad_count = 0
        self.dead_letters: list[DeadLetter] = []

    def decode(self, events: Sequence[EventT]) -> tuple[list[Item], list[tuple[EventT, RejectReason, str]]]:
        """The valid predictions of a batch, and the invalid messages with reason and error (logged, counted)."""
        predictions: list[Item] = []
        bad: list[tuple[EventT, RejectReason, str]] = []
        for event in events:
            message = event.message
            raw: Any = event.value
            try:
                if not isinstance(raw, (bytes, bytearray, str)):
                    raise TypeError(f"value is {type(raw).__name__}, not bytes")
                predictions.append((event, Prediction.model_validate_json(raw)))
            except (ValidationError, ValueError, TypeError) as exc:
                self.bad_count += 1
                self.bad_messages.inc()
                detail = str(exc).splitlines()[0][:200]
                json_error = isinstance(exc, ValidationError) and any(
                    e["type"] in ("json_invalid", "json_type") for e in exc.errors(include_url=False))
                bad.append((event, RejectReason.BAD_JSON if json_error else RejectReason.INVALID, str(exc)))
                log.error(
                    "undecodable prediction dead-lettered: topic=%s partition=%s offset=%s error=%s",
                    message.topic, message.partition, message.offset, detail,
                )
        return predictions, bad

    async def write(self, predictions: Sequence[Prediction], context: str) -> None:
        """Write one batch, retrying with capped exponential backoff until it succeeds (no dead letters).

        Runs the blocking HTTP write in a thread so heartbeats and fetching go on.
        Only cancellation (worker shutdown) ends it early; the batch is then not acked.
        """
        if predictions:
            await self._write_items([(None, p) for p in predictions], context, attempts=None)  # type: ignore[misc]

    async def write_or_reject(self, items: Sequence[Item], context: str) -> list[tuple[Item, InfluxWriteError]]:
        """Write ``items``; return those InfluxDB refused for good (module docstring), with its answer."""
        if not items:
            return []
        return await self._write_items(list(items), context, attempts=self.reject_attempts)

    async def _write_items(self, items: list[Item], context: str, attempts: int | None,
                           ) -> list[tuple[Item, InfluxWriteError]]:
        """Write with retries; refused for good ``attempts`` times (None: never give up): halve, or reject one."""
        body = to_line_protocol(p for _, p in items)
        delays = backoff_delays(self.writer.initial_backoff_s, self.settings.influx_max_backoff_s)
        attempt = refusals = 0
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self.writer.write_lines, body)
                break
            except InfluxWriteError as exc:
                self.metrics.sink_failures.inc()
                failing_since = failing_since or loop.time()
                if attempts is not None and exc.rejects_points:
                    refusals += 1
                    if refusals >= attempts:
                        return await self._give_up(items, context, exc)
                delay = next(delays)
                level = logging.WARNING if exc.retryable else logging.ERROR
                hint = "" if exc.retryable or exc.rejects_points else " (will not heal by itself: check URL, database/bucket, token)"
                log.log(
                    level,
                    "influx write failed, batch held: size=%d attempt=%d retry_in=%.2fs %s error=%s%s",
                    len(items), attempt, delay, context, exc, hint,
                )
                await asyncio.sleep(delay)
        self.points_written += len(items)
        self.metrics.sink_points.inc(len(items))
        if failing_since is not None:
            log.info(
                "influx write succeeded after %d attempts and %.1f s: size=%d %s",
                attempt, loop.time() - failing_since, len(items), context,
            )
        else:
            log.debug("influx batch written: size=%d %s", len(items), context)
        return []

    async def _give_up(self, items: list[Item], context: str, exc: InfluxWriteError) -> list[tuple[Item, InfluxWriteError]]:
        """A batch refused for good: halve it (each half tried once, single points ``reject_attempts`` times)."""
        if len(items) == 1:
            event, prediction = items[0]
            log.error("influx refused a point for good, dead-lettered: entity=%s seq=%s %s error=%s",
                      prediction.entity_id, prediction.seq, context, exc)
            return [(items[0], exc)]
        log.warning("influx refused a batch of %d points (%s); writing it in halves to find the refused points: %s",
                    len(items), context, exc)
        middle = len(items) // 2
        refused = []
        for half in (items[:middle], items[middle:]):
            refused += await self._write_items(half, context, attempts=self.reject_attempts if len(half) == 1 else 1)
        return refused

    async def send_dead_letters(self, letters: list[tuple[EventT, RejectReason, str, str | None]]) -> None:
        """Publish dead letters and wait for the broker to confirm them (raises if it refused: nothing is acked)."""
        if not letters:
            return
        encoded: list[tuple[bytes | None, bytes]] = []
        for event, reason, error, entity_id in letters:
            message = event.message
            raw = message.value if isinstance(message.value, (bytes, bytearray)) else str(message.value).encode()
            key = message.key if isinstance(message.key, (bytes, bytearray)) or message.key is None else str(message.key).encode()
            letter = DeadLetter(original=bytes(raw), key=None if key is None else bytes(key)[:MAX_KEY_BYTES],
                                topic=message.topic, partition=message.partition, offset=message.offset,
                                reason=reason, error=error[:MAX_ERROR_CHARS] or reason.value, entity_id=entity_id)
            self.dead_letters.append(letter)
            self.metrics.sink_dead_letters.labels(reason.value).inc()
            encoded.append((letter.key, letter.model_dump_json().encode()))
        if self.publisher is not None and self.dlq_topic is not None:
            futures = await self.publisher.publish(self.dlq_topic, self.settings.partitions, encoded)
            await asyncio.gather(*futures)

    async def handle(self, stream: StreamT, events: Sequence[EventT]) -> None:
        """Write a batch of events (or dead-letter what cannot be written), then ack them (never before)."""
        context = describe_events(events)
        items, bad = self.decode(events)
        refused = await self.write_or_reject(items, context)
        letters = [(event, reason, error, None) for event, reason, error in bad]
        letters += [(event, RejectReason.SINK_REJECTED, str(exc), prediction.entity_id)
                    for (event, prediction), exc in refused]
        await self.send_dead_letters(letters)
        for event in events:
            await stream.ack(event)


def create_sink_app(
    settings: Settings, *, writer: InfluxWriter | None = None, metrics: WorkerMetrics | None = None
) -> faust.App:
    """A Faust app whose one agent writes the predictions topic to InfluxDB."""
    if not settings.influx_url:
        raise ValueError("the InfluxDB sink needs settings.influx_url (TWINSTREAM_INFLUX_URL)")
    # The sink keeps no tables: a memory store avoids a RocksDB directory per sink.
    app_settings = settings.model_copy(update={"app_id": sink_app_id(settings), "store": "memory://"})
    app = create_app(app_settings)
    topics = declare_topics(app, settings)
    topic = topics[PREDICTIONS_TOPIC]
    publisher = BatchPublisher(settings.broker_servers, client_id=f"{sink_app_id(settings)}-dlq", security=client_options(settings))
    sink = PredictionSink(settings, writer or InfluxWriter(settings), metrics or WorkerMetrics(),
                          publisher=publisher, dlq_topic=topics[PREDICTIONS_DLQ_TOPIC].get_topic_name())
    batch_size = settings.influx_batch_size
    within = settings.influx_flush_interval_s

    async def influx_sink(stream: StreamT) -> None:
        log.info(
            "influx sink consuming %s -> %s (%s api, bucket %s), batch %d, flush %.2fs",
            topic.get_topic_name(), settings.influx_url, settings.influx_api, settings.influx_bucket, batch_size, within,
        )
        await publisher.start()
        try:
            async for events in stream.noack_take(batch_size, within=within):
                await sink.handle(stream, events)
        finally:
            await publisher.stop()

    app.agent(topic, name="influx-sink")(influx_sink)
    return app


def run_sink(settings: Settings) -> None:
    """Run the sink as a Faust worker until it is stopped (SIGINT/SIGTERM)."""
    quiet_library_loggers()
    if settings.broker is None:
        raise SystemExit("the InfluxDB sink needs a broker: set TWINSTREAM_BROKER (e.g. kafka://127.0.0.1:9092)")
    require_kafka(settings)  # wrong credentials / TLS settings: exit with the cause, not retry forever
    metrics = WorkerMetrics()
    if settings.metrics_port is not None:
        serve_metrics(metrics, settings.metrics_port, settings.metrics_addr)
    app = create_sink_app(settings, metrics=metrics)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()


def main() -> None:
    """Entry point of ``python -m twinstream.streams.influx_sink`` (settings from TWINSTREAM_*)."""
    run_sink(settings_from_env())


if __name__ == "__main__":
    main()
