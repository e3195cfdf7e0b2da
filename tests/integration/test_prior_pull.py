"""A running worker pulls a newly published prior from a live registry and swaps it in.

Real pieces: the embedded broker, a worker process, and the registry app served by
uvicorn in a thread on a free loopback port. Predictions carry the old prior version,
then, after a publish, the new one; the twin's update count runs on by one per event
across the swap (the swap itself applies no update and resets nothing).
"""

from __future__ import annotations

import time
from pathlib import Path

from kafka import KafkaProducer
from registry_harness import RegistryThread, assert_swapped_v2_to_v3, telemetry
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker
from twinstream.federation.signing import public_key_b64
from twinstream.processes import settings_env
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics


def test_worker_swaps_in_a_newly_published_prior(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=1)
    ensure_topics(settings)
    topic = TELEMETRY.in_namespace(namespace).name
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name)

    def send(seqs: range) -> None:
        for seq in seqs:
            producer.send(topic, value=telemetry(seq), key=b"engine-1", partition=0)
        producer.flush()

    with RegistryThread(tmp_path / "registry") as registry:
        worker = WorkerProcess({
            **settings_env(settings.model_copy(update={"data_dir": tmp_path / "state", "twins_spec": "none"})),
            "TWINSTREAM_PRIOR_REGISTRY_URL": registry.url,
            "TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY": public_key_b64(registry.key),
            "TWINSTREAM_PRIOR_POLL_INTERVAL_S": "1.0",
        }, tmp_path / "worker.log").start()
        try:
            send(range(0, 5))
            wait_until(lambda: predictions.poll() >= 5, 90, "predictions before the publish")
            registry.publish("3", shift=4.0)
            started = time.monotonic()
            wait_until(lambda: "swapped rul-mlp-v2 -> rul-mlp-v3" in worker.log_path.read_text(errors="replace"), 30,
                       "the worker to swap in the new prior")
            assert time.monotonic() - started < 10, "swap took longer than a few poll intervals"
            send(range(5, 10))
            wait_until(lambda: predictions.poll() >= 10, 60, "predictions after the publish")
            assert worker.alive(), worker.log_tail()
        finally:
            worker.stop()
    values = sorted(predictions.values(), key=lambda v: v["seq"])
    predictions.close()
    producer.close()
    assert_swapped_v2_to_v3(values)
