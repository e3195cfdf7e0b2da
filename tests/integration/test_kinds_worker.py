"""Twin kinds on the real broker: a plant client's pumps, and one worker serving two kinds at once.

The client is confluent-kafka (not the project's replay), as a plant's own producer would be.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from confluent_kafka import Producer
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker
from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.processes import settings_env
from twinstream.schemas import DeadLetter, RejectReason
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY, TELEMETRY_DLQ
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

PUMPS = ("pump-0", "pump-1", "pump-2")
SAMPLES = 50  # per pump: 150 samples in all
ENGINES = ("fd001-train-001", "fd001-test-001")
SPEC = """
kinds:
  - name: turbofan
    match: {entity_id: ["fd00?-train-*", "fd00?-test-*"]}
    tasks: [{type: label, target: rul}]
    learner: {family: prior-twin, params: {prior: bundled}}
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: pressure, unit: bar}, {name: temp, unit: degC}]
    tasks:
      - {type: forecast, metric: flow, horizon: 1}
      - {type: anomaly, metric: flow}
"""


def flow(pump: int, seq: int) -> float:
    """A learnable synthetic signal: a cycle of 12 samples on a slow rise, shifted per pump."""
    return 50.0 + 10.0 * math.sin(2 * math.pi * (seq + 5 * pump) / 12) + 0.2 * seq


def send_pumps(bootstrap: str, topic: str) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
    start = datetime.now(UTC) - timedelta(minutes=SAMPLES + 5)
    for seq in range(SAMPLES):
        for k, pump in enumerate(PUMPS):
            body = {"entity_id": pump, "event_time": (start + timedelta(minutes=seq)).isoformat(), "seq": seq,
                    "metrics": {"flow": flow(k, seq), "pressure": 3.0 + 0.01 * seq, "temp": 40.0 + k}}
            producer.produce(topic, key=pump.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0
    return SAMPLES * len(PUMPS)


def worker_settings(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path, **extra: object) -> Settings:
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"),
                        partitions=2, data_dir=tmp_path / "state", **extra)
    ensure_topics(settings)
    return settings


def test_pumps_without_a_pump_kind_are_unknown_kind(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    settings = worker_settings(kafka_broker, app_id, tmp_path)  # a default worker: the C-MAPSS spec
    ns = settings.topic_namespace
    sent = send_pumps(kafka_broker.bootstrap_servers, TELEMETRY.in_namespace(ns).name)
    dlq = TopicReader(kafka_broker.bootstrap_servers, TELEMETRY_DLQ.in_namespace(ns).name)
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(ns).name)
    worker = WorkerProcess(settings_env(settings), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: dlq.poll() >= sent, 90, lambda: f"{sent} dead letters; worker log:\n{worker.log_tail()}")
        predictions.poll()
    finally:
        worker.stop()
    letters = [DeadLetter.model_validate_json(m.value) for m in dlq.messages]
    assert len(letters) == sent and {d.reason for d in letters} == {RejectReason.UNKNOWN_KIND}
    assert Counter(d.entity_id for d in letters) == {p: SAMPLES for p in PUMPS}
    assert predictions.messages == []  # no meaningless RUL for a pump
    dlq.close()
    predictions.close()


def test_one_worker_serves_turbofans_and_pumps(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    settings = worker_settings(kafka_broker, app_id, tmp_path, twins_spec=str(spec))
    ns = settings.topic_namespace
    topic = TELEMETRY.in_namespace(ns).name
    engines = [e for e in cmapss_events("FD001") if e.entity_id in ENGINES]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers})
    for event in engines:
        producer.produce(topic, key=event.key, value=event.value)
    assert producer.flush(30) == 0
    sent = send_pumps(kafka_broker.bootstrap_servers, topic)
    expected = len(engines) + 2 * sent  # one RUL per engine cycle; a forecast and an anomaly score per pump sample
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(ns).name)
    dlq = TopicReader(kafka_broker.bootstrap_servers, TELEMETRY_DLQ.in_namespace(ns).name)
    worker = WorkerProcess(settings_env(settings), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: predictions.poll() >= expected, 120,
                   lambda: f"{expected} predictions, got {len(predictions.messages)}; worker log:\n{worker.log_tail()}")
        dlq.poll()
    finally:
        worker.stop()
    preds = [Prediction.model_validate_json(m.value) for m in predictions.messages]
    assert dlq.messages == []
    keys = Counter((p.entity_id, p.seq, p.task, p.target) for p in preds)
    assert len(keys) == expected  # every (entity, seq, task, target) once (a redelivery may repeat one)
    assert Counter((p.kind, p.task) for p in {(p.entity_id, p.seq, p.task): p for p in preds}.values()) == {
        ("turbofan", "label"): len(engines), ("pump", "forecast"): sent, ("pump", "anomaly"): sent}
    assert all(p.target == "rul" and p.in_domain is not None for p in preds if p.kind == "turbofan")
    for k, pump in enumerate(PUMPS):
        forecasts = sorted((p for p in preds if p.entity_id == pump and p.task == "forecast"), key=lambda p: p.seq)
        assert [p.target_seq for p in forecasts] == [s + 1 for s in range(SAMPLES)]
        assert [p.updates for p in forecasts] == list(range(1, SAMPLES + 1))  # the twin learns with every sample
        assert forecasts[-1].lower is not None and forecasts[-1].upper is not None
        errors = [abs(p.value - flow(k, p.target_seq)) for p in forecasts[:-1]]
        assert sum(errors[-15:]) / 15 < 0.5 * sum(errors[1:16]) / 15, (pump, errors)
    predictions.close()
    dlq.close()
