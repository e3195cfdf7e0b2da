"""Seeded poison on the real broker: a worker process keeps serving whatever an outside client sends.

An outside client (confluent-kafka, librdkafka) sends thousands of mutated telemetry
messages (``tests/poison_messages.py``), then 100 valid canaries. Every message must come
back as a dead letter (matched by its partition and offset) or a prediction (matched by
its entity and seq), every canary must be predicted, and the worker must still be running.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")

from poison_messages import Message, canaries, poison_messages  # noqa: E402
from worker_harness import TopicReader, WorkerProcess, wait_until  # noqa: E402

from twinstream.broker import EmbeddedBroker  # noqa: E402
from twinstream.processes import settings_env  # noqa: E402
from twinstream.schemas import DeadLetter, RejectReason, Telemetry  # noqa: E402
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY, TELEMETRY_DLQ  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.topic_admin import ensure_topics  # noqa: E402


def send(bootstrap: str, topic: str, messages: list[Message]) -> list[tuple[Message, int, int]]:
    """Produce every message; returns (message, partition, offset) of each one the broker took."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False,
                                         "message.max.bytes": 2_000_000, "linger.ms": 5})
    placed: list[tuple[Message, int, int]] = []
    failed: list[str] = []

    def delivered(error, record, message: Message) -> None:  # noqa: ANN001 - librdkafka callback
        if error is not None:
            failed.append(f"{message.kind}: {error}")
        else:
            placed.append((message, record.partition(), record.offset()))

    for message in messages:
        producer.produce(topic, key=message.key, value=message.value,
                         on_delivery=lambda e, r, m=message: delivered(e, r, m))
        producer.poll(0)
    assert producer.flush(60) == 0, "messages still in the producer's queue"
    assert not failed, failed[:5]
    return placed


def fuzz_worker(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path, count: int, seed: int) -> None:
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=4,
                        data_dir=tmp_path / "state", session_timeout_s=8)
    ensure_topics(settings)
    bootstrap = kafka_broker.bootstrap_servers
    prefix = f"fz{seed}"
    worker = WorkerProcess(settings_env(settings.model_copy(update={"twins_spec": "none"})), tmp_path / "worker.log").start()
    dlq = TopicReader(bootstrap, TELEMETRY_DLQ.in_namespace(namespace).name)
    predictions = TopicReader(bootstrap, PREDICTIONS.in_namespace(namespace).name)
    try:
        topic = TELEMETRY.in_namespace(namespace).name
        placed = send(bootstrap, topic, list(poison_messages(random.Random(seed), count, prefix=prefix)))
        canary = canaries(prefix)
        placed += send(bootstrap, topic, canary)
        assert len(placed) == count + len(canary)

        def accounted() -> bool:
            dlq.poll(1000)
            predictions.poll(1000)
            return len(dlq.messages) + len(predictions.messages) >= len(placed)

        wait_until(accounted, 300, f"{len(placed)} messages back as predictions or dead letters")
        letters = {(letter.partition, letter.offset): letter
                   for letter in (DeadLetter.model_validate_json(m.value) for m in dlq.messages)}
        predicted = {(v["entity_id"], v["seq"]) for v in predictions.values()}
        missing = []
        for message, partition, offset in placed:
            if (partition, offset) in letters:
                continue
            sample = Telemetry.model_validate_json(message.value)  # not dead-lettered, so it was valid
            if (sample.entity_id, sample.seq) not in predicted:
                missing.append(message.kind)
        assert not missing, f"{len(missing)} messages neither predicted nor dead-lettered: {missing[:10]}"
        assert {(m.entity_id, json.loads(m.value)["seq"]) for m in canary} <= predicted
        reasons = {letter.reason for letter in letters.values()}
        assert RejectReason.TWIN_ERROR not in reasons
        assert worker.alive(), worker.log_tail()
        assert "Crashed" not in worker.log_path.read_text(errors="replace")
    finally:
        worker.stop()
        dlq.close()
        predictions.close()


def test_fuzzed_input_never_stops_the_worker(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    fuzz_worker(kafka_broker, app_id, tmp_path, count=3000, seed=21)


@pytest.mark.slow
def test_fuzzed_input_never_stops_the_worker_10k(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    fuzz_worker(kafka_broker, app_id, tmp_path, count=10_000, seed=22)
