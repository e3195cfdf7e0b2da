#!/usr/bin/env python
"""Throughput of the twin worker against bare aiokafka loops, on one broker, in one run.

Arms (all read the same input topic, produced once, through their own consumer groups):

  a  bare aiokafka loop: getmany -> orjson decode -> encode -> send to an output topic
  b  the same loop plus the twins: each getmany batch goes through the worker's own
     ``TwinProcessor`` (validation, Twin.step with the configured learner, prediction
     encoding); its predictions are sent
  c  the twinstream worker (``python -m twinstream.streams.worker``) as a subprocess
  d  two worker processes with one app id (the input's partitions split between them)

Timing: every arm's rate is ``unique outputs / (last output - first output)``, where an
output's time is the CreateTime its producer stamped on it (aiokafka stamps it at
``send``). Outputs are read back after each arm and deduplicated by (entity id, seq).
So consumer-group joins (Tansu holds a JoinGroup for ~half the session timeout), process
start-up and table recovery are *excluded* for every arm alike; start-up is reported
separately for the worker arms.

Run ``python benchmarks/throughput.py --help``; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twinstream.broker import EmbeddedBroker
from twinstream.connectors.producer import send_all
from twinstream.schemas.telemetry import Telemetry
from twinstream.schemas.topics import TopicSpec, topic_catalog
from twinstream.settings import Settings
from twinstream.streams.app import quiet_library_loggers
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor import Record, TwinProcessor
from twinstream.streams.topic_admin import ensure_topics

console = Console(stderr=False)

ARM_NAMES = {
    "a": "bare aiokafka loop (orjson, no learning)",
    "b": "bare loop + TwinProcessor (twins learn)",
    "c": "twinstream worker, 1 process",
    "d": "twinstream worker, 2 processes",
}


# --------------------------------------------------------------------------- messages
@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes


def sensor_profile(sensors: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sensor names and per-sensor mean and std: C-MAPSS FD001's informative sensors.

    The twins' feature code knows these names, so the learner does its real work; more
    sensors than C-MAPSS has get generic names with unit scale.
    """
    try:
        from twinstream.data.cmapss import INFORMATIVE_SENSORS, load_subset

        rows = load_subset("FD001").train
        names = list(INFORMATIVE_SENSORS[:sensors])
        table = np.array([[row.sensors[n] for n in names] for row in rows])
        mean, std = table.mean(axis=0), table.std(axis=0) + 1e-6
    except Exception:  # the bundled data is missing: fall back to generic sensors
        names, mean, std = [], np.zeros(0), np.zeros(0)
    extra = sensors - len(names)
    names += [f"x{i + 1}" for i in range(extra)]
    return names, np.concatenate([mean, np.full(extra, 100.0)]), np.concatenate([std, np.ones(extra)])


def make_messages(n: int, entities: int, sensors: int = 14, seed: int = 7) -> list[Message]:
    """``n`` telemetry messages, entities interleaved (message k: entity k % E, seq k // E).

    Sensors look like C-MAPSS FD001's: each entity has its own offset and drifts with wear
    plus noise; ``targets.rul`` counts down to its end of life, so the twins learn.
    Event times lie in the past.
    """
    rng = np.random.default_rng(seed)
    names, mean, std = sensor_profile(sensors)
    per_entity = -(-n // entities)
    life = per_entity + rng.integers(0, max(per_entity, 1), size=entities)
    offset = mean + rng.normal(0.0, 0.3, size=(entities, sensors)) * std
    wear = rng.choice([-1.0, 1.0], size=sensors) * 2.0 * std  # drift over a whole life
    noise = rng.normal(0.0, 0.5, size=(n, sensors)) * std
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=per_entity + 120)
    times = [(start + timedelta(seconds=s)).isoformat() for s in range(per_entity)]
    ids = [f"unit-{i:05d}" for i in range(entities)]
    keys = [i.encode() for i in ids]
    out: list[Message] = []
    for k in range(n):
        e, seq = k % entities, k // entities
        row = offset[e] + wear * (seq / life[e]) + noise[k]
        value = orjson.dumps(
            {
                "entity_id": ids[e],
                "event_time": times[seq],
                "seq": seq,
                "metrics": dict(zip(names, np.round(row, 4).tolist())),
                "targets": {"rul": float(life[e] - seq)},
                "source": "benchmark",
                "schema_version": 1,
                "synthetic": True,
            }
        )
        out.append(Message(keys[e], value))
    return out


