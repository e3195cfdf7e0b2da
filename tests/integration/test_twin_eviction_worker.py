"""Idle twins leave a running worker's memory and come back whole, on the real broker.

A worker with idle eviction and short checkpoints gets the first cycles of some engines,
then, after those engines have been idle past the limit, other engines' cycles (their
checkpoints evict the idle twins), then the rest of the first engines' cycles: each of
those twins is loaded again, from the table or from a checkpoint still waiting to write
it. Every twin's update count must equal the events sent for it.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import Counter
from pathlib import Path

from worker_harness import (
    TopicReader,
    WorkerProcess,
    committed_all,
    latest_twins_from_changelog,
    prediction_keys,
    wait_until,
)

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.connectors.producer import send_all
from twinstream.processes import settings_env
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

IDLE_S = 1.0
FIRST_CYCLES = 40


def resident_twins(port: int) -> float | None:
    """The worker's ``twinstream_twins`` gauge (None until it is served)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("twinstream_twins "):
            return float(line.split()[1])
    return None


def test_evicted_twins_reload_their_state_and_lose_no_update(kafka_broker: EmbeddedBroker, app_id: str,
                                                             tmp_path: Path) -> None:
    namespace = app_id.replace("-", "_")
    port = free_port()
    settings = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=namespace, partitions=4,
                        data_dir=tmp_path / "state", checkpoint_interval_s=0.5, twin_idle_evict_s=IDLE_S,
                        metrics_port=port)
    ensure_topics(settings)
    events = cmapss_events("FD001")
    engines = sorted({event.entity_id for event in events})
    quiet, busy = set(engines[:10]), set(engines[10:14])
    first = [e for e in events if e.entity_id in quiet and e.seq < FIRST_CYCLES]
    others = [e for e in events if e.entity_id in busy]
    rest = [e for e in events if e.entity_id in quiet and e.seq >= FIRST_CYCLES]
    topic = TELEMETRY.in_namespace(namespace).name
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name)
    worker = WorkerProcess(settings_env(settings), tmp_path / "worker.log").start()
    next_offsets: dict[int, int] = {}

    def predicted(batch: list) -> bool:
        predictions.poll()
        return {(e.entity_id, e.seq) for e in batch} <= set(prediction_keys(predictions.values()))

    def send(batch: list) -> None:
        asyncio.run(send_all(kafka_broker.bootstrap_servers, topic, batch, rate=2000.0, show_progress=False,
                             next_offsets=next_offsets))
        wait_until(lambda: predicted(batch), 120, f"predictions for {len(batch)} events")

    try:
        send(first)
        assert resident_twins(port) == len(quiet), worker.log_tail()
        time.sleep(IDLE_S + 0.5)
        send(others)  # their checkpoints evict the quiet engines' twins
        wait_until(lambda: resident_twins(port) == len(busy), 30,
                   lambda: f"the idle twins to be evicted (resident: {resident_twins(port)})")
        send(rest)  # every quiet engine's twin is loaded again
        assert (resident_twins(port) or 0) >= len(quiet)  # the busy engines' twins may be idle by now
        wait_until(lambda: committed_all(kafka_broker.bootstrap_servers, app_id, topic, next_offsets), 60,
                   "the worker to checkpoint and commit every event", poll_s=1.0)
        assert worker.alive(), worker.log_tail()
    finally:
        worker.stop()
        predictions.close()

    sent = Counter(e.entity_id for e in first + others + rest)
    twins = latest_twins_from_changelog(kafka_broker.bootstrap_servers, f"{app_id}-twins-changelog")
    assert {entity: twin.updates for entity, twin in twins.items()} == dict(sent), "updates lost or applied twice"
    assert all(twins[entity].last_seq == count - 1 for entity, count in sent.items())
