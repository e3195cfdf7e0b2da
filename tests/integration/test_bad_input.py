"""Bad input on the real broker: every kind ends in the DLQ with its reason (or is
handled as documented), and the worker keeps serving good events afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from kafka import KafkaProducer
from worker_harness import TopicReader, WorkerProcess, prediction_keys, wait_until

from twinstream.broker import EmbeddedBroker
from twinstream.processes import settings_env
from twinstream.schemas import DeadLetter, RejectReason
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY, TELEMETRY_DLQ
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics


def good(entity: str, seq: int, **patch: object) -> bytes:
    body = {
        "entity_id": entity,
        "event_time": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
        "seq": seq,
        "metrics": {"temp": 20.0 + seq, "pressure": None},
    }
    body.update(patch)
    return json.dumps(body).encode()


def test_bad_input_goes_to_dlq_and_worker_keeps_running(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=2,
                        data_dir=tmp_path / "state")
    ensure_topics(settings)
    topic = TELEMETRY.in_namespace(namespace).name
    far_future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    # (key, value, expected reason); None = handled without a dead letter (documented)
    cases: list[tuple[str, bytes | None, bytes, RejectReason | None]] = [
        ("bad json", b"pump-1", b'{"entity_id": "pump-1", "seq": ', RejectReason.BAD_JSON),
        ("wrong types", b"pump-1", good("pump-1", 0).replace(b"\"seq\": 0", b"\"seq\": \"zero\""), RejectReason.INVALID),
        # A NaN reading is a missing value: the sample is applied as seq 0, so the
        # "first good" seq 0 below is a duplicate.
        ("nan reading", b"pump-1", good("pump-1", 0).replace(b"20.0", b"NaN"), None),
        ("inf", b"pump-1", good("pump-1", 0).replace(b"20.0", b"-Infinity"), RejectReason.NON_FINITE),
        ("missing entity id", b"pump-1", json.dumps({"seq": 0, "event_time": far_future, "metrics": {}}).encode(),
         RejectReason.INVALID),
        ("oversized", b"pump-1", good("pump-1", 0, source="x" * 100_000), RejectReason.OVERSIZED),
        ("schema version", b"pump-1", good("pump-1", 0, schema_version=7), RejectReason.SCHEMA_VERSION),
        ("empty", b"pump-1", b"", RejectReason.EMPTY),
        ("future timestamp", b"pump-1", good("pump-1", 0, event_time=far_future), RejectReason.FUTURE_TIMESTAMP),
        ("key mismatch", b"pump-2", good("pump-1", 0), RejectReason.KEY_MISMATCH),
        ("not an object", b"pump-1", b'"just a string"', RejectReason.NOT_AN_OBJECT),
        ("first good", b"pump-1", good("pump-1", 0), None),
        ("duplicate", b"pump-1", good("pump-1", 0), None),  # skipped: already applied
        ("gap", b"pump-1", good("pump-1", 2), None),  # seq 1 missing: applied, gap counted
        ("out of order", b"pump-1", good("pump-1", 1), RejectReason.OUT_OF_ORDER),
        ("after the bad ones", b"pump-1", good("pump-1", 3), None),
    ]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers, max_request_size=1_048_576)
    for _, key, value, _ in cases:
        producer.send(topic, value=value, key=key, partition=0)  # one partition: order is the test's order
    producer.flush()
    producer.close()

    dlq = TopicReader(kafka_broker.bootstrap_servers, TELEMETRY_DLQ.in_namespace(namespace).name)
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name)
    worker = WorkerProcess(settings_env(settings.model_copy(update={"twins_spec": "none"})), tmp_path / "worker.log").start()
    expected_dlq = [case for case in cases if case[3] is not None]
    try:
        wait_until(lambda: dlq.poll() >= len(expected_dlq) and predictions.poll() >= 3, 90,
                   "dead letters and predictions")
        # A good event sent after all the bad ones is still processed: the worker never stopped.
        late = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        late.send(topic, value=good("pump-1", 4), key=b"pump-1", partition=0)
        late.flush()
        late.close()
        wait_until(lambda: predictions.poll() >= 4, 60, "the prediction for an event sent afterwards")
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()

    letters = [DeadLetter.model_validate_json(m.value) for m in dlq.messages]
    assert [letter.reason for letter in letters] == [case[3] for case in expected_dlq]
    for letter, (name, key, value, _) in zip(letters, expected_dlq):
        assert letter.original == value, name
        assert letter.key == key and letter.topic == topic and letter.partition == 0, name
        assert letter.error, name
    assert sorted(prediction_keys(predictions.values())) == [("pump-1", 0), ("pump-1", 2), ("pump-1", 3), ("pump-1", 4)]
    dlq.close()
    predictions.close()
