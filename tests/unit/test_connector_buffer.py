"""The disk buffer: seqs survive a restart, bounds are enforced as configured, drops are counted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twinstream.connectors.buffer import DiskBuffer, InvalidSample
from twinstream.connectors.metrics import ConnectorMetrics

T = datetime(2026, 1, 1, tzinfo=UTC)


def put(buffer: DiskBuffer, entity: str = "e1", source: str = "s", value: float = 1.0) -> int:
    return asyncio.run(buffer.put(source, entity, T, {"v": value}))


def test_seqs_and_unsent_samples_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    first = DiskBuffer(path, max_bytes=10**6, max_age_s=3600)
    assert [put(first, "e1") for _ in range(3)] + [put(first, "e2")] == [0, 1, 2, 0]
    first.ack(first.peek(2))  # e1 seq 0 and 1 sent
    first.close()
    again = DiskBuffer(path, max_bytes=10**6, max_age_s=3600, metrics=ConnectorMetrics())
    assert [(r.entity, r.seq) for r in again.peek(10)] == [("e1", 2), ("e2", 0)]
    assert again.metrics.value("twinstream_connector_buffer_samples", source="s") == 2
    assert put(again, "e1") == 3 and put(again, "e2") == 1


def test_invalid_sample_uses_no_seq() -> None:
    buffer = DiskBuffer(":memory:", max_bytes=10**6, max_age_s=3600)
    with pytest.raises(InvalidSample, match="entity_id"):
        put(buffer, "bad id with spaces")
    with pytest.raises(InvalidSample, match="not finite"):
        put(buffer, "e1", value=float("inf"))
    assert put(buffer, "e1") == 0 and buffer.depth()[0] == 1


def test_drop_oldest_is_counted_per_source() -> None:
    metrics = ConnectorMetrics()
    buffer = DiskBuffer(":memory:", max_bytes=2000, max_age_s=3600, metrics=metrics)
    for i in range(100):
        put(buffer, "e1", source="a" if i % 2 else "b", value=float(i))
    samples, size = buffer.depth()
    assert size <= 2000 and samples < 100
    dropped = sum(metrics.value("twinstream_connector_dropped_total", source=s, reason="overflow") for s in "ab")
    assert dropped == 100 - samples
    kept = [r.seq for r in buffer.peek(100)]
    assert kept == list(range(100 - samples, 100)), "the oldest went, the newest stayed, in order"


def test_block_holds_the_source_until_the_sender_frees_space() -> None:
    buffer = DiskBuffer(":memory:", max_bytes=1024, max_age_s=3600, overflow="block")

    async def scenario() -> list[int]:
        while buffer.depth()[1] < 1024:
            await buffer.put("s", "e1", T, {"v": 1.0})
        blocked = asyncio.create_task(buffer.put("s", "e1", T, {"v": 2.0}))
        await asyncio.sleep(0.05)
        assert not blocked.done(), "a full buffer holds the source back"
        buffer.ack(buffer.peek(3))
        return [await asyncio.wait_for(blocked, 5)]

    seq = asyncio.run(scenario())[0]
    assert seq == buffer.peek(1000)[-1].seq, "nothing dropped: the held sample got the next seq"
    assert buffer.metrics.value("twinstream_connector_dropped_total", source="s", reason="overflow") == 0


def test_samples_older_than_max_age_are_dropped_and_counted() -> None:
    buffer = DiskBuffer(":memory:", max_bytes=10**6, max_age_s=60)
    put(buffer)
    put(buffer)
    import time

    assert buffer.expire(now=time.time() + 30) == 0
    assert buffer.expire(now=time.time() + 61) == 2
    assert buffer.metrics.value("twinstream_connector_dropped_total", source="s", reason="expired") == 2
    assert buffer.depth() == (0, 0)