# --------------------------------------------------------------------------- results
@dataclass
class ArmResult:
    arm: str
    repeat: int
    rate: float  # unique outputs / (last - first output CreateTime)
    outputs: int  # unique (entity, seq) outputs
    records: int  # output records incl. duplicates
    span_s: float
    loop_rate: float | None = None  # a/b: in-loop wall clock, first send -> all acked
    startup_s: float | None = None  # worker arms: process start -> first output
    dead_letters: int = 0
    background_busy: float | None = None  # CPU share used by other processes just before the arm
    foreign_busy: float | None = None  # CPU share used by other processes during the arm
    worker_rss_mb: list[float] = field(default_factory=list)
    worker_rss_start_mb: list[float] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.records - self.outputs


@dataclass
class OutputStats:
    unique: int
    records: int
    first_ms: int
    last_ms: int

    @property
    def span_s(self) -> float:
        return max(self.last_ms - self.first_ms, 1) / 1000.0

    @property
    def rate(self) -> float:
        return self.unique / self.span_s


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


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


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


# --------------------------------------------------------------------------- kafka helpers
class Bench:
    def __init__(self, args: argparse.Namespace, broker_url: str, workdir: Path, progress: Progress,
                 broker_pid: int | None = None) -> None:
        self.args = args
        self.own_pids: list[int | str] = ["self"] + ([broker_pid] if broker_pid else [])
        self.broker_url = broker_url
        self.workdir = workdir
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.namespace = f"bench_{self.run_id}"
        self.settings = Settings(
            broker=broker_url, partitions=args.partitions, topic_namespace=self.namespace,
            app_id=f"bench-{self.run_id}", data_dir=workdir / "data",
        )
        self.servers = self.settings.broker_servers
        catalog = {spec.name.split(".", 1)[1]: spec.name for spec in topic_catalog(args.partitions, self.namespace)}
        self.input_topic = catalog["telemetry"]
        self.predictions_topic = catalog["predictions"]
        self.dlq_topic = catalog["telemetry.dlq"]
        self.out_topics = {arm: f"{self.namespace}.out_{arm}" for arm in ("a", "b")}
        self.twin_bytes: list[int] = []

    # -- topics
    def create_topics(self) -> None:
        ensure_topics(self.settings)
        specs = [
            TopicSpec(name=name, value_schema="Prediction", partitions=self.args.partitions)
            for name in self.out_topics.values()
        ]
        ensure_topics(self.settings, specs)

    async def end_offsets(self, consumer: AIOKafkaConsumer, topic: str) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in range(self.args.partitions)]
        offsets = await asyncio.wait_for(consumer.end_offsets(tps), timeout=30)
        return {tp.partition: off for tp, off in offsets.items()}

    def admin_consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
            client_id=f"bench-admin-{uuid.uuid4().hex[:6]}", request_timeout_ms=30000,
        )

    async def snapshot(self, topic: str) -> dict[int, int]:
        """Exact end offsets of ``topic`` (call it while nothing writes to the topic).

        Tansu 0.6.0 answers ListOffsets(latest) with the last *batch's* base offset + 1,
        not the last record's offset + 1, so the reported end is short by one batch; the
        tail is found by reading from the reported offset until nothing more comes.
        """
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
            client_id=f"bench-snapshot-{uuid.uuid4().hex[:6]}",
        )
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            reported = await self.end_offsets(consumer, topic)
            tps = [TopicPartition(topic, p) for p in range(self.args.partitions)]
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

    async def read_outputs(self, topic: str, start: dict[int, int], timeout_s: float = 120.0) -> OutputStats:
        """Read ``topic`` from ``start`` until nothing more comes; dedupe by (entity_id, seq)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.servers, group_id=None, enable_auto_commit=False,
            max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=32 * 1024 * 1024,
            client_id=f"bench-reader-{uuid.uuid4().hex[:6]}",
        )
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            tps = [TopicPartition(topic, p) for p in range(self.args.partitions)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, start.get(tp.partition, 0))
            first: dict[tuple[str, int], int] = {}
            records = 0
            empty_polls = 0
            deadline = time.monotonic() + timeout_s
            while empty_polls < 2:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"reading back {topic} took more than {timeout_s:.0f} s")
                batches = await consumer.getmany(timeout_ms=200, max_records=20000)
                empty_polls = 0 if any(batches.values()) else empty_polls + 1
                for recs in batches.values():
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
            return OutputStats(len(first), records, min(times), max(times))
        finally:
            await consumer.stop()

    # -- input
    async def produce_input(self, messages: list[Message]) -> float:
        started = time.monotonic()
        sent = await asyncio.wait_for(
            send_all(self.servers, self.input_topic, messages, description="produce input"),
            timeout=self.args.arm_timeout,
        )
        elapsed = time.monotonic() - started
        if sent != len(messages):
            raise RuntimeError(f"produced {sent} of {len(messages)} messages")
        end = await self.snapshot(self.input_topic)
        if sum(end.values()) != len(messages):
            raise RuntimeError(f"input topic holds {sum(end.values())} messages, expected {len(messages)}")
        return len(messages) / elapsed

    # -- arms a and b
    async def bare_loop(self, arm: str, repeat: int) -> ArmResult:
        n = self.args.messages
        out_topic = self.out_topics[arm]
        base = await self.snapshot(out_topic)
        group = f"bench-{arm}-{self.run_id}-r{repeat}-{uuid.uuid4().hex[:6]}"
        processor: TwinProcessor | None = None
        if arm == "b":
            processor = TwinProcessor(self.settings, lambda _entity: None, WorkerMetrics())
        consumer = AIOKafkaConsumer(
            self.input_topic, bootstrap_servers=self.servers, group_id=group, client_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, self.settings.session_timeout_s / 4) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024, fetch_max_bytes=16 * 1024 * 1024,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, acks="all", linger_ms=5, max_batch_size=256 * 1024,
            enable_idempotence=False, client_id=group,
        )
        task = self.progress.add_task(f"r{repeat} {arm}: {ARM_NAMES[arm]}", total=n)
        deadline = time.monotonic() + self.args.arm_timeout
        watch = CpuWatch(self.own_pids)
        watch.start()
        await asyncio.wait_for(producer.start(), timeout=30)
        await asyncio.wait_for(consumer.start(), timeout=30)
        seen = 0
        dead = 0
        futures: list[asyncio.Future] = []
        t_first: float | None = None
        batch_size = self.settings.batch_size
        try:
            while seen < n:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"arm {arm}: {seen} of {n} consumed after {self.args.arm_timeout:.0f} s")
                batches = await consumer.getmany(timeout_ms=200, max_records=batch_size)
                if not batches:
                    continue
                if t_first is None:
                    t_first = time.monotonic()
                send = producer.send
                if processor is None:
                    for recs in batches.values():
                        for rec in recs:
                            d = orjson.loads(rec.value)
                            value = orjson.dumps(
                                {"entity_id": d["entity_id"], "event_time": d["event_time"], "seq": d["seq"],
                                 "target": "rul", "value": 0.0, "lower": 0.0, "upper": 0.0,
                                 "model_version": "none", "prior_version": None, "updates": 0,
                                 "synthetic": d["synthetic"]}
                            )
                            futures.append(await send(out_topic, value, key=rec.key))
                            seen += 1
                else:
                    records = [
                        Record(rec.key, rec.value, rec.topic, rec.partition, rec.offset)
                        for recs in batches.values() for rec in recs
                    ]
                    output = processor.process(records)
                    for key, value in output.predictions:
                        futures.append(await send(out_topic, value, key=key))
                    dead += len(output.dead_letters)
                    seen += len(records)
                self.progress.update(task, completed=seen)
            await asyncio.wait_for(producer.flush(), timeout=60)
            await asyncio.wait_for(asyncio.gather(*futures), timeout=60)
            t_done = time.monotonic()
            foreign = watch.stop()
        finally:
            await consumer.stop()
            await producer.stop()
        assert t_first is not None
        if processor is not None:
            self.twin_bytes = [len(t.to_bytes()) for t in processor.twins.values()]
        stats = await self.read_outputs(out_topic, base)
        self._check_complete(arm, stats, dead)
        return ArmResult(arm, repeat, stats.rate, stats.unique, stats.records, stats.span_s,
                         loop_rate=n / (t_done - t_first), dead_letters=dead, foreign_busy=foreign)

    def _check_complete(self, arm: str, stats: OutputStats, dead: int) -> None:
        if dead:
            console.print(f"[red]arm {arm}: {dead} messages went to the dead-letter path[/red]")
        if stats.unique != self.args.messages:
            raise RuntimeError(f"arm {arm}: {stats.unique} unique outputs, expected {self.args.messages}")

    # -- arms c and d
    def start_worker(self, app_id: str, index: int, log: Path) -> subprocess.Popen:
        env = {
            **os.environ,
            "TWINSTREAM_BROKER": self.broker_url,
            "TWINSTREAM_APP_ID": app_id,
            "TWINSTREAM_TOPIC_NAMESPACE": self.namespace,
            "TWINSTREAM_PARTITIONS": str(self.args.partitions),
            "TWINSTREAM_DATA_DIR": str(self.workdir / f"{app_id}-w{index}"),
            "PYTHONUNBUFFERED": "1",
        }
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "twinstream.streams.worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C of the benchmark does not reach it; we stop it ourselves
            )

    @staticmethod
    def stop_worker(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    async def worker_arm(self, arm: str, repeat: int, processes: int, profile: Path | None) -> ArmResult:
        n = self.args.messages
        base = await self.snapshot(self.predictions_topic)
        dlq_base = await self.snapshot(self.dlq_topic)
        app_id = f"bench-{arm}-{self.run_id}-r{repeat}-{uuid.uuid4().hex[:6]}"
        logs = [self.workdir / f"{app_id}-w{i}.log" for i in range(processes)]
        task = self.progress.add_task(f"r{repeat} {arm}: {ARM_NAMES[arm]}", total=n)
        watch = CpuWatch(self.own_pids)
        watch.start()
        started = time.monotonic()
        procs = [self.start_worker(app_id, i, logs[i]) for i in range(processes)]
        spy: subprocess.Popen | None = None
        t_first: float | None = None
        rss_start: list[float] = []
        rss_end: list[float] = []
        consumer = self.admin_consumer()
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            deadline = started + self.args.arm_timeout
            margin = self.args.partitions * 2000  # what the reported end offsets may miss
            stalled, last_count = 0, -1
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"arm {arm}: not all {n} predictions after {self.args.arm_timeout:.0f} s")
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        tail = logs[i].read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"worker {i} of arm {arm} exited with {proc.returncode}:\n{tail}")
                end = await self.end_offsets(consumer, self.predictions_topic)
                # a lower bound on Tansu (see snapshot): short by up to one batch per partition
                count = sum(end[p] - base.get(p, 0) for p in end)
                if count > 0 and t_first is None:
                    t_first = time.monotonic()
                    rss_start = [rss_mb(p.pid) for p in procs]
                    if profile is not None:
                        spy = self.start_py_spy(procs[0].pid, profile)
                self.progress.update(task, completed=min(count, n))
                stalled = stalled + 1 if count == last_count else 0
                last_count = count
                # read back (costs CPU) only near the end and once the output stopped growing
                if count >= n - margin and stalled >= 3:
                    stats = await self.read_outputs(self.predictions_topic, base)
                    if stats.unique >= n:
                        break
                    stalled = 0
                await asyncio.sleep(0.1)
            rss_end = [rss_mb(p.pid) for p in procs]
            foreign = watch.stop(extra_own=sum(proc_jiffies(p.pid) for p in procs)
                                 + (proc_jiffies(spy.pid) if spy is not None else 0))
            self.progress.update(task, completed=n)
        finally:
            await consumer.stop()
            if spy is not None:
                self.stop_py_spy(spy)
            for proc in procs:
                self.stop_worker(proc)
        dlq_end = await self.snapshot(self.dlq_topic)
        dead = sum(dlq_end[p] - dlq_base.get(p, 0) for p in dlq_end)
        self._check_complete(arm, stats, dead)
        startup = (stats.first_ms / 1000.0) - (time.time() - (time.monotonic() - started))
        return ArmResult(arm, repeat, stats.rate, stats.unique, stats.records, stats.span_s,
                         startup_s=startup, dead_letters=dead, worker_rss_mb=rss_end, worker_rss_start_mb=rss_start,
                         foreign_busy=foreign)

    # -- py-spy
    @staticmethod
    def start_py_spy(pid: int, path: Path) -> subprocess.Popen | None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists():
            console.print("[yellow]py-spy not found (pip install py-spy); no profile[/yellow]")
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--rate", "100", "--idle", "--nonblocking",
             "--format", "raw", "--output", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    @staticmethod
    def stop_py_spy(spy: subprocess.Popen) -> None:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait(timeout=10)


# --------------------------------------------------------------------------- memory
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


# --------------------------------------------------------------------------- profile summary
# (label, substrings any of which in a main-thread stack counts the sample); inclusive shares
PROFILE_GROUPS = [
    ("idle: event loop waiting in epoll", ("EpollSelector.select",)),
    ("ingest agent (IngestAgent._agent)", ("IngestAgent._agent (",)),
    ("  TwinProcessor.process", ("TwinProcessor.process (",)),
    ("    decode_telemetry (pydantic)", ("decode_telemetry (",)),
    ("    Twin.step (learner)", ("Twin.step (",)),
    ("    encode_prediction (orjson)", ("encode_prediction (",)),
    ("    prometheus metrics", ("prometheus_client/",)),
    ("  _handle minus process (mostly producer.send)", ("IngestAgent._handle (",)),
    ("  checkpoint (IngestAgent._checkpoint)", ("IngestAgent._checkpoint (",)),
    ("    Twin.to_bytes (pickle)", ("Twin.to_bytes (",)),
    ("    table writes", ("Table.__setitem__", "Collection.__setitem__", "rocksdict")),
    ("    stream.ack", ("Stream.ack (",)),
    ("faust Fetcher (records -> stream queue)", ("Fetcher._fetcher (",)),
    ("faust conductor on_message", ("on_message (faust/transport/conductor.py",)),
    ("faust stream passive drainer", ("Stream._passive_drainer (",)),
    ("aiokafka producer (all)", ("aiokafka/producer/",)),
    ("asyncio task/future machinery (leaf)", ()),
    ("logging", ("logging/__init__.py",)),
]
_ASYNCIO_LEAF = ("asyncio/",)


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of the worker's main thread (the one running the agents) from py-spy raw stacks.

    Faust runs the aiokafka consumer in a second thread with its own event loop; its busy
    share is reported separately.
    """
    main_total = 0
    other_total = 0
    other_idle = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        if not stack.startswith("_run_module_as_main"):
            if stack.startswith("Thread._bootstrap"):
                other_total += count
                if "EpollSelector.select" in frames[-1]:
                    other_idle += count
            continue  # truncated stacks (nonblocking sampling) are dropped
        main_total += count
        leaf[frames[-1]] += count
        for label, needles in PROFILE_GROUPS:
            if not needles:
                if any(n in frames[-1] for n in _ASYNCIO_LEAF) and "EpollSelector.select" not in frames[-1]:
                    inclusive[label] += count
            elif label.startswith("  _handle minus"):
                if "IngestAgent._handle (" in stack and "TwinProcessor.process (" not in stack:
                    inclusive[label] += count
            elif any(needle in stack for needle in needles):
                inclusive[label] += count
    if main_total == 0:
        return {"samples": 0}
    return {
        "samples": main_total,
        "inclusive_pct": {label: round(100.0 * inclusive[label] / main_total, 1) for label, _ in PROFILE_GROUPS},
        "top_self_pct": [(name, round(100.0 * c / main_total, 1)) for name, c in leaf.most_common(top)],
        "consumer_thread_busy_pct": round(100.0 * (other_total - other_idle) / other_total, 1) if other_total else None,
    }


