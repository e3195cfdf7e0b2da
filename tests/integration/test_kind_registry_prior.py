"""A declared kind whose prior is ``{registry: FAMILY}``: fetched and verified at start, cached, then hot-swapped.

Real pieces: the registry app under uvicorn on a loopback port, its Ed25519 signatures,
and (for the swap) the embedded broker and a worker process. The pump priors are
federated-shape artifacts of the pump kind's generic features (untrained weights: what
is checked is which version the twins use, not what it predicts).
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from kafka import KafkaProducer
from registry_harness import TOKEN, RegistryThread
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.federation.signing import public_key_b64
from twinstream.models.federated import Normalization, initial_arrays, kind_layout, write_prior_artifact
from twinstream.processes import settings_env
from twinstream.schemas.prior import MANIFEST_FILE
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.schemas.twin_spec import parse_spec
from twinstream.settings import Settings
from twinstream.streams.kinds import WorkerKinds
from twinstream.streams.topic_admin import ensure_topics

SPEC = """kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow}, {name: pressure}, {name: temp}]
    tasks: [{type: label, target: rul}]
    learner: {family: prior-twin}
    prior: {registry: pump-rul}
"""
KIND = parse_spec(SPEC).kinds[0]


def publish_pump_prior(registry: RegistryThread, version: str, tmp_path: Path) -> None:
    layout = kind_layout(KIND, 80.0)
    n = len(layout.names)
    artifact = tmp_path / "artifacts" / version
    write_prior_artifact(
        initial_arrays(int(version), layout),
        artifact,
        version,
        norm=Normalization(np.zeros(n), np.ones(n)),
        family="pump-rul",
        kind_spec=KIND,
        cap=80.0,
    )
    manifest = json.loads((artifact / MANIFEST_FILE).read_text())
    body = {"manifest": manifest, "weights_base64": base64.b64encode((artifact / "weights.npz").read_bytes()).decode()}
    response = httpx.put(
        f"{registry.url}/v1/priors/pump-rul/{version}", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    assert response.status_code == 201, response.text


def kinds_at_start(spec: Path, url: str, key: str, data_dir: Path) -> WorkerKinds:
    settings = Settings(
        twins_spec=str(spec), prior_registry_url=url, prior_registry_public_key=key, data_dir=data_dir, prior_registry_timeout_s=2.0
    )
    kinds = WorkerKinds.load(settings.twins_spec, settings)
    assert kinds is not None
    return kinds


def prior_version_of_new_twin(kinds: WorkerKinds) -> str | None:
    twin = kinds.new_twin("pump-1", kinds.kind("pump"))
    return twin.learner.prior_version  # type: ignore[union-attr]


def test_start_fetches_the_latest_then_falls_back_to_the_cache_then_to_no_prior(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    with RegistryThread(tmp_path / "registry") as registry:
        key = public_key_b64(registry.key)
        publish_pump_prior(registry, "1", tmp_path)
        publish_pump_prior(registry, "2", tmp_path)
        kinds = kinds_at_start(spec, registry.url, key, tmp_path / "state")
        assert prior_version_of_new_twin(kinds) == "pump-rul-v2" and kinds.registry_families == {"pump": "pump-rul"}
        assert (tmp_path / "state" / "priors" / "pump-rul" / "2" / "signature.json").is_file()
        wrong_key = public_key_b64(RegistryThread(tmp_path / "other").key)
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens here
    with caplog.at_level(logging.WARNING):
        cached = kinds_at_start(spec, down, key, tmp_path / "state")
    assert prior_version_of_new_twin(cached) == "pump-rul-v2"
    assert "unreachable" in caplog.text and "using the cached prior pump-rul/2" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        foreign = kinds_at_start(spec, down, wrong_key, tmp_path / "state")  # a cached copy must still verify
        empty = kinds_at_start(spec, down, key, tmp_path / "empty")
    for kinds in (foreign, empty):
        assert prior_version_of_new_twin(kinds) is None
        assert kinds.new_twin("pump-1", kinds.kind("pump")).learner.feature_schema().params["metrics"] == ["flow", "pressure", "temp"]  # type: ignore[union-attr]
    assert caplog.text.count("starting WITHOUT a prior") == 2


def pump_sample(seq: int) -> bytes:
    return json.dumps(
        {
            "entity_id": "pump-1",
            "event_time": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
            "seq": seq,
            "metrics": {"flow": 100.0 - 0.1 * seq, "pressure": 5.0 + 0.01 * seq, "temp": 60.0 + 0.05 * seq},
        }
    ).encode()


def test_worker_serves_the_registry_prior_and_swaps_to_a_newer_one(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    namespace = app_id.replace("-", "_")
    settings = Settings(
        broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=1, data_dir=tmp_path / "state", twins_spec=str(spec)
    )
    ensure_topics(settings)
    topic = TELEMETRY.in_namespace(namespace).name
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name)

    def send(seqs: range) -> None:
        for seq in seqs:
            producer.send(topic, value=pump_sample(seq), key=b"pump-1", partition=0)
        producer.flush()

    with RegistryThread(tmp_path / "registry") as registry:
        publish_pump_prior(registry, "1", tmp_path)
        worker = WorkerProcess(
            {
                **settings_env(settings),
                "TWINSTREAM_PRIOR_REGISTRY_URL": registry.url,
                "TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY": public_key_b64(registry.key),
                "TWINSTREAM_PRIOR_POLL_INTERVAL_S": "1.0",
            },
            tmp_path / "worker.log",
        ).start()
        try:
            send(range(0, 5))
            wait_until(lambda: predictions.poll() >= 5, 90, lambda: f"predictions before the publish:\n{worker.log_tail()}")
            publish_pump_prior(registry, "2", tmp_path)
            wait_until(
                lambda: "swapped pump-rul-v1 -> pump-rul-v2" in worker.log_path.read_text(errors="replace"),
                30,
                lambda: f"the worker to swap in the new prior:\n{worker.log_tail()}",
            )
            send(range(5, 10))
            wait_until(lambda: predictions.poll() >= 10, 60, "predictions after the publish")
            assert worker.alive(), worker.log_tail()
        finally:
            worker.stop()
    values = sorted(predictions.values(), key=lambda v: v["seq"])
    predictions.close()
    producer.close()
    assert [v["seq"] for v in values] == list(range(10))
    assert {v["kind"] for v in values} == {"pump"} and {v["target"] for v in values} == {"rul"}
    assert {v["prior_version"] for v in values[:5]} == {"pump-rul-v1"}
    assert {v["prior_version"] for v in values[5:]} == {"pump-rul-v2"}
    assert [v["updates"] for v in values] == list(range(values[0]["updates"], values[0]["updates"] + 10))
