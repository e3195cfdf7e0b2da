"""What the fleet-scale benchmark reads back: the worker's metrics, the machine's memory, the changelog.

Why a module of its own: ``fleet_scale.py`` drives the sizes (produce, wait, recover);
these are the readings it takes, each a small function over one source.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

MARKER_PREFIX = b"__checkpoint__"  # the key prefix of the worker's checkpoint markers


def scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus metrics, ``name{labels}`` -> value (comments dropped)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def checkpoint_stats(metrics: dict[str, float]) -> dict[str, Any]:
    """Count, mean and the histogram's cumulative buckets of the worker's checkpoint time.

    >>> checkpoint_stats({"twinstream_checkpoint_seconds_count": 4.0, "twinstream_checkpoint_seconds_sum": 2.0,
    ...                   'twinstream_checkpoint_seconds_bucket{le="0.5"}': 3.0})["mean_s"]
    0.5
    """
    count = metrics.get("twinstream_checkpoint_seconds_count", 0.0)
    total = metrics.get("twinstream_checkpoint_seconds_sum", 0.0)
    buckets = {
        key.split('le="', 1)[1].rstrip('"}'): int(value)
        for key, value in metrics.items()
        if key.startswith("twinstream_checkpoint_seconds_bucket")
    }
    return {
        "count": int(count),
        "total_s": round(total, 2),
        "mean_s": round(total / count, 4) if count else None,
        "cumulative_buckets": buckets,
    }


async def read_changelog(bootstrap: str, topic: str, partitions: int, timeout_s: float = 900.0) -> dict[str, Any]:
    """Records and bytes (key + value) of the changelog, and the bytes of each partition's checkpoints."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        client_id=f"fleet-changelog-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        reported = await consumer.end_offsets(tps)
        position = {tp.partition: 0 for tp in tps}
        records = twin_records = total_bytes = 0
        segment = {tp.partition: 0 for tp in tps}
        segments: list[int] = []  # bytes one partition's checkpoint wrote (twins before its marker)
        empty = 0
        deadline = time.monotonic() + timeout_s
        while empty < 2 or any(position[tp.partition] < reported[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took more than {timeout_s:.0f} s")
            batches = await consumer.getmany(timeout_ms=500, max_records=50000)
            empty = 0 if any(batches.values()) else empty + 1
            for tp, recs in batches.items():
                for rec in recs:
                    size = len(rec.key or b"") + len(rec.value or b"")
                    records += 1
                    total_bytes += size
                    if (rec.key or b"").startswith(MARKER_PREFIX):
                        segments.append(segment[tp.partition])
                        segment[tp.partition] = 0
                    else:
                        twin_records += 1
                        segment[tp.partition] += size
                if recs:
                    position[tp.partition] = recs[-1].offset + 1
        segments = [s for s in segments if s > 0]
        return {
            "records": records,
            "twin_records": twin_records,
            "bytes": total_bytes,
            "partition_checkpoints": len(segments),
            "largest_partition_checkpoint_bytes": max(segments, default=0),
        }
    finally:
        await consumer.stop()
