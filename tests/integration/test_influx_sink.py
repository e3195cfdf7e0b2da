"""The InfluxDB sink against real servers: VictoriaMetrics (v2 API), InfluxDB 1.x (v1 API), Tansu.

(a) writer round trips, read back and compared; (b) the sink process end to end,
topic -> VictoriaMetrics; (c) an outage: VictoriaMetrics stopped mid-run and restarted
(once with the sink also SIGKILLed meanwhile), and every (entity, seq) must be there
afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tsdb_servers import InfluxDB1Server, VictoriaMetricsServer
from worker_harness import wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.connectors.influx import InfluxWriteError, InfluxWriter
from twinstream.schemas.prediction import Prediction
from twinstream.settings import Settings

PARTITIONS = 4
BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def make_predictions(prefix: str, count: int, entities: int = 20, first_seq: int = 0) -> list[Prediction]:
    """``count`` predictions over ``entities`` entities, seq increasing per entity.

    Event times are distinct per entity even at VictoriaMetrics' millisecond precision,
    and carry microseconds so InfluxDB's nanosecond timestamps are really exercised.
    """
    predictions = []
    for n in range(count):
        entity, k = n % entities, first_seq + n // entities
        value = 200.0 - k + entity / 8
        predictions.append(
            Prediction(
                entity_id=f"{prefix}-e{entity:03d}",
                event_time=BASE_TIME + timedelta(seconds=k, microseconds=1000 * entity + 7),
                seq=k,
                target="rul",
                value=value,
                lower=None if k % 5 == 0 else value - 12.5,
                upper=None if k % 5 == 0 else value + 1e-3,
                model_version="river-linreg-v1",
                prior_version="fleet-v1" if entity % 2 else None,
                updates=k,
                synthetic=entity % 3 == 0,
            )
        )
    return predictions


async def _produce(bootstrap: str, topic: str, predictions: list[Prediction], create: bool) -> None:
    if create:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)])
        finally:
            await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, p.model_dump_json().encode(), key=p.entity_id.encode()) for p in predictions
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce(broker: EmbeddedBroker, topic: str, predictions: list[Prediction], create: bool = False) -> None:
    asyncio.run(asyncio.wait_for(_produce(broker.bootstrap_servers, topic, predictions, create), timeout=60))


class SinkProcess:
    """``python -m twinstream.streams.influx_sink`` as a child process."""

    def __init__(self, env: dict[str, str], log_path: Path, metrics_port: int) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "twinstream.streams.influx_sink"],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def metric(self, name: str) -> float:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return 0.0
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final offset commit."""
        if self.alive():
            self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def start_sink(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> Iterator[Callable[[str], SinkProcess]]:
    """Start sink processes against a VictoriaMetrics URL; all are stopped at teardown."""
    started: list[SinkProcess] = []

    def start(influx_url: str) -> SinkProcess:
        metrics_port = free_port()
        env = {
            **os.environ,
            "TWINSTREAM_BROKER": kafka_broker.url,
            "TWINSTREAM_APP_ID": app_id,
            "TWINSTREAM_TOPIC_NAMESPACE": namespace_of(app_id),
            "TWINSTREAM_PARTITIONS": str(PARTITIONS),
            "TWINSTREAM_DATA_DIR": str(tmp_path / "data"),
            "TWINSTREAM_SESSION_TIMEOUT_S": "6",
            "TWINSTREAM_INFLUX_URL": influx_url,
            "TWINSTREAM_INFLUX_API": "v2",
            "TWINSTREAM_INFLUX_BATCH_SIZE": "400",
            "TWINSTREAM_INFLUX_FLUSH_INTERVAL_S": "0.2",
            "TWINSTREAM_INFLUX_MAX_BACKOFF_S": "1.0",
            "TWINSTREAM_METRICS_PORT": str(metrics_port),
            "TWINSTREAM_LOG_LEVEL": "INFO",
        }
        sink = SinkProcess(env, tmp_path / f"sink-{len(started)}.log", metrics_port)
        started.append(sink)
        return sink

    try:
        yield start
    finally:
        for sink in started:
            sink.stop()


def namespace_of(app_id: str) -> str:
    """A topic namespace unique to the test (app ids look like ``tstest-<hex>``)."""
    return app_id.replace("-", "_")


def expected_keys(predictions: list[Prediction]) -> set[tuple[str, int]]:
    return {(p.entity_id, p.seq) for p in predictions}


# --- (a) writer round trips ----------------------------------------------------------------


def test_writer_round_trip_victoria_metrics_v2(victoria_metrics: VictoriaMetricsServer, app_id: str) -> None:
    predictions = make_predictions(app_id, 200)
    settings = Settings(influx_url=victoria_metrics.url, influx_api="v2", influx_max_backoff_s=0.5)
    with InfluxWriter(settings) as writer:
        assert writer.write(predictions, max_attempts=3) == 200
        writer.write(predictions[:50], max_attempts=3)  # a redelivery must overwrite, not add

    expected = {
        (p.entity_id, p.event_time_ns // 1_000_000): p for p in predictions  # VictoriaMetrics keeps ms
    }
    series = victoria_metrics.export(f'{{__name__=~"prediction_.*",entity_id=~"{app_id}-.*"}}')
    seen: dict[str, int] = {}
    for item in series:
        labels = dict(item["metric"])
        field = labels.pop("__name__").removeprefix("prediction_")
        entity = labels["entity_id"]
        for value, ts in zip(item["values"], item["timestamps"]):
            p = expected[(entity, ts)]
            assert labels == {
                "entity_id": p.entity_id,
                "target": p.target,
                "synthetic": "true" if p.synthetic else "false",
                "model_version": p.model_version,
                **({"prior_version": p.prior_version} if p.prior_version else {}),
            }
            assert value == pytest.approx(getattr(p, field), rel=1e-9), (field, p)
            seen[field] = seen.get(field, 0) + 1
    with_interval = sum(p.lower is not None for p in predictions)
    assert seen == {"value": 200, "seq": 200, "updates": 200, "lower": with_interval, "upper": with_interval}


def test_writer_round_trip_influxdb_v1(influxdb_v1: InfluxDB1Server, app_id: str) -> None:
    database = app_id.replace("-", "_")
    influxdb_v1.create_database(database)
    predictions = make_predictions(app_id, 200)
    settings = Settings(influx_url=influxdb_v1.url, influx_api="v1", influx_bucket=database)
    with InfluxWriter(settings) as writer:
        writer.write(predictions, max_attempts=3)
        writer.write(predictions[:50], max_attempts=3)  # same series + timestamp overwrites

    rows = influxdb_v1.rows("SELECT * FROM prediction", database)
    assert len(rows) == 200
    by_key = {(row["entity_id"], row["time"]): row for row in rows}
    for p in predictions:
        row = by_key[(p.entity_id, p.event_time_ns)]  # exact nanoseconds
        assert row["target"] == p.target
        assert row["synthetic"] == ("true" if p.synthetic else "false")
        assert row["model_version"] == p.model_version
        assert row["prior_version"] == p.prior_version
        assert row["value"] == p.value and row["lower"] == p.lower and row["upper"] == p.upper
        assert row["seq"] == p.seq and row["updates"] == p.updates

    field_types = influxdb_v1.rows("SHOW FIELD KEYS FROM prediction", database)
    assert {r["fieldKey"]: r["fieldType"] for r in field_types} == {
        "lower": "float", "seq": "integer", "updates": "integer", "upper": "float", "value": "float",
    }


def test_writer_v1_missing_database_is_a_permanent_error(influxdb_v1: InfluxDB1Server, app_id: str) -> None:
    settings = Settings(influx_url=influxdb_v1.url, influx_api="v1", influx_bucket=f"missing_{app_id[-10:]}")
    with InfluxWriter(settings) as writer, pytest.raises(InfluxWriteError) as info:
        writer.write(make_predictions(app_id, 3), max_attempts=1)
    assert info.value.status == 404 and not info.value.retryable
    assert "database not found" in str(info.value)


# --- (b) sink end to end -----------------------------------------------------------------


def test_sink_writes_every_prediction(
    kafka_broker: EmbeddedBroker, victoria_metrics: VictoriaMetricsServer, start_sink: Callable[[str], SinkProcess],
    app_id: str,
) -> None:
    topic = f"{namespace_of(app_id)}.predictions"
    predictions = make_predictions(app_id, 3000, entities=30)
    produce(kafka_broker, topic, predictions, create=True)
    sink = start_sink(victoria_metrics.url)
    want = expected_keys(predictions)
    got: set[tuple[str, int]] = set()

    def done() -> bool:
        nonlocal got
        assert sink.alive(), f"sink exited:\n{sink.log_tail()}"
        got = victoria_metrics.entity_seqs(app_id)
        return got >= want

    wait_until(done, 60, lambda: f"{len(want - got)} of {len(want)} points; sink log:\n{sink.log_tail()}")
    assert got == want
    wait_until(lambda: sink.metric("twinstream_sink_points_total") >= len(want), 10, lambda: "sink_points metric")
    assert sink.metric("twinstream_sink_bad_messages_total") == 0


# --- (c) outage --------------------------------------------------------------------------


@pytest.mark.parametrize("crash_sink", [False, True], ids=["sink-keeps-running", "sink-killed-during-outage"])
def test_sink_survives_victoria_metrics_outage(
    kafka_broker: EmbeddedBroker, victoria_metrics_factory: Callable[[], VictoriaMetricsServer],
    start_sink: Callable[[str], SinkProcess], app_id: str, crash_sink: bool,
) -> None:
    """Stop VictoriaMetrics mid-run, keep producing, restart it: every (entity, seq) arrives.

    With ``crash_sink`` the sink is also SIGKILLed while the server is down, after
    Faust's commit interval (2.8 s) has passed, and a new sink process in the same
    consumer group takes over: it can only find the held batches if the first one
    never committed offsets past points it had not written.
    """
    vm = victoria_metrics_factory()
    topic = f"{namespace_of(app_id)}.predictions"
    first = make_predictions(app_id, 1500, entities=30)
    second = make_predictions(app_id, 1500, entities=30, first_seq=50)
    produce(kafka_broker, topic, first, create=True)
    sink = start_sink(vm.url)

    wait_until(lambda: len(vm.entity_seqs(app_id)) >= 300, 45, lambda: f"first points; sink log:\n{sink.log_tail()}")
    vm.stop()  # SIGTERM: VictoriaMetrics flushes and exits
    produce(kafka_broker, topic, second)
    wait_until(
        lambda: sink.metric("twinstream_sink_write_failures_total") >= 2, 20,
        lambda: f"the sink to hit the outage; log:\n{sink.log_tail()}",
    )
    if crash_sink:
        time.sleep(3.5)  # longer than the commit interval: a premature commit would have happened
        assert sink.alive(), f"sink died during the outage:\n{sink.log_tail()}"
        sink.kill()
        sink = start_sink(vm.url)
        wait_until(
            lambda: sink.metric("twinstream_sink_write_failures_total") >= 1, 45,
            lambda: f"the new sink to take over and try to write; log:\n{sink.log_tail()}",
        )
    else:  # stay down a little longer: several failed attempts, the backoff growing towards its cap
        wait_until(
            lambda: sink.metric("twinstream_sink_write_failures_total") >= 4, 30,
            lambda: f"more failed attempts during the outage; log:\n{sink.log_tail()}",
        )
    assert sink.alive(), f"sink died during the outage:\n{sink.log_tail()}"
    vm.start()  # same port, same data directory

    want = expected_keys(first + second)
    got: set[tuple[str, int]] = set()

    def done() -> bool:
        nonlocal got
        assert sink.alive(), f"sink exited:\n{sink.log_tail()}"
        got = vm.entity_seqs(app_id)
        return got >= want

    wait_until(done, 45, lambda: f"{len(want - got)} of {len(want)} points missing; sink log:\n{sink.log_tail()}")
    assert got == want
    assert "influx write succeeded after" in sink.log_tail(200_000)
