"""The sink against a real InfluxDB 1.x that refuses some points for good (a field type conflict).

The database already holds ``synthetic_share`` as a *string* field in the shard the
predictions go to, so InfluxDB answers 400 "field type conflict" for every prediction
with ``synthetic_share > 0`` (a float) and writes the others. The sink process must
write every other point, send exactly the refused ones to ``<ns>.predictions.dlq``
(reason ``sink_rejected``, InfluxDB's answer as the error), count them, and go on.
"""

from __future__ import annotations

import asyncio
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from tsdb_servers import InfluxDB1Server, http
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.processes import settings_env
from twinstream.schemas import DeadLetter, Prediction, RejectReason
from twinstream.schemas.topics import PREDICTIONS, PREDICTIONS_DLQ
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

BASE_TIME = datetime(2026, 1, 1, tzinfo=UTC)


def predictions(prefix: str, count: int) -> list[Prediction]:
    out = []
    for n in range(count):
        share = 0.5 if n % 17 == 3 else 0.0  # these carry a float synthetic_share: refused
        out.append(Prediction(entity_id=f"{prefix}-e{n % 10}", event_time=BASE_TIME + timedelta(seconds=n), seq=n,
                              target="rul", value=100.0 - n, lower=90.0 - n, upper=110.0 - n,
                              model_version="river-linreg-v1", updates=n, synthetic=share > 0, synthetic_share=share))
    return out


async def _produce(bootstrap: str, topic: str, items: list[Prediction]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, enable_idempotence=False)
    await producer.start()
    try:
        futures = [await producer.send(topic, p.model_dump_json().encode(), key=p.entity_id.encode()) for p in items]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def metric(port: int, name: str, labels: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}} "):
            return float(line.split()[1])
    return 0.0


def test_points_influxdb_refuses_go_to_the_sink_dlq(kafka_broker: EmbeddedBroker, influxdb_v1: InfluxDB1Server,
                                                    app_id: str, tmp_path: Path) -> None:
    database = f"dlq_{app_id[-10:]}"
    influxdb_v1.create_database(database)
    seed = f"prediction synthetic_share=\"text\" {int(BASE_TIME.timestamp()) * 10**9}"
    status, body = http("POST", f"{influxdb_v1.url}/write?db={database}&precision=ns", seed.encode())
    assert status == 204, body

    namespace = app_id.replace("-", "_")
    metrics_port = free_port()
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=2,
                        data_dir=tmp_path / "data", session_timeout_s=6, influx_url=influxdb_v1.url, influx_api="v1",
                        influx_bucket=database, influx_batch_size=100, influx_flush_interval_s=0.2,
                        influx_max_backoff_s=0.5, metrics_port=metrics_port)
    ensure_topics(settings)
    sent = predictions(app_id, 300)
    refused = {(p.entity_id, p.seq) for p in sent if p.synthetic_share > 0}
    asyncio.run(asyncio.wait_for(_produce(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name,
                                          sent), 60))

    dlq = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS_DLQ.in_namespace(namespace).name)
    sink = WorkerProcess(settings_env(settings), tmp_path / "sink.log", module="twinstream.streams.influx_sink").start()
    try:
        def written() -> int:
            rows = influxdb_v1.rows("SELECT count(value) FROM prediction", database)
            return int(rows[0]["count"]) if rows else 0

        wait_until(lambda: written() >= len(sent) - len(refused) and dlq.poll() >= len(refused), 120,
                   "the writable points in InfluxDB and the refused ones in the sink DLQ")
        assert sink.alive(), sink.log_tail()
        wait_until(lambda: metric(metrics_port, "twinstream_sink_dead_letters_total", 'reason="sink_rejected"')
                   == len(refused), 30, "the sink's dead-letter counter")
    finally:
        sink.stop()

    letters = [DeadLetter.model_validate_json(m.value) for m in dlq.messages]
    assert {(Prediction.model_validate_json(d.original).entity_id, Prediction.model_validate_json(d.original).seq)
            for d in letters} == refused
    assert all(d.reason is RejectReason.SINK_REJECTED and "field type conflict" in d.error for d in letters)
    assert written() == len(sent) - len(refused)
    dlq.close()
