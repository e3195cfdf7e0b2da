"""A federated round over real Flower processes publishes a prior that a running worker swaps in.

Real pieces, all on loopback: the prior registry (uvicorn in a thread), ``flower-superlink``
(insecure, free port, the publish token in its environment as in production), two sites
started with ``twinstream federation site --data DIR`` (each its own folder of C-MAPSS
engines: the shortest- and the longest-lived block of FD001), the embedded broker and a
worker process pulling priors every second. The round is submitted with
``twinstream federation round``. The second test submits a round whose ServerApp
publishes to a registry with another token: the run must fail before any training
(the ServerApp checks publish access first) and publish nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer
from registry_harness import TOKEN, RegistryThread, assert_swapped_v2_to_v3, telemetry
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.federation.runtime import ManagedProcess, child_env, superlink_command
from twinstream.federation.signing import public_key_b64
from twinstream.models.federated import export_site
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "twinstream"]


@dataclass
class Federation:
    registry: RegistryThread
    superlink: str
    processes: list[ManagedProcess]


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Registry + SuperLink + two site SuperNodes; every process (and its process group) stopped at the end."""
    root = tmp_path_factory.mktemp("federation")
    processes: list[ManagedProcess] = []
    with RegistryThread(root / "registry") as registry:
        port = free_port()
        link = ManagedProcess(superlink_command("127.0.0.1", port, root / "superlink.db", insecure=True), root / "superlink.log",
                              env={"TWINSTREAM_REGISTRY_PUBLISH_TOKEN": TOKEN, "TWINSTREAM_REGISTRY_URL": registry.url})
        processes.append(link.start())
        try:
            wait_until(lambda: "Uvicorn running" in link.log() or not link.alive(), 60, "the SuperLink to listen")
            assert link.alive(), link.log()
            for site in ("site-1", "site-4"):
                folder = root / site
                export_site(folder, site)  # the site's own folder: only its engines exist there
                node = ManagedProcess([*CLI, "federation", "site", "--data", str(folder), "--max-engines", "2",
                                       "--superlink", f"127.0.0.1:{port}", "--insecure"], root / f"{site}.log")
                processes.append(node.start())
            wait_until(lambda: link.log().count("[Fleet.ActivateNode]") >= 2, 90, "both sites to connect")
            yield Federation(registry, f"127.0.0.1:{port}", processes)
        finally:
            for process in reversed(processes):
                process.stop()
            for process in processes:
                assert not process.alive()


def submit_round(federation: Federation, tmp: Path, *extra: str) -> tuple[int, list[tuple[float, str]]]:
    """``twinstream federation round`` as a process; returns its exit code and its output lines (with arrival times)."""
    command = [*CLI, "federation", "round", "--rounds", "1", "--min-sites", "2", "--local-epochs", "1",
               "--superlink", federation.superlink, "--insecure", *extra]
    env = child_env({"HOME": str(tmp)})  # nothing may be written to the real home (FLWR_HOME is a temp dir)
    env.pop("TWINSTREAM_REGISTRY_PUBLISH_TOKEN", None)  # the token lives with the SuperLink, not with the submitter
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[tuple[float, str]] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append((time.monotonic(), line.rstrip()))
        process.wait(timeout=300)
    finally:
        stop_process(process, timeout_s=10)
    assert not (tmp / ".flwr").exists()
    return process.returncode, lines


def test_round_publishes_a_prior_that_the_running_worker_swaps_in(federation: Federation, kafka_broker: EmbeddedBroker,
                                                                  app_id: str, tmp_path: Path) -> None:
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

    registry = federation.registry
    assert registry.versions() == []
    worker = WorkerProcess({
        **settings_env(settings.model_copy(update={"data_dir": tmp_path / "state", "twins_spec": "none"})),
        "TWINSTREAM_PRIOR_REGISTRY_URL": registry.url,
        "TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY": public_key_b64(registry.key),
        "TWINSTREAM_PRIOR_POLL_INTERVAL_S": "1.0",
    }, tmp_path / "worker.log").start()
    try:
        send(range(0, 5))
        wait_until(lambda: predictions.poll() >= 5, 90, "predictions before the round")
        code, lines = submit_round(federation, tmp_path)
        output = "\n".join(line for _, line in lines)
        assert code == 0, output[-3000:]
        assert registry.versions() == ["3"], output[-2000:]
        assert any("published rul-mlp-v3" in line for _, line in lines), output[-2000:]
        # The worker polls every second; the wait is a generous timeout, not a timing assertion.
        wait_until(lambda: "swapped rul-mlp-v2 -> rul-mlp-v3" in worker.log_path.read_text(errors="replace"), 30,
                   "the worker to swap in the federated prior")
        send(range(5, 10))
        wait_until(lambda: predictions.poll() >= 10, 60, "predictions after the swap")
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
    values = sorted(predictions.values(), key=lambda v: v["seq"])
    predictions.close()
    producer.close()
    assert_swapped_v2_to_v3(values)


def test_round_whose_publish_is_refused_fails_and_publishes_nothing(federation: Federation, tmp_path: Path) -> None:
    with RegistryThread(tmp_path / "other-registry", token="another-token") as other:
        before = federation.registry.versions()
        code, lines = submit_round(federation, tmp_path, "--registry-url", other.url, "--start-from", "init")
        output = "\n".join(line for _, line in lines)
        assert code == 1, output[-3000:]
        assert "HTTP 401" in output and "finished:failed" in output, output[-3000:]
        assert "configure_train" not in output, "the run trained before finding out it cannot publish"
        assert other.versions() == []
        assert federation.registry.versions() == before


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_serve_with_superlink_stops_both_on_sigterm(tmp_path: Path) -> None:
    import httpx

    registry_port, link_port = free_port(), free_port()
    serve = ManagedProcess([*CLI, "federation", "serve", "--dir", str(tmp_path / "reg"), "--port", str(registry_port),
                            "--superlink", "--superlink-port", str(link_port), "--insecure"], tmp_path / "serve.log")
    serve.start()
    try:
        wait_until(lambda: _listening(registry_port) and _listening(link_port) or not serve.alive(), 60,
                   "the registry and the SuperLink to listen")
        assert serve.alive(), serve.log()
        assert httpx.get(f"http://127.0.0.1:{registry_port}/v1/public-key", timeout=10).status_code == 200
        assert serve.process is not None
        serve.process.terminate()  # SIGTERM to the serve command only (not its group)
        serve.process.wait(timeout=30)
        assert "stopping the SuperLink" in serve.log()
        wait_until(lambda: not _listening(link_port), 15, "the SuperLink to stop")
    finally:
        serve.stop()
