"""The embedded broker on durable storage, SIGKILLed mid-stream and started again.

A broker on a directory (``twinstream broker --storage DIR``), a worker, the gap-filling
sidecar and the InfluxDB sink (VictoriaMetrics) run while part of FD001 is replayed. The
broker is SIGKILLed while the worker still has a backlog, and started again on the same
port from the same storage. Nothing is restarted by hand: the worker, sidecar, sink and
the replay's producer must reconnect by themselves. Then every (entity, seq) has a
prediction and a point in VictoriaMetrics, every twin's update count equals the events
sent for it (nothing lost, nothing applied twice), the sidecar filled the gap of a
sensor dropped after the restart, and every consumer group committed everything.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tsdb_servers import VictoriaMetricsServer
from worker_harness import (
    TopicReader,
    WorkerProcess,
    committed_all,
    latest_twins_from_changelog,
    prediction_keys,
    wait_until,
)

from twinstream.broker import EmbeddedBroker
from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.connectors.producer import send_all
from twinstream.demo_gaps import drop_sensor
from twinstream.processes import settings_env
from twinstream.schemas.topics import PREDICTIONS, SYNTHETIC, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.influx_sink import sink_app_id
from twinstream.streams.sidecar import sidecar_app_id
from twinstream.streams.topic_admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTITIES = 24  # FD001 engines replayed (train and test): ~5,000 events
RATE = 800.0  # events/s, so the broker dies while the replay is still sending
GAP = ("s11", 20)  # after the restart one engine sends this sensor as null for this many cycles


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own on a storage directory (the session broker is memory-only)."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker" / "tansu.log", storage=str(tmp_path / "broker" / "data"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def replay_subset() -> list:
    events = cmapss_events("FD001")
    keep = sorted({e.entity_id for e in events})[:: max(1, len({e.entity_id for e in events}) // ENTITIES)][:ENTITIES]
    return [e for e in events if e.entity_id in set(keep)]


def refused(child: WorkerProcess) -> int:
    """How often the child's Kafka client logged a refused connection (the broker is down)."""
    return child.log_path.read_text(errors="replace").count("Connect call failed")


