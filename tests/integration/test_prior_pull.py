"""A running worker pulls a newly published prior from a live registry and swaps it in.

Real pieces: the embedded broker, a worker process, and the registry app served by
uvicorn in a thread on a free loopback port. Predictions carry the old prior version,
then, after a publish, the new one; the twin's update count runs on by one per event
across the swap (the swap itself applies no update and resets nothing).
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import uvicorn
from kafka import KafkaProducer

from twinstream.broker import EmbeddedBroker
from twinstream.federation.registry import create_registry_app
from twinstream.federation.signing import generate_private_key, public_key_b64
from twinstream.federation.store import PriorStore
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.processes import settings_env
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

from worker_harness import TopicReader, WorkerProcess, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # shared prior-variant helper
from federation_support import variant  # noqa: E402

TOKEN = "integration-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RegistryThread:
    def __init__(self, root: Path) -> None:
        self.key = generate_private_key()
        self.port = free_port()
        app = create_registry_app(PriorStore(root, self.key), TOKEN)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "RegistryThread":
        self.thread.start()
        wait_until(lambda: self.server.started, 15, "the registry to listen")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def publish(self, version: str, shift: float) -> None:
        manifest, weights = variant(version, shift=shift)
        body = {"manifest": manifest.model_dump(mode="json"), "weights_base64": base64.b64encode(weights).decode()}
        response = httpx.put(f"{self.url}/v1/priors/rul-mlp/{version}", json=body,
                             headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert response.status_code == 201, response.text


def telemetry(seq: int) -> bytes:
    return json.dumps({
        "entity_id": "engine-1",
        "event_time": (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat(),
        "seq": seq,
        "metrics": {"s2": 642.0 + 0.01 * seq, "s3": 1590.0 + 0.1 * seq, "s4": 1405.0 + 0.1 * seq},
    }).encode()


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
            **settings_env(settings.model_copy(update={"data_dir": tmp_path / "state"})),
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
    assert [v["seq"] for v in values] == list(range(10))
    assert {v["prior_version"] for v in values[:5]} == {"rul-mlp-v2"}
    assert {v["prior_version"] for v in values[5:]} == {"rul-mlp-v3"}
    updates = [v["updates"] for v in values]
    assert updates == list(range(updates[0], updates[0] + 10)), f"update count not continuous across the swap: {updates}"
