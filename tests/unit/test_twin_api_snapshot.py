"""What the worker publishes to the API process, and what the API process makes of it (no broker, no process)."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import Twin
from twinstream.streams.api.publisher import SnapshotPublisher
from twinstream.streams.api.routing import Ownership, TwinDirectory
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.output import partition_for
from twinstream.streams.records import Record

PARTITIONS = 2


def a_twin(entity_id: str, steps: int) -> Twin:
    twin = Twin(entity_id=entity_id, learner=RiverLinearTwin(), kind="k")
    for seq in range(steps):
        twin.step(seq, {"s1": 1.0 + seq}, target=10.0 - seq)
    return twin


def partition(entity_id: str) -> int:
    return partition_for(entity_id.encode(), PARTITIONS, iter(()))


def fake_agent(twins: dict[str, Twin], table: dict[bytes, bytes], owned: set[int]) -> Any:
    """The parts of an IngestAgent the publisher reads: cache, table store, assignment, group map."""
    topic = types.SimpleNamespace(get_topic_name=lambda: "telemetry")
    assignment = [types.SimpleNamespace(topic="telemetry", partition=p) for p in owned]
    return types.SimpleNamespace(
        processor=types.SimpleNamespace(twins=twins),
        table=types.SimpleNamespace(data=table, changelog_topic=types.SimpleNamespace(get_topic_name=lambda: "changelog")),
        telemetry=topic,
        app=types.SimpleNamespace(
            consumer=types.SimpleNamespace(assignment=lambda: assignment),
            assignor=types.SimpleNamespace(changelog_distribution={"http://a:1/": {"changelog": sorted(owned)}}),
        ),
        settings=types.SimpleNamespace(partitions=PARTITIONS),
        rebalancing=False,
        generation=1,
        checkpoint_number=0,
    )


def drain(publisher: SnapshotPublisher, directory: TwinDirectory) -> list[str]:
    """Deliver what the publisher queued, as the API process's reader does; the message kinds in order."""
    kinds = []
    while not publisher.outbox.empty():
        message = publisher.outbox.get()
        kinds.append(message[0])
        if message[0] == "own":
            directory.set_ownership(message[1])
        else:
            for entity_id, part, state in message[1]:
                directory.put(entity_id, part, state)
    return kinds


def test_touched_twins_are_published_and_checkpointed_ones_backfilled() -> None:
    live, stored = a_twin("live-1", 3), a_twin("stored-1", 5)
    table = {b"live-1": live.to_bytes(), b"stored-1": stored.to_bytes(), b"_marker": b"x"}
    owned = {partition("live-1"), partition("stored-1")}
    agent = fake_agent({"live-1": live}, table, owned)
    publisher = SnapshotPublisher(agent, WorkerMetrics())
    publisher.conn = types.SimpleNamespace()  # attached: ticks publish (the threads are not started here)
    directory = TwinDirectory("http://a:1", PARTITIONS)

    asyncio.run(publisher.tick())  # ownership, then the backfill of the store
    assert drain(publisher, directory) == ["own", "states"]
    assert directory.loading and not directory.ready()
    assert isinstance(directory.entries["stored-1"][1], bytes) and "live-1" not in directory.entries  # live: cached

    live.step(3, {"s1": 4.0}, target=7.0)
    publisher.on_batch([Record(b"live-1", b"{}", "telemetry", partition("live-1"), 0)])
    asyncio.run(publisher.tick())
    assert drain(publisher, directory) == ["own", "states"]  # loaded now, and the touched twin
    assert directory.ready() and not directory.loading
    assert directory.state("live-1")["last_seq"] == 3 and directory.state("live-1")["updates"] == 4
    assert directory.state("live-1")["state_bytes"] == len(table[b"live-1"])
    stored_state = directory.state("stored-1")  # read from its checkpoint on first request
    assert stored_state["last_seq"] == 4 and stored_state["state_bytes"] == len(table[b"stored-1"])
    assert list(directory.entity_ids()) == ["live-1", "stored-1"]
    assert directory.owner_url("stored-1") is None or directory.owner_url("stored-1") == "http://a:1"
    assert directory.peer_urls() == []

    asyncio.run(publisher.tick())  # nothing changed: nothing sent
    assert drain(publisher, directory) == []


