"""The twin API on two workers: any worker answers for any entity, streams resume, readiness follows rebalances."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from worker_harness import TopicReader, WorkerProcess, wait_until

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.processes import settings_env
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

PUMPS = [f"pump-{i}" for i in range(8)]
SAMPLES = 12
TOKEN = "s3cret-api-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = """
kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: pressure, unit: bar}]
    tasks:
      - {type: forecast, metric: flow, horizon: 1}
"""
START = datetime.now(UTC) - timedelta(hours=1)


def send(producer: Producer, topic: str, pump: str, seq: int) -> None:
    body = {"entity_id": pump, "event_time": (START + timedelta(seconds=seq)).isoformat(), "seq": seq,
            "metrics": {"flow": 50.0 + seq + PUMPS.index(pump), "pressure": 3.0}}
    producer.produce(topic, key=pump.encode(), value=orjson.dumps(body))


def ready(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url + "/readyz", timeout=2)
    except httpx.HTTPError:
        return None


def partitions_of(url: str) -> set[int]:
    reply = ready(url)
    return set(reply.json()["partitions"]) if reply is not None and reply.status_code == 200 else set()


@pytest.fixture
def cluster(kafka_broker: EmbeddedBroker, app_id: str, tmp_path: Path) -> Iterator[tuple[Settings, list[str], list[WorkerProcess]]]:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    base = Settings(broker=kafka_broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"), partitions=4,
                    twins_spec=str(spec), api_token=TOKEN, checkpoint_interval_s=0.5)
    ensure_topics(base)
    workers, urls = [], []
    ports: list[int] = []
    while len(ports) < 2:  # free_port() may hand out the same port twice before either is bound
        port = free_port()
        if port not in ports:
            ports.append(port)
    for name, port in zip(("a", "b"), ports):
        settings = base.model_copy(update={"api_port": port, "data_dir": tmp_path / f"state-{name}"})
        workers.append(WorkerProcess(settings_env(settings), tmp_path / f"worker-{name}.log").start())
        urls.append(f"http://127.0.0.1:{port}")
    try:
        yield base, urls, workers
    finally:
        for worker in workers:
            worker.stop()


def sse_events(response: httpx.Response, count: int) -> list[tuple[int, dict]]:
    """Read ``count`` prediction events (id, data) from an open event stream."""
    events: list[tuple[int, dict]] = []
    event_id, data = None, None
    for line in response.iter_lines():
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            data = orjson.loads(line[6:])
        elif line == "" and data is not None:
            events.append((event_id, data))
            event_id, data = None, None
            if len(events) == count:
                break
    return events


@pytest.mark.slow
def test_two_workers_answer_for_every_twin(cluster: tuple[Settings, list[str], list[WorkerProcess]],
                                           kafka_broker: EmbeddedBroker, tmp_path: Path) -> None:
    settings, urls, workers = cluster
    logs = lambda: "\n".join(w.log_tail(30) for w in workers)  # noqa: E731
    wait_until(lambda: partitions_of(urls[0]) | partitions_of(urls[1]) == {0, 1, 2, 3}
               and not partitions_of(urls[0]) & partitions_of(urls[1]) and all(partitions_of(u) for u in urls),
               120, lambda: f"both workers ready with disjoint partitions; logs:\n{logs()}")
    topic = TELEMETRY.in_namespace(settings.topic_namespace).name
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "enable.idempotence": False})
    for seq in range(SAMPLES):
        for pump in PUMPS:
            send(producer, topic, pump, seq)
    assert producer.flush(30) == 0
    predictions = TopicReader(kafka_broker.bootstrap_servers, PREDICTIONS.in_namespace(settings.topic_namespace).name)
    wait_until(lambda: predictions.poll() >= len(PUMPS) * SAMPLES, 120, lambda: f"predictions; logs:\n{logs()}")

    assert httpx.get(urls[0] + "/twins/pump-0").status_code == 401  # the token is required
    assert httpx.get(urls[0] + "/healthz").status_code == 200  # probes are open

    def current_everywhere() -> bool:
        for url in urls:
            for pump in PUMPS:
                reply = httpx.get(f"{url}/twins/{pump}", headers=AUTH, timeout=5)
                if reply.status_code != 200:
                    return False
                doc = reply.json()
                if doc["last_seq"] != SAMPLES - 1 or "forecast:flow" not in doc["predictions"]:
                    return False
                # the summary and the predictions arrive by different paths (worker snapshots, the
                # predictions topic) and the state size with a checkpoint: wait for all three
                if doc["predictions"]["forecast:flow"]["seq"] != SAMPLES - 1 or doc["state_bytes"] <= 0:
                    return False
        return True

    wait_until(current_everywhere, 60, lambda: f"every twin current on both workers; logs:\n{logs()}")
    doc = httpx.get(f"{urls[1]}/twins/pump-3", headers=AUTH).json()
    assert doc["entity_id"] == "pump-3" and doc["kind"] == "pump" and doc["updates"] == SAMPLES
    assert doc["predictions"]["forecast:flow"]["seq"] == SAMPLES - 1 and doc["state_bytes"] > 0
    assert doc["event_time"] is not None

    # fields= and ETag
    reply = httpx.get(f"{urls[0]}/twins/pump-5", params={"fields": "entity_id,last_seq"}, headers=AUTH)
    assert reply.json() == {"entity_id": "pump-5", "last_seq": SAMPLES - 1}
    tag = reply.headers["etag"]
    for url in urls:
        again = httpx.get(f"{url}/twins/pump-5", params={"fields": "entity_id,last_seq"},
                          headers={**AUTH, "If-None-Match": tag})
        assert again.status_code == 304
    missing = httpx.get(f"{urls[0]}/twins/pump-99", headers=AUTH)
    assert missing.status_code == 404 and "pump-99" in missing.json()["detail"]

    # paged listing from either worker: every twin once, in id order
    for url in urls:
        seen, cursor = [], None
        for _ in range(10):
            params = {"size": 3, "fields": "entity_id"} | ({"cursor": cursor} if cursor else {})
            page = httpx.get(url + "/twins", params=params, headers=AUTH).json()
            seen += [item["entity_id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(PUMPS)
    filtered = httpx.get(urls[0] + "/twins", params={"kind": "pump", "filter": 'in(entity_id,"x")'}, headers=AUTH)
    assert filtered.status_code == 400
    filtered = httpx.get(urls[0] + "/twins", params={"filter": 'or(eq(entity_id,"pump-1"),eq(entity_id,"pump-6"))'},
                         headers=AUTH).json()
    assert [item["entity_id"] for item in filtered["items"]] == ["pump-1", "pump-6"]
    assert httpx.get(urls[0] + "/twins", params={"size": 1000}, headers=AUTH).status_code == 400

    # the stream: asked of the worker that does not own pump-2, redirected to the owner
    owner_index = 0 if _holds(urls[0], "pump-2") else 1
    assert _holds(urls[1 - owner_index], "pump-2") is False
    other = urls[1 - owner_index]
    # The token goes in the query, as the browser's EventSource sends it: a redirect to another
    # origin drops the Authorization header, the query travels with the redirect.
    with httpx.Client(params={"access_token": TOKEN}, timeout=30, follow_redirects=True) as client:
        with client.stream("GET", f"{other}/twins/pump-2/stream") as response:
            assert response.status_code == 200 and str(response.url).startswith(urls[owner_index])
            for seq in range(SAMPLES, SAMPLES + 3):
                send(producer, topic, "pump-2", seq)
            assert producer.flush(30) == 0
            events = sse_events(response, 3)
        assert [event_id for event_id, _ in events] == [SAMPLES, SAMPLES + 1, SAMPLES + 2]
        assert all(data["entity_id"] == "pump-2" and data["task"] == "forecast" for _, data in events)
        # resume after the first one: the two that followed come again, in order
        with client.stream("GET", f"{other}/twins/pump-2/stream", headers={"Last-Event-ID": str(SAMPLES)}) as response:
            resumed = sse_events(response, 2)
        assert [event_id for event_id, _ in resumed] == [SAMPLES + 1, SAMPLES + 2]

    # a rebalance: worker b stops, a takes every partition; /readyz is 503 while it recovers
    statuses: list[int] = []
    workers[1].stop()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        reply = ready(urls[0])
        if reply is not None:
            statuses.append(reply.status_code)
            if reply.status_code == 200 and set(reply.json()["partitions"]) == {0, 1, 2, 3}:
                break
        time.sleep(0.05)
    assert 503 in statuses and statuses[-1] == 200, statuses[-20:]
    # ready means recovered from the table; the tail the stopped worker had not checkpointed is
    # redelivered and applied after that, and the API hears of it with the next snapshot
    expected = {pump: SAMPLES + 2 if pump == "pump-2" else SAMPLES - 1 for pump in PUMPS}
    seen: dict[str, int] = {}

    def every_twin_at_its_last_seq() -> bool:
        for pump in PUMPS:
            seen[pump] = httpx.get(f"{urls[0]}/twins/{pump}", headers=AUTH).json()["last_seq"]
        return seen == expected

    wait_until(every_twin_at_its_last_seq, 30, lambda: f"every twin at its last seq after the rebalance: {seen}")
    for worker in workers:
        assert TOKEN not in worker.log_path.read_text(errors="replace")
    predictions.close()


def _holds(url: str, entity_id: str) -> bool:
    """Whether this worker itself holds the twin (a routed request is answered locally only)."""
    return httpx.get(f"{url}/twins/{entity_id}", headers={**AUTH, "x-twinstream-routed": "1"}).status_code == 200
