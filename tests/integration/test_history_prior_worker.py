"""A prior trained on a fleet's own history, served by a worker on the real broker.

From a history table to live twins: ``twinstream prior train --spec --kind pump --csv``
writes the artifact, the spec's pump kind names it (``prior: {artifact: DIR}``), and a
worker process (``TWINSTREAM_TWINS_SPEC``) serves a plant client's pumps from it: every
forecast and label prediction carries the prior's version. A spec whose artifact was
altered stops the worker before it consumes anything.
"""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker
from twinstream.cli import app
from twinstream.processes import settings_env
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

pytestmark = pytest.mark.integration

PUMPS = ("pump-10", "pump-11")
SAMPLES = 40
SPEC = """
kinds:
  - name: pump
    match: {{entity_id: ["pump-*"]}}
    metrics: [{{name: flow}}, {{name: pressure}}]
    tasks:
      - {{type: forecast, metric: flow, horizon: 2, season: 24}}
      - {{type: label, target: rul}}
    learner: {{family: prior-twin}}
{prior}"""


def flow(pump: int, t: int) -> float:
    return 40.0 + 3.0 * pump + (8.0 + 0.5 * pump) * math.sin(2 * math.pi * t / 24)


def pressure(t: int, life: int) -> float:
    return 5.0 - 2.0 * (t / life) ** 2


def train_artifact(tmp: Path) -> Path:
    with (tmp / "history.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pump", "time", "flow", "pressure"])
        for p in range(6):
            life = 150 + 20 * p
            for t in range(life):
                w.writerow([f"pump-{p}", t, f"{flow(p, t):.4f}", f"{pressure(t, life):.4f}"])
    (tmp / "plain.yaml").write_text(SPEC.format(prior=""))
    out = tmp / "priors" / "pump"
    result = CliRunner().invoke(app, [
        "prior", "train", "--spec", str(tmp / "plain.yaml"), "--kind", "pump", "--csv", str(tmp / "history.csv"),
        "--entity-column", "pump", "--time-column", "time", "--rul-from-end", "--cap", "125", "--out", str(out),
        "--epochs", "20", "--folds", "3", "--hidden", "16", "--prior-hidden", "8"])
    assert result.exit_code == 0, result.output
    return out


def send_pumps(bootstrap: str, topic: str) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False})
    start = datetime.now(UTC) - timedelta(minutes=SAMPLES + 5)
    for seq in range(SAMPLES):
        for k, pump in enumerate(PUMPS):
            body = {"entity_id": pump, "event_time": (start + timedelta(minutes=seq)).isoformat(), "seq": seq,
                    "metrics": {"flow": flow(k + 2, seq), "pressure": pressure(seq, 200)}}
            producer.produce(topic, key=pump.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0
    return SAMPLES * len(PUMPS)


def test_worker_serves_pumps_from_their_history_prior(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> None:
    artifact = train_artifact(tmp_path)
    version = orjson.loads((artifact / "manifest.json").read_bytes())["family"] + "-v1"
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC.format(prior="    prior: {artifact: priors/pump}\n"))  # relative to the spec's folder
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=2,
                        data_dir=tmp_path / "state", twins_spec=str(spec))
    ensure_topics(settings)
    ns = settings.topic_namespace
    sent = send_pumps(kafka_broker.bootstrap_servers, TELEMETRY.in_namespace(ns).name)
    expected = 2 * sent  # a forecast and a label prediction per sample
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(ns).name)
    worker = WorkerProcess(settings_env(settings), tmp_path / "worker.log").start()
    try:
        wait_until(lambda: predictions.poll() >= expected, 120,
                   lambda: f"{expected} predictions, got {len(predictions.messages)}; worker log:\n{worker.log_tail()}")
    finally:
        worker.stop()
        predictions.close()
    preds = {(p.entity_id, p.seq, p.task): p for p in (Prediction.model_validate_json(m.value) for m in predictions.messages)}
    assert len(preds) == expected
    assert {p.prior_version for p in preds.values()} == {version}
    assert {(p.kind, p.task) for p in preds.values()} == {("pump", "forecast"), ("pump", "label")}


def test_worker_with_an_altered_prior_artifact_does_not_start(kafka_broker: EmbeddedBroker, app_id: str,
                                                              tmp_path: Path) -> None:
    artifact = train_artifact(tmp_path)
    with (artifact / "weights.npz").open("ab") as f:
        f.write(b"\0")
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC.format(prior=f"    prior: {{artifact: {artifact}}}\n"))
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=2,
                        data_dir=tmp_path / "state", twins_spec=str(spec))
    ensure_topics(settings)
    env = settings_env(settings)
    done = subprocess.run([sys.executable, "-m", "twinstream", "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "'pump'" in done.stderr + done.stdout and "sha256" in done.stderr + done.stdout
