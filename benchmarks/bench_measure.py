"""Measurements of the throughput benchmark: CPU used by other processes, RSS, the heap
per twin, and reading outputs back to time them (CreateTime of the first and last output).
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
import uuid
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from bench_common import console
from bench_messages import Message

from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor import Record, TwinProcessor


# --------------------------------------------------------------------------- output timing
@dataclass
class OutputStats:
    unique: int
    records: int
    first_ms: int
    last_ms: int
    times: dict[tuple[str, int], int] | None = None  # (entity, seq) -> first output's CreateTime, ms (keep_times)

    @property
    def span_s(self) -> float:
        return max(self.last_ms - self.first_ms, 1) / 1000.0

    @property
    def rate(self) -> float:
        return self.unique / self.span_s


class TopicReader:
    """End offsets of the benchmark's topics and read-back of an arm's outputs."""

    def __init__(self, servers: str, partitions: int, security: dict | None = None) -> None:
        self.servers = servers
        self.partitions = partitions
        self.security = security or {}  # twinstream.kafka_security.client_options

    async def end_offsets(self, consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in range(self.partitions)]
        offsets = await asyncio.wait_for(consumer.end_offsets(tps), timeout=30)
        return {tp.partition: off for tp, off in offsets.items()}

    def admin_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"bench-admin-{uuid.uuid4().hex[:6]}",
            request_timeout_ms=30000,
            **self.security,
        )

    async def snapshot(self, topic: str) -> dict[int, int]:
        """Exact end offsets of ``topic`` (call it while nothing writes to the topic).

        Tansu 0.6.0 answers ListOffsets(latest) with the last *batch's* base offset + 1,
        not the last record's offset + 1, so the reported end is short by one batch; the
        tail is found by reading from the reported offset until nothing more comes.
        """
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            group_id=None,
            enable_auto_commit=False,
            client_id=f"bench-snapshot-{uuid.uuid4().hex[:6]}",
            **self.security,
        )
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            reported = await self.end_offsets(consumer, topic)
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            exact = dict(reported)
            for tp in tps:
                consumer.seek(tp, reported[tp.partition])
            empty_polls = 0
            deadline = time.monotonic() + 30
            while empty_polls < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading the tail of {topic} took more than 30 s")
                batches = await consumer.getmany(timeout_ms=200, max_records=100000)
                empty_polls = 0 if any(batches.values()) else empty_polls + 1
                for tp, recs in batches.items():
                    if recs:
                        exact[tp.partition] = max(exact[tp.partition], recs[-1].offset + 1)
            return exact
        finally:
            await consumer.stop()

    async def read_outputs(self, topic: str, start: dict[int, int], timeout_s: float = 120.0, keep_times: bool = False) -> OutputStats:
        """Read ``topic`` from ``start`` until nothing more comes; dedupe by (entity_id, seq).

        "Nothing more" = two empty polls *after* every partition was read up to its reported
        end offset: a broker on durable storage may answer the first fetches slower than a
        poll lasts, and the reported end (short by one batch on Tansu) is still a lower bound.
        """
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=32 * 1024 * 1024,
            client_id=f"bench-reader-{uuid.uuid4().hex[:6]}",
            **self.security,
        )
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            tps = [TopicPartition(topic, p) for p in range(self.partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start.get(tp.partition, 0))
            reported_end = await self.end_offsets(consumer, topic)
            next_offset = {p: start.get(p, 0) for p in range(self.partitions)}
            first: dict[tuple[str, int], int] = {}
            records = 0
            empty_polls = 0
            deadline = time.monotonic() + timeout_s
            while empty_polls < 2 or any(next_offset[p] < end for p, end in reported_end.items()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading back {topic} took more than {timeout_s:.0f} s")
                batches = await consumer.getmany(timeout_ms=200, max_records=20000)
                empty_polls = 0 if any(batches.values()) else empty_polls + 1
                for tp, recs in batches.items():
                    if recs:
                        next_offset[tp.partition] = max(next_offset[tp.partition], recs[-1].offset + 1)
                    records += len(recs)
                    for rec in recs:
                        d = orjson.loads(rec.value)
                        k = (d["entity_id"], d["seq"])
                        ts = rec.timestamp
                        old = first.get(k)
                        if old is None or ts < old:
                            first[k] = ts
            if not first:
                return OutputStats(0, 0, 0, 0)
            times = first.values()
            return OutputStats(len(first), records, min(times), max(times), first if keep_times else None)
        finally:
            await consumer.stop()


# --------------------------------------------------------------------------- CPU and memory
def rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _cpu_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def background_busy(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over ``seconds`` (call while the benchmark itself is idle)."""
    try:
        busy0, total0 = _cpu_jiffies()
        time.sleep(seconds)
        busy1, total1 = _cpu_jiffies()
    except OSError:
        return float("nan")
    return (busy1 - busy0) / max(total1 - total0, 1)


async def wait_quiet(limit_s: float, threshold: float = 0.10) -> float:
    """Wait up to ``limit_s`` for other processes to leave the CPUs idle; return the busy share seen."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = await asyncio.to_thread(background_busy, 1.0)
        if busy <= threshold or time.monotonic() >= deadline:
            return busy
        console.print(f"[yellow]CPUs {busy:.0%} busy with other processes; waiting[/yellow]")


def proc_jiffies(pid: int | str) -> int:
    """utime + stime of a live process, in clock ticks (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


class CpuWatch:
    """Share of all CPUs that processes *other than ours* used during an arm."""

    def __init__(self, own_pids: list[int | str]) -> None:
        self.own_pids = own_pids
        self.busy0 = self.total0 = self.own0 = 0

    def start(self) -> None:
        self.busy0, self.total0 = _cpu_jiffies()
        self.own0 = sum(proc_jiffies(p) for p in self.own_pids)

    def stop(self, extra_own: int = 0) -> float:
        busy1, total1 = _cpu_jiffies()
        own = sum(proc_jiffies(p) for p in self.own_pids) - self.own0 + extra_own
        return max(0.0, (busy1 - self.busy0 - own) / max(total1 - self.total0, 1))


def twin_heap_bytes(settings: Settings, messages: list[Message], entities: int, steps: int = 20) -> float:
    """Python heap bytes per twin (tracemalloc), after ``steps`` updates of each entity."""
    sample = messages[: min(len(messages), entities * steps)]
    records = [Record(m.key, m.value, "t", 0, i) for i, m in enumerate(sample)]
    processor = TwinProcessor(settings, lambda _entity: None, WorkerMetrics())
    processor.process(records[:1])  # import/initialise lazily built module state outside the trace
    processor.drop_all()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(0, len(records), 1000):
        processor.process(records[i : i + 1000])
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (after - before) / max(len(processor.twins), 1)
