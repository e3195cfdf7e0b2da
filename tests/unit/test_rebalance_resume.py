"""Where each input partition resumes after a rebalance: its marker, or the start of its log.

A partition without a marker has nothing in the table, so nothing of it may be skipped:
its committed offset, or the first record fetched, can lie ahead of its log start (records
fetched while Faust's flow is suspended are dropped, and the seek meant to fetch them
again skips a partition with no committed offset). The broker is left out: the consumer
calls the rebalance makes are answered by hand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from faust.types import TP

from twinstream.settings import Settings
from twinstream.streams.app import create_app, declare_topics
from twinstream.streams.ingest import IngestAgent
from twinstream.streams.input_offsets import OffsetGuard, encode_marker, marker_key
from twinstream.streams.metrics import WorkerMetrics


class Consumer:
    """What the rebalance asks of Faust's consumer: the assignment, log starts, and a commit."""

    def __init__(self, assignment: set[TP], log_start: int | None) -> None:
        self._assignment = assignment
        self.log_start = log_start
        self.committed: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return self._assignment

    async def earliest_offsets(self, *partitions: TP) -> dict[TP, int]:
        if self.log_start is None:
            raise ConnectionError("broker unreachable")
        return {tp: self.log_start for tp in partitions}

    async def _commit(self, offsets: dict[TP, int]) -> bool:
        self.committed.update(offsets)
        return True


def rebalance(tmp_path: Path, markers: dict[int, int], log_start: int | None = 0) -> tuple[IngestAgent, Consumer, str]:
    """Complete a rebalance that assigned partitions 0 and 1 of the telemetry topic, with ``markers`` in the table."""
    settings = Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, twins_spec="none", partitions=2)
    app = create_app(settings)
    agent = IngestAgent(app, settings, declare_topics(app, settings), WorkerMetrics())
    topic = agent.telemetry.get_topic_name()
    table = {marker_key(p): encode_marker(1, {topic: offset}, now=0.0) for p, offset in markers.items()}
    agent._read_key = lambda partition, key: table.get(key)  # type: ignore[method-assign]
    consumer = Consumer({TP(topic, 0), TP(topic, 1)}, log_start)
    asyncio.run(agent._on_rebalance_complete(SimpleNamespace(consumer=consumer)))  # type: ignore[arg-type]
    return agent, consumer, topic


def test_a_partition_without_a_marker_resumes_from_its_log_start(tmp_path: Path) -> None:
    agent, consumer, topic = rebalance(tmp_path, markers={1: 700})
    assert consumer.committed == {TP(topic, 0): 0, TP(topic, 1): 700}
    assert agent.guard.expected == {TP(topic, 0): 0, TP(topic, 1): 700}
    # records 0..485 fetched while the flow was suspended and dropped: the first to come is 486
    assert agent.guard.check(TP(topic, 0), 486, now=0.0) == OffsetGuard.SEEK
    assert agent.guard.check(TP(topic, 0), 0, now=0.1) == OffsetGuard.APPLY


def test_a_log_whose_start_was_deleted_resumes_where_it_begins(tmp_path: Path) -> None:
    agent, consumer, topic = rebalance(tmp_path, markers={}, log_start=5_000)
    assert consumer.committed == {TP(topic, 0): 5_000, TP(topic, 1): 5_000}
    assert agent.guard.check(TP(topic, 1), 5_000, now=0.0) == OffsetGuard.APPLY


def test_a_log_start_the_broker_does_not_give_is_taken_as_0(tmp_path: Path) -> None:
    agent, consumer, topic = rebalance(tmp_path, markers={0: 42}, log_start=None)
    assert consumer.committed == {TP(topic, 0): 42, TP(topic, 1): 0}
    assert agent.guard.check(TP(topic, 1), 300, now=0.0) == OffsetGuard.SEEK
