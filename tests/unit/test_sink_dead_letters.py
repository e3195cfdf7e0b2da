"""The sink's handling of points InfluxDB refuses for good, with a scripted writer (no server).

A refused batch is halved until the refused points are alone; each is dead-lettered
after bounded tries; transient failures are retried however long they last; every
event is acked only after its point is written or its dead letter sent. The real
servers are in tests/integration/test_influx_sink_dlq.py.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from twinstream.connectors.influx import InfluxWriteError
from twinstream.schemas import Prediction, RejectReason
from twinstream.settings import Settings
from twinstream.streams.influx_sink import PredictionSink
from twinstream.streams.metrics import WorkerMetrics


class ScriptedWriter:
    """Refuses (HTTP 400) any body holding a line of a ``bad`` entity; the first ``outage`` calls fail with 503."""

    initial_backoff_s = 0.001

    def __init__(self, outage: int = 0, status: int = 400) -> None:
        self.outage = outage
        self.status = status
        self.calls = 0
        self.written: set[str] = set()

    def write_lines(self, body: str) -> None:
        self.calls += 1
        if self.calls <= self.outage:
            raise InfluxWriteError("HTTP 503: unavailable", status=503, retryable=True)
        lines = body.split("\n")
        if any("entity_id=bad" in line for line in lines):
            raise InfluxWriteError(f"HTTP {self.status}: field type conflict", status=self.status, retryable=False)
        self.written.update(lines)


class Stream:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def ack(self, event: SimpleNamespace) -> None:
        self.acked.append(event.message.offset)


def events(entities: list[str]) -> list[SimpleNamespace]:
    out = []
    for offset, entity in enumerate(entities):
        value = Prediction(entity_id=entity, event_time="2026-01-01T00:00:00Z", seq=offset, target="rul",
                           value=1.0, model_version="m").model_dump_json().encode()
        out.append(SimpleNamespace(value=value, message=SimpleNamespace(
            topic="ns.predictions", partition=0, offset=offset, key=entity.encode(), value=value)))
    return out


def run(writer: ScriptedWriter, entities: list[str]) -> tuple[PredictionSink, Stream]:
    metrics = WorkerMetrics()
    sink = PredictionSink(Settings(influx_url="http://127.0.0.1:9", influx_max_backoff_s=0.01), writer, metrics)  # type: ignore[arg-type]
    stream = Stream()
    asyncio.run(sink.handle(stream, events(entities)))  # type: ignore[arg-type]
    return sink, stream


def test_refused_points_are_dead_lettered_and_the_rest_written() -> None:
    entities = [f"e{i}" for i in range(64)]
    entities[5] = entities[40] = "bad"
    writer = ScriptedWriter()
    sink, stream = run(writer, entities)
    assert sorted(stream.acked) == list(range(64))
    assert [(d.offset, d.reason, d.entity_id) for d in sink.dead_letters] == [
        (5, RejectReason.SINK_REJECTED, "bad"), (40, RejectReason.SINK_REJECTED, "bad")]
    assert "field type conflict" in sink.dead_letters[0].error
    assert sink.dead_letters[0].original == events(entities)[5].value
    assert len(writer.written) == 62 and sink.points_written == 62
    assert sink.metrics.registry.get_sample_value("twinstream_sink_dead_letters_total", {"reason": "sink_rejected"}) == 2
    # bounded: 3 tries of the batch, one per half on the way down, 3 per refused point
    assert writer.calls < 3 + 2 * 2 * 6 + 2 * 3 + 4


def test_transient_failures_are_retried_not_dead_lettered() -> None:
    writer = ScriptedWriter(outage=8)
    sink, stream = run(writer, [f"e{i}" for i in range(10)])
    assert not sink.dead_letters and len(writer.written) == 10 and sorted(stream.acked) == list(range(10))


def test_setup_errors_are_retried_not_dead_lettered() -> None:
    """401/403/404 (auth, missing database) would refuse every point: held and retried, not dead-lettered."""

    class MissingDatabase(ScriptedWriter):
        refusals = 0

        def write_lines(self, body: str) -> None:
            if self.refusals < 6:
                self.refusals += 1
                raise InfluxWriteError("HTTP 404: database not found", status=404, retryable=False)
            super().write_lines(body)

    writer = MissingDatabase()
    sink, stream = run(writer, [f"e{i}" for i in range(4)])
    assert not sink.dead_letters and len(writer.written) == 4 and writer.calls == 1 and writer.refusals == 6
