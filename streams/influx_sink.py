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

Messages that are not valid Prediction JSON cannot be written; the worker validates
what it publishes, so they should not exist. Each one is logged with topic,
partition and offset, counted (``twinstream_sink_bad_messages_total``) and acked
with its batch, so one bad message cannot stall the sink forever.

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
from twinstream.schemas.prediction import Prediction
from twinstream.settings import Settings, settings_from_env
from twinstream.streams.app import create_app, declare_topics, quiet_library_loggers
from twinstream.streams.metrics import WorkerMetrics, serve_metrics

log = logging.getLogger(__name__)

PREDICTIONS_TOPIC = "twinstream.predictions"


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
    """Decodes a batch of prediction events and writes it, retrying until it is written.

    Kept apart from the Faust agent so the logic can be driven without a broker.
    """

    def __init__(self, settings: Settings, writer: InfluxWriter, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.writer = writer
        self.metrics = metrics
        self.bad_messages = Counter(
            "twinstream_sink_bad_messages_total",
            "Prediction messages the sink could not decode (logged and skipped)",
            registry=metrics.registry,
        )
        self.points_written = 0
        self.bad_count = 0

    def decode(self, events: Sequence[EventT]) -> list[Prediction]:
        """The valid predictions of a batch; invalid messages are logged and counted."""
        predictions: list[Prediction] = []
        for event in events:
            message = event.message
            raw: Any = event.value
            try:
                if not isinstance(raw, (bytes, bytearray, str)):
                    raise TypeError(f"value is {type(raw).__name__}, not bytes")
                predictions.append(Prediction.model_validate_json(raw))
            except (ValidationError, ValueError, TypeError) as exc:
                self.bad_count += 1
                self.bad_messages.inc()
                log.error(
                    "undecodable prediction skipped: topic=%s partition=%s offset=%s error=%s",
                    message.topic, message.partition, message.offset, str(exc).splitlines()[0][:200],
                )
        return predictions

    async def write(self, predictions: Sequence[Prediction], context: str) -> None:
        """Write one batch, retrying with capped exponential backoff until it succeeds.

        Runs the blocking HTTP write in a thread so heartbeats and fetching go on.
        Only cancellation (worker shutdown) ends it early; the batch is then not acked.
        """
        if not predictions:
            return
        body = to_line_protocol(predictions)
        delays = backoff_delays(self.writer.initial_backoff_s, self.settings.influx_max_backoff_s)
        attempt = 0
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            attempt += 1
            try:
                await asyncio.to_thread(self.writer.write_lines, body)
            except InfluxWriteError as exc:
                self.metrics.sink_failures.inc()
                failing_since = failing_since or loop.time()
                delay = next(delays)
                level = logging.WARNING if exc.retryable else logging.ERROR
                hint = "" if exc.retryable else " (will not heal by itself: check URL, database/bucket, token)"
                log.log(
                    level,
                    "influx write failed, batch held: size=%d attempt=%d retry_in=%.2fs %s error=%s%s",
                    len(predictions), attempt, delay, context, exc, hint,
                )
                await asyncio.sleep(delay)
                continue
            break
        self.points_written += len(predictions)
        self.metrics.sink_points.inc(len(predictions))
        if failing_since is not None:
            log.info(
                "influx write succeeded after %d attempts and %.1f s: size=%d %s",
                attempt, loop.time() - failing_since, len(predictions), context,
            )
        else:
            log.debug("influx batch written: size=%d %s", len(predictions), context)

    async def handle(self, stream: StreamT, events: Sequence[EventT]) -> None:
        """Write a batch of events, then ack them (never before: see module docstring)."""
        context = describe_events(events)
        predictions = self.decode(events)
        await self.write(predictions, context)
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
    topic = declare_topics(app, settings)[PREDICTIONS_TOPIC]
    sink = PredictionSink(settings, writer or InfluxWriter(settings), metrics or WorkerMetrics())
    batch_size = settings.influx_batch_size
    within = settings.influx_flush_interval_s

    async def influx_sink(stream: StreamT) -> None:
        log.info(
            "influx sink consuming %s -> %s (%s api, bucket %s), batch %d, flush %.2fs",
            topic.get_topic_name(), settings.influx_url, settings.influx_api, settings.influx_bucket, batch_size, within,
        )
        async for events in stream.noack_take(batch_size, within=within):
            await sink.handle(stream, events)

    app.agent(topic, name="influx-sink")(influx_sink)
    return app


def run_sink(settings: Settings) -> None:
    """Run the sink as a Faust worker until it is stopped (SIGINT/SIGTERM)."""
    quiet_library_loggers()
    if settings.broker is None:
        raise SystemExit("the InfluxDB sink needs a broker: set TWINSTREAM_BROKER (e.g. kafka://127.0.0.1:9092)")
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
