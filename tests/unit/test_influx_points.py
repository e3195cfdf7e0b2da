"""Prediction -> InfluxDB point conversion, backoff, and the writer's failure path (no servers)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from twinstream.broker import free_port
from twinstream.connectors.influx import (
    MEASUREMENT,
    InfluxWriteError,
    InfluxWriter,
    backoff_delays,
    prediction_point,
    to_line,
    to_line_protocol,
)
from twinstream.schemas.prediction import Prediction
from twinstream.settings import Settings
from twinstream.streams.influx_sink import PredictionSink, describe_events, sink_app_id
from twinstream.streams.metrics import WorkerMetrics


def make(**overrides: object) -> Prediction:
    values: dict[str, object] = dict(
        entity_id="engine-7",
        event_time="2026-01-01T00:00:00.123456Z",
        seq=3,
        target="rul",
        value=112.5,
        lower=90.0,
        upper=130.25,
        model_version="river-linreg-v1",
        prior_version="fleet-v2",
        updates=4,
        synthetic=False,
    )
    values.update(overrides)
    return Prediction.model_validate(values)


def test_line_protocol_is_exact() -> None:
    assert to_line(make()) == (
        "prediction,entity_id=engine-7,model_version=river-linreg-v1,prior_version=fleet-v2,"
        "synthetic=false,target=rul "
        "lower=90,seq=3i,updates=4i,upper=130.25,value=112.5 "
        "1767225600123456000"
    )


def test_optional_parts_are_left_out() -> None:
    line = to_line(make(lower=None, upper=None, prior_version=None, synthetic=True, seq=0, updates=0))
    assert line == (
        "prediction,entity_id=engine-7,model_version=river-linreg-v1,synthetic=true,target=rul "
        "seq=0i,updates=0i,value=112.5 1767225600123456000"
    )


def test_time_is_event_time_in_exact_nanoseconds() -> None:
    moment = datetime(2262, 4, 11, 23, 47, 16, 854775, tzinfo=UTC)  # near the int64 ns limit
    line = to_line(make(event_time=moment))
    assert line.endswith(" 9223372036854775000")
    before_epoch = to_line(make(event_time="1969-12-31T23:59:59.999999Z"))
    assert before_epoch.endswith(" -1000")


def test_point_tags_and_fields() -> None:
    point = prediction_point(make())
    assert point._name == MEASUREMENT
    assert point._tags == {
        "entity_id": "engine-7",
        "target": "rul",
        "synthetic": "false",
        "model_version": "river-linreg-v1",
        "prior_version": "fleet-v2",
    }
    assert point._fields == {"value": 112.5, "seq": 3, "updates": 4, "lower": 90.0, "upper": 130.25}
    assert isinstance(point._fields["seq"], int) and isinstance(point._fields["value"], float)


def test_synthetic_input_is_tagged_and_its_share_written() -> None:
    """Points are tagged synthetic vs measured; the share is a field (absent = 0)."""
    measured = prediction_point(make())
    filled = prediction_point(make(synthetic=True, synthetic_share=0.25))
    assert measured._tags["synthetic"] == "false" and "synthetic_share" not in measured._fields
    assert filled._tags["synthetic"] == "true" and filled._fields["synthetic_share"] == 0.25
    assert to_line(make(synthetic=True, synthetic_share=0.25)) == (
        "prediction,entity_id=engine-7,model_version=river-linreg-v1,prior_version=fleet-v2,"
        "synthetic=true,target=rul "
        "lower=90,seq=3i,synthetic_share=0.25,updates=4i,upper=130.25,value=112.5 "
        "1767225600123456000"
    )


def test_special_characters_are_escaped() -> None:
    line = to_line(make(model_version="river linreg,v=2", target="rul.cycles"))
    assert "model_version=river\\ linreg\\,v\\=2," in line
    assert "target=rul.cycles " in line


def test_float_formats_stay_floats() -> None:
    line = to_line(make(value=-0.5, lower=-1e-7, upper=1e21))
    assert "lower=-1e-07," in line and "upper=1e+21," in line and "value=-0.5 " in line


def test_same_prediction_gives_same_line() -> None:
    """Idempotency rests on identical series + timestamp for a redelivered prediction."""
    first, again = make(), make()
    assert to_line(first) == to_line(again)
    other_seq = make(seq=4, event_time="2026-01-01T00:00:01Z")
    assert to_line(other_seq).split(" ")[0] == to_line(first).split(" ")[0]  # same series


def test_batch_body_is_newline_separated() -> None:
    batch = [make(seq=n, event_time=f"2026-01-01T00:00:0{n}Z") for n in range(3)]
    body = to_line_protocol(batch)
    assert body.count("\n") == 2 and not body.endswith("\n")
    assert to_line_protocol([]) == ""


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.1, 1.0, jitter=0.0), 7))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])


def test_backoff_jitter_never_exceeds_cap() -> None:
    delays = list(itertools.islice(backoff_delays(0.5, 2.0, jitter=0.5, rng=random.Random(1)), 50))
    assert all(0 < d <= 2.0 for d in delays)
    assert max(delays[10:]) > 1.0


def test_writer_retries_then_raises_when_server_is_down() -> None:
    port = free_port()  # nothing listens here
    settings = Settings(influx_url=f"http://127.0.0.1:{port}", influx_max_backoff_s=0.4)
    slept: list[float] = []
    failures: list[int] = []
    with InfluxWriter(settings, timeout_ms=2000) as writer:
        with pytest.raises(InfluxWriteError) as info:
            writer.write([make()], max_attempts=4, sleep=slept.append, on_failure=lambda n, e: failures.append(n))
    assert info.value.retryable and info.value.status is None
    assert failures == [1, 2, 3, 4]
    assert len(slept) == 3 and all(d <= 0.4 for d in slept)


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_writer_needs_url(api: str) -> None:
    with pytest.raises(ValueError, match="influx_url"):
        InfluxWriter(Settings(influx_api=api))


def _event(value: object, offset: int, partition: int = 0) -> SimpleNamespace:
    return SimpleNamespace(value=value, message=SimpleNamespace(topic="ns.predictions", partition=partition, offset=offset))


def test_sink_decodes_and_counts_bad_messages(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(influx_url="http://127.0.0.1:9")
    metrics = WorkerMetrics()
    sink = PredictionSink(settings, writer=None, metrics=metrics)  # type: ignore[arg-type]
    good = make().model_dump_json().encode()
    events = [_event(good, 10), _event(b"{not json", 11), _event(b'{"entity_id": "x"}', 12), _event(None, 13)]
    with caplog.at_level("ERROR"):
        decoded, bad = sink.decode(events)  # type: ignore[arg-type]
    assert [prediction for _, prediction in decoded] == [make()]
    assert [(event.message.offset, reason.value) for event, reason, _ in bad] == [
        (11, "bad_json"), (12, "invalid"), (13, "invalid")]
    assert sink.bad_count == 3
    assert metrics.registry.get_sample_value("twinstream_sink_bad_messages_total") == 3
    assert "topic=ns.predictions partition=0 offset=11" in caplog.text


def test_describe_events_gives_offset_ranges() -> None:
    events = [_event(b"", 5, 1), _event(b"", 3, 1), _event(b"", 9, 0)]
    assert describe_events(events) == "ns.predictions[0]=9..9, ns.predictions[1]=3..5"  # type: ignore[arg-type]


def test_sink_app_id_is_its_own_group() -> None:
    assert sink_app_id(Settings(app_id="plant7")) == "plant7-influx-sink"
