"""``twinstream connect`` as a process: a replay is delivered, and seqs continue across a restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml
from worker_harness import TopicReader

from twinstream.broker import EmbeddedBroker

pytestmark = pytest.mark.integration


def run_connect(config: Path, broker: EmbeddedBroker, namespace: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TWINSTREAM_BROKER": broker.url, "TWINSTREAM_TOPIC_NAMESPACE": namespace}
    return subprocess.run([sys.executable, "-m", "twinstream", "connect", "--config", str(config)],
                          env=env, capture_output=True, text=True, timeout=120)


def test_connect_replays_and_keeps_seqs_across_restarts(kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    from connector_harness import telemetry_topic

    topic = telemetry_topic(kafka_broker.bootstrap_servers)
    namespace = topic.split(".", 1)[0]
    config = tmp_path / "connectors.yaml"
    for part in (1, 2):
        data = tmp_path / f"part{part}.csv"
        data.write_text("unit,t,temp\n" + "".join(f"u{i % 2},{1_767_225_600 + 100 * part + i},{part * 100 + i}\n" for i in range(10)))
        config.write_text(yaml.safe_dump({
            "buffer": {"path": str(tmp_path / "state" / "connectors.sqlite")},
            "sources": [{"type": "file", "name": "csv", "path": str(data), "entity_column": "unit", "time_column": "t",
                         "time_unit": "s", "progress": False}]}))
        result = run_connect(config, kafka_broker, namespace)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "10 samples sent" in result.stderr
    reader = TopicReader(kafka_broker.bootstrap_servers, topic)
    try:
        deadline = time.monotonic() + 20
        while reader.poll() < 20 and time.monotonic() < deadline:
            pass
        values = [orjson.loads(m.value) for m in reader.messages]
    finally:
        reader.close()
    for unit in ("u0", "u1"):
        mine = sorted((v for v in values if v["entity_id"] == unit), key=lambda v: v["seq"])
        assert [v["seq"] for v in mine] == list(range(10)), "the second run continued the first run's seqs"
        assert [v["metrics"]["temp"] for v in mine][5:] == [200.0 + i for i in range(10) if f"u{i % 2}" == unit]