@pytest.mark.parametrize("outage", ["immediate", "noticed"])
def test_broker_sigkill_and_restart_on_durable_storage_loses_nothing(
    durable_broker: EmbeddedBroker, victoria_metrics_factory: Callable[[], VictoriaMetricsServer],
    app_id: str, tmp_path: Path, outage: str,
) -> None:
    """``immediate``: started again at once; ``noticed``: only once every process saw its connection refused."""
    broker = durable_broker
    vm = victoria_metrics_factory()
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=broker.url, app_id=app_id, topic_namespace=namespace, partitions=4,
                        data_dir=tmp_path / "state", influx_url=vm.url, influx_api="v2",
                        influx_batch_size=500, influx_flush_interval_s=0.2, influx_max_backoff_s=1.0)
    ensure_topics(settings)
    env = settings_env(settings)
    events = replay_subset()
    # One engine loses a sensor for a stretch that is sent after the restart: the sidecar
    # can only fill it if it reconnected.
    gapped = events[-1].entity_id
    last_seq = max(e.seq for e in events if e.entity_id == gapped)
    events, plan = drop_sensor(events, gapped, GAP[0], last_seq - GAP[1] + 1, last_seq)
    gap_index = next(i for i, e in enumerate(events) if e.entity_id == gapped and e.seq == plan.seqs[0])
    sent_per_entity = Counter(e.entity_id for e in events)
    telemetry = TELEMETRY.in_namespace(namespace).name
    next_offsets: dict[int, int] = {}
    progress = {"sent": 0}
    replay_error: list[BaseException] = []

    # The replay holds at half way until the broker was killed and restarted, so the kill
    # lands mid-stream however slowly the worker comes up; then the same producer goes on.
    hold_at, restarted = len(events) // 2, threading.Event()

    def on_sent(count: int) -> None:
        progress["sent"] = count
        if count == hold_at:
            restarted.wait(timeout=240)

    def replay() -> None:
        try:
            asyncio.run(send_all(broker.bootstrap_servers, telemetry, events, rate=RATE, show_progress=False,
                                 on_sent=on_sent, next_offsets=next_offsets))
        except BaseException as exc:  # surfaced below
            replay_error.append(exc)

    predictions = TopicReader(broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name)
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    sidecar = WorkerProcess(env, tmp_path / "sidecar.log", module="twinstream.streams.sidecar").start()
    sink = WorkerProcess(env, tmp_path / "sink.log", module="twinstream.streams.influx_sink").start()
    children = (worker, sidecar, sink)
    producer = threading.Thread(target=replay, daemon=True)
    producer.start()
    try:
        # Kill once the worker is visibly working, with a backlog, and the replay half sent.
        wait_until(lambda: predictions.poll() >= len(events) // 5, 180, f"{len(events) // 5} predictions")
        sent_at_kill = progress["sent"]
        refused_before = [refused(child) for child in children]
        broker.kill()
        if outage == "noticed":
            wait_until(lambda: all(refused(c) > n for c, n in zip(children, refused_before, strict=True)), 60,
                       "every process to find the broker gone")
        broker.start()  # same port, same storage; the readers and clients reconnect by themselves
        restarted.set()
        producer.join(timeout=180)
        assert not producer.is_alive(), "the replay did not finish"
        assert not replay_error, replay_error
        expected = {(e.entity_id, e.seq) for e in events}

        def all_predicted() -> bool:
            predictions.poll()
            for child in children:
                assert child.alive(), f"{child.module} exited:\n{child.log_tail()}"
            return expected <= set(prediction_keys(predictions.values()))

        wait_until(all_predicted, 240, "a prediction for every (entity, seq) after the restart")
        groups = {"worker": app_id, "sidecar": sidecar_app_id(settings)}
        for name, group in groups.items():
            wait_until(lambda group=group: committed_all(broker.bootstrap_servers, group, telemetry, next_offsets),
                       120, f"the {name} to commit every telemetry offset", poll_s=1.0)
        wait_until(lambda: expected <= vm.entity_seqs("fd001-"), 120,
                   "VictoriaMetrics to hold a point for every (entity, seq)", poll_s=1.0)
        fills = TopicReader(broker.bootstrap_servers, SYNTHETIC.in_namespace(namespace).name)
        try:
            wait_until(lambda: fills.poll() >= 0 and any(m.key == gapped.encode() for m in fills.messages), 120,
                       f"a sidecar fill for {gapped} (its gap was sent after the restart)")
        finally:
            fills.close()
        prediction_ends: dict[int, int] = {}
        for message in predictions.messages:
            prediction_ends[message.partition] = max(prediction_ends.get(message.partition, 0), message.offset + 1)
        wait_until(lambda: committed_all(broker.bootstrap_servers, sink_app_id(settings),
                                         PREDICTIONS.in_namespace(namespace).name, prediction_ends),
                   120, "the sink to commit every prediction", poll_s=1.0)
        for child in children:
            assert child.alive(), f"{child.module} exited:\n{child.log_tail()}"
    finally:
        restarted.set()
        for child in children:
            child.stop()
        predictions.close()

    assert 0 < sent_at_kill < len(events), "the broker should die while the replay is still sending"
    assert sent_at_kill < gap_index, "the dropped sensor should be sent after the restart"
    twins = latest_twins_from_changelog(broker.bootstrap_servers, f"{app_id}-twins-changelog")
    applied = {entity: twin.updates for entity, twin in twins.items()}
    assert applied == dict(sent_per_entity), "twin update counts differ from events sent (lost or double-applied)"
    assert set(prediction_keys(predictions.values())) == {(e.entity_id, e.seq) for e in events}


def test_broker_command_sigkilled_leaves_nothing_and_restarts_with_its_data(tmp_path: Path) -> None:
    """``twinstream broker --storage DIR`` SIGKILLed: its broker and store die with it (the
    port is free again), and a new command on the same directory serves the old records."""
    import signal
    import subprocess
    import sys

    from kafka import KafkaProducer

    from twinstream.broker import free_port, port_is_free, wait_for_port

    port, data = free_port(), tmp_path / "data"
    command = [sys.executable, "-m", "twinstream", "broker", "--port", str(port), "--storage", str(data)]

    def start() -> subprocess.Popen[bytes]:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=(tmp_path / "cli.log").open("ab"))
        wait_for_port("127.0.0.1", port, 30, process)
        return process

    first = start()
    try:
        producer = KafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks="all")
        for n in range(50):
            producer.send("restart-probe", key=b"k", value=str(n).encode())
        producer.flush(30)
        producer.close()
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    wait_until(lambda: port_is_free("127.0.0.1", port), 15, "the SIGKILLed command's broker to release its port")
    second = start()
    try:
        reader = TopicReader(f"127.0.0.1:{port}", "restart-probe")
        wait_until(lambda: reader.poll() >= 50, 30, "the 50 records sent before the kill")
        assert [int(m.value) for m in reader.messages] == list(range(50))
        reader.close()
    finally:
        second.terminate()
        second.wait(timeout=20)