# --------------------------------------------------------------------------- main
async def run(args: argparse.Namespace, broker_url: str, workdir: Path, broker_pid: int | None) -> dict[str, Any]:
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    )
    arms = ["a", "b", "c"] + (["d"] if args.two_workers else [])
    with progress:
        bench = Bench(args, broker_url, workdir, progress, broker_pid)
        console.print(f"broker {broker_url}  namespace {bench.namespace}  input {bench.input_topic}  "
                      f"partitions {args.partitions}")
        bench.create_topics()
        t0 = time.monotonic()
        messages = make_messages(args.messages, args.entities, seed=args.seed)
        avg_size = sum(len(m.value) for m in messages) / len(messages)
        for m in (messages[0], messages[len(messages) // 2], messages[-1]):
            Telemetry.model_validate_json(m.value)
        console.print(f"{len(messages):,} messages built in {time.monotonic() - t0:.1f} s "
                      f"(avg {avg_size:.0f} B, {args.entities:,} entities, 14 sensors, rul target)")
        producer_rate = await bench.produce_input(messages)
        heap_per_twin = twin_heap_bytes(bench.settings, messages, args.entities)
        results: list[ArmResult] = []
        for repeat in range(args.repeat):
            for arm in arms:
                profile = None
                if args.profile and repeat == 0 and arm == "c":
                    profile = Path(args.profile)
                for attempt in range(args.retries + 1):
                    busy = await wait_quiet(args.wait_quiet)
                    if busy > 0.10:
                        progress.console.print(f"[yellow]r{repeat} {arm}: other processes keep {busy:.0%} of the "
                                               "CPUs busy; rates will be low[/yellow]")
                    if arm in ("a", "b"):
                        result = await bench.bare_loop(arm, repeat)
                    else:
                        result = await bench.worker_arm(arm, repeat, 2 if arm == "d" else 1, profile)
                    result.background_busy = busy
                    if (result.foreign_busy or 0.0) <= args.max_foreign or attempt == args.retries:
                        break
                    progress.console.print(
                        f"[yellow]r{repeat} {arm}: {result.rate:,.0f} ev/s discarded, other processes used "
                        f"{result.foreign_busy:.0%} of the CPUs meanwhile (> {args.max_foreign:.0%}); again[/yellow]")
                results.append(result)
                progress.console.print(
                    f"r{repeat} {arm}: {result.rate:,.0f} ev/s over {result.span_s:.2f} s"
                    + (f" (in-loop {result.loop_rate:,.0f} ev/s)" if result.loop_rate else "")
                    + (f", start-up {result.startup_s:.1f} s excluded" if result.startup_s is not None else "")
                    + (f", {result.duplicates} duplicate outputs" if result.duplicates else "")
                    + f"; other processes used {result.foreign_busy:.0%} of the CPUs meanwhile"
                )
    by_arm = {arm: [r.rate for r in results if r.arm == arm] for arm in arms}
    med = {arm: median(rates) for arm, rates in by_arm.items()}
    a, b, c, d = med.get("a"), med.get("b"), med.get("c"), med.get("d")
    worker_rss = [x for r in results if r.arm == "c" for x in r.worker_rss_mb]
    worker_rss_start = [x for r in results if r.arm == "c" for x in r.worker_rss_start_mb]
    summary: dict[str, Any] = {
        "timing": "events/s = unique outputs / (last - first output CreateTime); start-up and group joins excluded",
        "config": {
            "messages": args.messages, "entities": args.entities, "sensors": 14, "partitions": args.partitions,
            "repeat": args.repeat, "broker": "embedded tansu" if args.broker is None else args.broker,
            "avg_message_bytes": round(avg_size, 1), "batch_size": bench.settings.batch_size,
            "learner": bench.settings.learner, "env": args.env,
            "cpus": os.cpu_count(), "python": platform.python_version(),
        },
        "producer_rate": producer_rate,
        "rates": {"a": a, "b": b, "c": c, "d": d},
        "runs": {arm: rates for arm, rates in by_arm.items()},
        "loop_rates": {arm: [r.loop_rate for r in results if r.arm == arm] for arm in ("a", "b")},
        "worker_startup_s": [r.startup_s for r in results if r.startup_s is not None],
        "duplicates": {arm: [r.duplicates for r in results if r.arm == arm] for arm in arms},
        "background_cpu_busy": {arm: [round(r.background_busy or 0.0, 3) for r in results if r.arm == arm]
                                for arm in arms},
        "foreign_cpu_busy": {arm: [round(r.foreign_busy or 0.0, 3) for r in results if r.arm == arm]
                             for arm in arms},
        "ratio": (c / b) if (c and b) else None,
        "ratio_c_a": (c / a) if (c and a) else None,
        "ratio_b_a": (b / a) if (b and a) else None,
        "ratio_d_b": (d / b) if (d and b) else None,
        "ratio_d_c": (d / c) if (d and c) else None,
        "twin_bytes_avg": statistics.fmean(bench.twin_bytes) if bench.twin_bytes else None,
        "twin_heap_bytes": heap_per_twin,
        "worker_rss_mb_end": median(worker_rss),
        "worker_rss_mb_first_output": median(worker_rss_start),
    }
    if args.profile and Path(args.profile).exists():
        summary["profile_c"] = summarize_profile(Path(args.profile))
    return summary


def report(summary: dict[str, Any]) -> None:
    rates = summary["rates"]
    table = Table(title="throughput (medians; events/s from first to last output, start-up excluded)")
    table.add_column("arm")
    table.add_column("what")
    table.add_column("events/s", justify="right")
    table.add_column("runs", justify="right")
    for arm, name in ARM_NAMES.items():
        if rates.get(arm) is None:
            continue
        runs = ", ".join(f"{x:,.0f}" for x in summary["runs"][arm])
        table.add_row(arm, name, fmt(rates[arm]), runs)
    console.print(table)
    cfg = summary["config"]
    console.print(f"messages {cfg['messages']:,}  entities {cfg['entities']:,}  partitions {cfg['partitions']}  "
                  f"repeat {cfg['repeat']}  avg message {cfg['avg_message_bytes']} B  cpus {cfg['cpus']}")
    console.print(f"producer alone (input): {summary['producer_rate']:,.0f} msg/s")
    console.print(f"in-loop wall-clock rates a: {[fmt(x) for x in summary['loop_rates']['a']]}  "
                  f"b: {[fmt(x) for x in summary['loop_rates']['b']]}")
    console.print(f"[bold]ratio c/a = {fmt(summary['ratio_c_a'], '.3f')}   c/b = {fmt(summary['ratio'], '.3f')}[/bold]"
                  f"   b/a = {fmt(summary['ratio_b_a'], '.3f')}"
                  + (f"   d/b = {fmt(summary['ratio_d_b'], '.3f')}   d/c = {fmt(summary['ratio_d_c'], '.2f')}"
                     if summary['ratio_d_b'] else ""))
    console.print(f"memory per twin: Twin.to_bytes() avg {fmt(summary['twin_bytes_avg'])} B; "
                  f"Python heap of a cached twin (tracemalloc) {fmt(summary['twin_heap_bytes'])} B")
    console.print(f"worker RSS (arm c): {fmt(summary['worker_rss_mb_first_output'], '.0f')} MB at first output, "
                  f"{fmt(summary['worker_rss_mb_end'], '.0f')} MB at the end; start-up (excluded) "
                  f"{', '.join(f'{x:.1f}' for x in summary['worker_startup_s'])} s")
    for key, when in (("background_cpu_busy", "just before"), ("foreign_cpu_busy", "during")):
        console.print(f"share of all CPUs used by other processes {when} each arm: "
                      + "  ".join(f"{arm} {', '.join(f'{x:.0%}' for x in v)}" for arm, v in summary[key].items()))
    if any(any(v) for v in summary["duplicates"].values()):
        console.print(f"[yellow]duplicate outputs per run: {summary['duplicates']}[/yellow]")
    prof = summary.get("profile_c")
    if prof and prof.get("samples"):
        console.print(f"py-spy profile of arm c (worker main thread, first output to last, {prof['samples']} samples "
                      f"at 100 Hz; inclusive % of wall time; Faust's consumer thread busy "
                      f"{fmt(prof['consumer_thread_busy_pct'], '.0f')}%):")
        for label, pct in prof["inclusive_pct"].items():
            console.print(f"  {label:<40} {pct:5.1f}%")
        console.print("  top self time:")
        for name, pct in prof["top_self_pct"]:
            console.print(f"    {pct:5.1f}%  {name}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="telemetry messages (default 200000)")
    p.add_argument("--entities", type=int, default=1_000, help="entities = twins (default 1000)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default 4)")
    p.add_argument("--repeat", type=int, default=1, help="run every arm K times; medians are reported")
    p.add_argument("--broker", default=None, help="kafka://host:port; default: start an embedded Tansu broker")
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    p.add_argument("--two-workers", action=argparse.BooleanOptionalAction, default=True,
                   help="run arm d (two worker processes); default on")
    p.add_argument("--arm-timeout", type=float, default=None,
                   help="seconds an arm may take (default max(300, messages/500))")
    p.add_argument("--profile", default=None,
                   help="record arm c of the first repeat with py-spy (raw folded stacks) to this path")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable for the twin code of arm b and the workers, e.g. "
                        "TWINSTREAM_LEARNER=river-linear or TWINSTREAM_BATCH_SIZE=2000 (repeatable)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each arm, wait up to this long for other processes to leave the CPUs idle")
    p.add_argument("--max-foreign", type=float, default=0.25, metavar="SHARE",
                   help="re-run an arm when other processes used more than this share of all CPUs during it "
                        "(default 0.25)")
    p.add_argument("--retries", type=int, default=2, help="re-runs per arm for --max-foreign (default 2)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (worker logs, data)")
    args = p.parse_args(argv)
    if args.arm_timeout is None:
        args.arm_timeout = max(300.0, args.messages / 500.0)
    if args.messages < args.entities:
        p.error("--messages must be >= --entities")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for item in args.env:  # before any Settings() is built, so arm b and the workers agree
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        os.environ[key] = value
    quiet_library_loggers()
    workdir = Path(tempfile.mkdtemp(prefix="twinstream-bench-"))
    broker: EmbeddedBroker | None = None
    try:
        if args.broker is None:
            broker = EmbeddedBroker(log_path=workdir / "tansu.log").start()
            broker_url = broker.url
            process = getattr(broker, "_process", None)
            broker_pid = process.pid if process is not None else None
        else:
            broker_url = Settings(broker=args.broker).broker or args.broker
            broker_pid = None  # its CPU counts as "other processes" if it runs on this machine
        summary = asyncio.run(run(args, broker_url, workdir, broker_pid))
        report(summary)
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
            console.print(f"wrote {args.json}")
        return 0
    finally:
        if broker is not None:
            broker.stop()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