def test_a_twin_published_before_its_checkpoint_is_published_again_with_its_size() -> None:
    twin, table = a_twin("new-1", 2), {}
    agent = fake_agent({"new-1": twin}, table, {partition("new-1")})
    publisher = SnapshotPublisher(agent, WorkerMetrics())
    publisher.conn = types.SimpleNamespace()
    directory = TwinDirectory("http://a:1", PARTITIONS)
    asyncio.run(publisher.tick())
    publisher.on_batch([Record(b"new-1", b"{}", "telemetry", partition("new-1"), 0)])
    asyncio.run(publisher.tick())
    drain(publisher, directory)
    assert directory.state("new-1")["state_bytes"] == 0  # not checkpointed yet
    asyncio.run(publisher.tick())
    assert drain(publisher, directory) == []  # no checkpoint since: nothing to say
    table[b"new-1"] = twin.to_bytes()  # the checkpoint writes it
    agent.checkpoint_number += 1
    asyncio.run(publisher.tick())
    assert drain(publisher, directory) == ["states"]
    assert directory.state("new-1")["state_bytes"] == len(table[b"new-1"])
    asyncio.run(publisher.tick())
    assert drain(publisher, directory) == []  # once


def test_rebalance_forgets_revoked_partitions_and_reloads() -> None:
    twins = {f"e{i}": a_twin(f"e{i}", 2) for i in range(8)}
    table = {key.encode(): twin.to_bytes() for key, twin in twins.items()}
    agent = fake_agent({}, table, {0, 1})
    publisher = SnapshotPublisher(agent, WorkerMetrics())
    publisher.conn = types.SimpleNamespace()
    directory = TwinDirectory("http://a:1", PARTITIONS)
    asyncio.run(publisher.tick())
    asyncio.run(publisher.tick())
    drain(publisher, directory)
    assert sorted(directory.entries) == sorted(twins) and directory.ready()

    agent.rebalancing = True  # revoked: the API answers 503 until the new assignment is recovered and loaded
    publisher.on_batch([Record(b"e0", b"{}", "telemetry", partition("e0"), 0)])
    asyncio.run(publisher.tick())
    assert drain(publisher, directory) == ["own"] and directory.rebalancing and not publisher.touched

    kept = partition("e0")
    agent.app.consumer.assignment = lambda: [types.SimpleNamespace(topic="telemetry", partition=kept)]
    agent.rebalancing, agent.generation = False, 2
    asyncio.run(publisher.tick())
    asyncio.run(publisher.tick())
    drain(publisher, directory)
    assert directory.ready() and directory.owned_partitions() == {kept}
    assert sorted(directory.entries) == sorted(e for e in twins if partition(e) == kept)


def test_reports_count_in_the_worker_registry() -> None:
    metrics = WorkerMetrics()
    seen: list[tuple[int, dict]] = []
    probe = types.SimpleNamespace(on_prediction=lambda part, p: seen.append((part, p)))
    publisher = SnapshotPublisher(fake_agent({}, {}, set()), metrics, probe)  # type: ignore[arg-type]
    publisher.handle(("report", [("/twins/{entity_id}", "GET", 200, 0.002)] * 3, [(1, "pump", False)]))
    assert metrics.api_requests.labels("/twins/{entity_id}", "GET", "200")._value.get() == 3
    assert seen == [(1, {"kind": "pump", "in_domain": False})]
    publisher.handle(("metrics?", 7))
    kind, request, text = publisher.outbox.get_nowait()
    assert (kind, request) == ("metrics", 7) and b"twinstream_api_requests_total" in text


def test_ownership_defaults_to_not_ready() -> None:
    directory = TwinDirectory("http://a:1/", PARTITIONS)
    assert directory.rebalancing and directory.loading and not directory.ready()
    directory.set_ownership(
        Ownership(rebalancing=False, owned=frozenset({0}), loaded=True, distribution={"http://a:1": (0,), "http://b:2": (1,)})
    )
    assert directory.peer_urls() == ["http://b:2"] and directory.ready()
    other = next(e for e in (f"x{i}" for i in range(50)) if partition(e) == 1)
    assert directory.owner_url(other) == "http://b:2" and not directory.is_local(other)
