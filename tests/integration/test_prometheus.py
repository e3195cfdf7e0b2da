"""Debian's Prometheus scrapes a running worker, sink and sidecar: every metric docs/operations.md names is there.

Metrics with values (lag, twins per kind, throughput, API requests, in-domain share, sink
points, dead letters) are queried through Prometheus's HTTP API; the rest must at least
be in the metadata Prometheus keeps from the scrapes (a labelled counter has no sample
before its first increment). The alert rules are loaded by the same Prometheus.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer
from tsdb_servers import VictoriaMetricsServer, require_binary
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

REPO = Path(__file__).resolve().parents[2]
ENGINES = ("fd001-train-001", "fd001-train-002")
# Metrics that must have a sample after this scenario (the others: metadata only).
SAMPLED = {
    "kafka_consumergroup_lag", "twinstream_twins_by_kind", "twinstream_events_in_total", "twinstream_predictions_total",
    "twinstream_checkpoints_total", "twinstream_checkpoint_age_seconds", "twinstream_in_domain_share",
    "twinstream_prior_info", "twinstream_api_requests_total", "twinstream_sink_points_total",
    "twinstream_dead_letters_total", "twinstream_twins", "twinstream_ingest_latency_seconds_count",
}


def documented_metrics() -> set[str]:
    text = (REPO / "docs" / "operations.md").read_text()
    return set(re.findall(r"`((?:twinstream|kafka_consumergroup)_[a-z_]+)`", text))


def distinct_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:  # free_port() may repeat a port nobody has bound yet
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@pytest.fixture
def prometheus_binary() -> str:
    return require_binary("prometheus", "prometheus")


def start_prometheus(binary: str, workdir: Path, port: int, targets: dict[str, int]) -> subprocess.Popen:
    jobs = "\n".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{target}']"
                     for job, target in targets.items())
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      f"rule_files:\n  - {REPO / 'deploy' / 'prometheus' / 'rules.yml'}\n"
                      f"scrape_configs:\n{jobs}\n")
    log = (workdir / "prometheus.log").open("ab")
    return subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)


@pytest.fixture
def stack(kafka_broker: EmbeddedBroker, victoria_metrics: VictoriaMetricsServer, app_id: str, tmp_path: Path,
          prometheus_binary: str) -> Iterator[tuple[Settings, str, str, list[WorkerProcess]]]:
    worker_metrics, sink_metrics, sidecar_metrics, api, prom = distinct_ports(5)
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=2,
                        data_dir=tmp_path / "state", influx_url=victoria_metrics.url, influx_api="v2",
                        influx_flush_interval_s=0.2, lag_interval_s=0.5)
    ensure_topics(settings)
    processes = [
        WorkerProcess(settings_env(settings.model_copy(update={"metrics_port": worker_metrics, "api_port": api})),
                      tmp_path / "worker.log").start(),
        WorkerProcess(settings_env(settings.model_copy(update={"metrics_port": sink_metrics})), tmp_path / "sink.log",
                      module="twinstream.streams.influx_sink").start(),
        WorkerProcess(settings_env(settings.model_copy(update={"metrics_port": sidecar_metrics})),
                      tmp_path / "sidecar.log", module="twinstream.streams.sidecar").start(),
    ]
    prometheus = start_prometheus(prometheus_binary, tmp_path, prom, {
        "twinstream-worker": worker_metrics, "twinstream-sink": sink_metrics, "twinstream-sidecar": sidecar_metrics})
    try:
        yield settings, f"http://127.0.0.1:{prom}", f"http://127.0.0.1:{api}", processes
    finally:
        stop_process(prometheus)
        for process in processes:
            process.stop()


def query(prometheus: str, expr: str) -> list[dict]:
    try:
        reply = httpx.get(prometheus + "/api/v1/query", params={"query": expr}, timeout=5)
    except httpx.HTTPError:
        return []
    return reply.json()["data"]["result"] if reply.status_code == 200 else []


@pytest.mark.slow
def test_prometheus_scrapes_every_documented_metric(stack: tuple[Settings, str, str, list[WorkerProcess]],
                                                    kafka_broker: EmbeddedBroker) -> None:
    settings, prometheus, api, processes = stack
    logs = lambda: "\n".join(p.log_tail(15) for p in processes)  # noqa: E731
    topic = TELEMETRY.in_namespace(settings.topic_namespace).name
    events = [e for e in cmapss_events("FD001") if e.entity_id in ENGINES]
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": False})
    for event in events:
        producer.produce(topic, key=event.key, value=event.value)
    producer.produce(topic, key=b"broken-1", value=b"{not json")  # one dead letter
    assert producer.flush(30) == 0
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(settings.topic_namespace).name)
    wait_until(lambda: predictions.poll() >= len(events), 180, lambda: f"predictions; logs:\n{logs()}")
    predictions.close()
    def api_serves_the_twin() -> bool:
        try:  # the API starts with the worker's first assignment: refused until it listens
            return httpx.get(f"{api}/twins/{ENGINES[0]}", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(api_serves_the_twin, 60, lambda: f"the twin API; logs:\n{logs()}")

    missing: set[str] = set()

    def all_sampled() -> bool:
        missing.clear()
        missing.update(name for name in SAMPLED if not query(prometheus, name))
        return not missing

    wait_until(all_sampled, 90, lambda: f"samples of {sorted(missing)}; logs:\n{logs()}", poll_s=1.0)

    lag = query(prometheus, f'kafka_consumergroup_lag{{consumergroup="{settings.app_id}"}}')
    assert {(r["metric"]["topic"], r["metric"]["partition"]) for r in lag} >= {(topic, "0"), (topic, "1")}
    assert all(float(r["value"][1]) >= 0 for r in lag)
    kinds = {r["metric"]["kind"]: float(r["value"][1]) for r in query(prometheus, "twinstream_twins_by_kind")}
    assert kinds.get("turbofan") == len(ENGINES)
    share = query(prometheus, 'twinstream_in_domain_share{kind="turbofan"}')
    assert share and 0.0 <= float(share[0]["value"][1]) <= 1.0
    def latency_observed() -> float:  # summed: the sink and sidecar export the histogram too, empty
        result = query(prometheus, "sum(twinstream_ingest_latency_seconds_count)")
        return float(result[0]["value"][1]) if result else 0.0

    # every applied event's input timestamp is observed (the broken message's too)
    wait_until(lambda: latency_observed() >= len(events) + 1, 30, "an ingest latency for every event")
    seconds = float(query(prometheus, "sum(twinstream_ingest_latency_seconds_sum)")[0]["value"][1])
    assert 0.0 < seconds / latency_observed() < 180.0, "mean ingest latency (the producer sent just now)"
    reasons = {r["metric"]["reason"] for r in query(prometheus, "twinstream_dead_letters_total")}
    assert reasons, "the broken message is counted by reason"
    requests = query(prometheus, 'twinstream_api_requests_total{route="/twins/{entity_id}",status="200"}')
    assert requests and float(requests[0]["value"][1]) >= 1

    metadata = httpx.get(prometheus + "/api/v1/metadata", timeout=5).json()["data"]
    known = set(metadata) | {f"{name}_total" for name in metadata}
    undocumented_missing = sorted(documented_metrics() - known)
    assert not undocumented_missing, f"named in docs/operations.md but not scraped: {undocumented_missing}"
    assert len(documented_metrics()) >= 30

    groups = httpx.get(prometheus + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    alerts = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"TwinstreamConsumerLagGrowing", "TwinstreamCheckpointsStalled", "TwinstreamDeadLetterRate",
            "TwinstreamPriorPullFailing"} <= alerts
    assert all(rule["health"] == "ok" for group in groups for rule in group["rules"] if rule.get("lastEvaluation"))
