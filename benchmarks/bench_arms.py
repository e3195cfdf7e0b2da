"""The benchmark's arms, all reading the same input topic through their own consumer groups:
a and b are bare aiokafka loops in this process (b runs the worker's TwinProcessor), c and
d run one and two twinstream worker processes, r one worker with the peer's learner; the
peer arm p (a Quix Streams app) is started from bench_peer.py through ``process_arm``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from bench_common import ARM_NAMES, ArmResult, console
from bench_measure import CpuWatch, OutputStats, TopicReader, proc_jiffies, rss_mb
from bench_messages import Message
from bench_profile import start_py_spy, stop_py_spy
from rich.progress import Progress

from twinstream.connectors.producer import send_all
from twinstream.kafka_security import client_options
from twinstream.processes import stop_process
from twinstream.schemas.topics import TopicSpec, topic_catalog
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor import Record, TwinProcessor
from twinstream.streams.topic_admin import ensure_topics


class Bench:
    def __init__(self, args: argparse.Namespace, broker_url: str, workdir: Path, progress: Progress, broker_pid: int | None = None) -> None:
        self.args = args
        self.own_pids: list[int | str] = ["self"] + ([broker_pid] if broker_pid else [])
        self.broker_url = broker_url
        self.workdir = workdir
        self.progress = progress
        self.run_id = uuid.uuid4().hex[:8]
        self.namespace = f"bench_{self.run_id}"
        self.settings = Settings(
            broker=broker_url,
            partitions=args.partitions,
            topic_namespace=self.namespace,
            app_id=f"bench-{self.run_id}",
            data_dir=workdir / "data",
        )
        self.servers = self.settings.broker_servers
        self.security = client_options(self.settings)  # TWINSTREAM_KAFKA_* from the environment, as the worker arm
        self.reader = TopicReader(self.servers, args.partitions, self.security)
        catalog = {spec.name.split(".", 1)[1]: spec.name for spec in topic_catalog(args.partitions, self.namespace)}
        self.input_topic = catalog["telemetry"]
        self.predictions_topic = catalog["predictions"]
        self.dlq_topic = catalog["telemetry.dlq"]
        self.out_topics = {arm: f"{self.namespace}.out_{arm}" for arm in ("a", "b", "p")}
        self.twin_bytes: list[int] = []

    # -- topics
    def create_topics(self) -> None:
        ensure_topics(self.settings)
        specs = [TopicSpec(name=name, value_schema="Prediction", partitions=self.args.partitions) for name in self.out_topics.values()]
        ensure_topics(self.settings, specs)

    # -- input
    async def produce_input(self, messages: list[Message]) -> float:
        started = time.monotonic()
        sent = await asyncio.wait_for(
            send_all(self.servers, self.input_topic, messages, description="produce input", security=self.security),
            timeout=self.args.arm_timeout,
        )
        elapsed = time.monotonic() - started
        if sent != len(messages):
            raise RuntimeError(f"produced {sent} of {len(messages)} messages")
        end = await self.reader.snapshot(self.input_topic)
        if sum(end.values()) != len(messages):
            raise RuntimeError(f"input topic holds {sum(end.values())} messages, expected {len(messages)}")
        return len(messages) / elapsed

    # -- arms a and b
    async def bare_loop(self, arm: str, repeat: int) -> ArmResult:
        n = self.args.messages
        out_topic = self.out_topics[arm]
        base = await self.reader.snapshot(out_topic)
        group = f"bench-{arm}-{self.run_id}-r{repeat}-{uuid.uuid4().hex[:6]}"
        processor: TwinProcessor | None = None
        if arm == "b":
            processor = TwinProcessor(self.settings, lambda _entity: None, WorkerMetrics())
        consumer = AIOKafkaConsumer(
            self.input_topic,
            bootstrap_servers=self.servers,
            group_id=group,
            client_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=int(self.settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(max(1.0, self.settings.session_timeout_s / 4) * 1000),
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **self.security,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            enable_idempotence=False,
            client_id=group,
            **self.security,
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
                                {
                                    "entity_id": d["entity_id"],
                                    "event_time": d["event_time"],
                                    "seq": d["seq"],
                                    "target": "rul",
                                    "value": 0.0,
                                    "lower": 0.0,
                                    "upper": 0.0,
                                    "model_version": "none",
                                    "prior_version": None,
                                    "updates": 0,
                                    "synthetic": d["synthetic"],
                                }
                            )
                            futures.append(await send(out_topic, value, key=rec.key))
                            seen += 1
                else:
                    records = [
                        Record(rec.key, rec.value, rec.topic, rec.partition, rec.offset) for recs in batches.values() for rec in recs
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
        stats = await self.reader.read_outputs(out_topic, base)
        self._check_complete(arm, stats, dead)
        return ArmResult(
            arm,
            repeat,
            stats.rate,
            stats.unique,
            stats.records,
            stats.span_s,
            loop_rate=n / (t_done - t_first),
            dead_letters=dead,
            foreign_busy=foreign,
        )

    def _check_complete(self, arm: str, stats: OutputStats, dead: int) -> None:
        if dead:
            console.print(f"[red]arm {arm}: {dead} messages went to the dead-letter path[/red]")
        if stats.unique != self.args.messages:
            raise RuntimeError(f"arm {arm}: {stats.unique} unique outputs, expected {self.args.messages}")

    # -- arms c, d and r: worker processes; p: the Quix Streams peer (bench_peer.py)
    def worker_env(self, app_id: str, index: int, namespace: str | None = None, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of one worker process: the caller's ``TWINSTREAM_*`` plus this run's broker and topics."""
        return {
            **os.environ,
            "TWINSTREAM_BROKER": self.broker_url,
            "TWINSTREAM_APP_ID": app_id,
            "TWINSTREAM_TOPIC_NAMESPACE": namespace or self.namespace,
            "TWINSTREAM_PARTITIONS": str(self.args.partitions),
            "TWINSTREAM_DATA_DIR": str(self.workdir / f"{app_id}-w{index}"),
            "PYTHONUNBUFFERED": "1",
            **(extra or {}),
        }

    def start_worker(
        self, app_id: str, index: int, log: Path, namespace: str | None = None, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        return spawn([sys.executable, "-m", "twinstream.streams.worker"], self.worker_env(app_id, index, namespace, extra_env), log)

    @staticmethod
    def stop_worker(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
        stop_process(proc, timeout_s)

    async def worker_arm(
        self, arm: str, repeat: int, processes: int, profile: Path | None, extra_env: dict[str, str] | None = None
    ) -> ArmResult:
        app_id = f"bench-{arm}-{self.run_id}-r{repeat}-{uuid.uuid4().hex[:6]}"
        logs = [self.workdir / f"{app_id}-w{i}.log" for i in range(processes)]

        def start() -> list[subprocess.Popen]:
            return [self.start_worker(app_id, i, logs[i], extra_env=extra_env) for i in range(processes)]

        return await self.process_arm(arm, repeat, start, logs, self.predictions_topic, profile, self.dlq_topic)

    async def process_arm(
        self,
        arm: str,
        repeat: int,
        start: Callable[[], list[subprocess.Popen]],
        logs: list[Path],
        output_topic: str,
        profile: Path | None = None,
        dlq_topic: str | None = None,
    ) -> ArmResult:
        """Run processes that read the input topic and write one output per input to ``output_topic``; time the outputs."""
        n = self.args.messages
        base = await self.reader.snapshot(output_topic)
        dlq_base = await self.reader.snapshot(dlq_topic) if dlq_topic else {}
        task = self.progress.add_task(f"r{repeat} {arm}: {ARM_NAMES[arm]}", total=n)
        watch = CpuWatch(self.own_pids)
        watch.start()
        started = time.monotonic()
        procs = start()
        spy: subprocess.Popen | None = None
        t_first: float | None = None
        rss_start: list[float] = []
        rss_end: list[float] = []
        consumer = self.reader.admin_consumer()
        await asyncio.wait_for(consumer.start(), timeout=30)
        try:
            deadline = started + self.args.arm_timeout
            margin = self.args.partitions * 2000  # what the reported end offsets may miss
            stalled, last_count = 0, -1
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"arm {arm}: not all {n} outputs after {self.args.arm_timeout:.0f} s")
                for i, proc in enumerate(procs):
                    if proc.poll() is not None:
                        tail = logs[i].read_text(errors="replace")[-3000:]
                        raise RuntimeError(f"process {i} of arm {arm} exited with {proc.returncode}:\n{tail}")
                end = await self.reader.end_offsets(consumer, output_topic)
                # a lower bound on Tansu (see snapshot): short by up to one batch per partition
                count = sum(end[p] - base.get(p, 0) for p in end)
                if count > 0 and t_first is None:
                    t_first = time.monotonic()
                    rss_start = [rss_mb(p.pid) for p in procs]
                    if profile is not None:
                        spy = start_py_spy(procs[0].pid, profile)
                self.progress.update(task, completed=min(count, n))
                stalled = stalled + 1 if count == last_count else 0
                last_count = count
                # read back (costs CPU) only near the end and once the output stopped growing
                if count >= n - margin and stalled >= 3:
                    stats = await self.reader.read_outputs(output_topic, base)
                    if stats.unique >= n:
                        break
                    stalled = 0
                await asyncio.sleep(0.1)
            rss_end = [rss_mb(p.pid) for p in procs]
            foreign = watch.stop(extra_own=sum(proc_jiffies(p.pid) for p in procs) + (proc_jiffies(spy.pid) if spy is not None else 0))
            self.progress.update(task, completed=n)
        finally:
            await consumer.stop()
            if spy is not None:
                stop_py_spy(spy)
            for proc in procs:
                self.stop_worker(proc)
        dead = 0
        if dlq_topic:
            dlq_end = await self.reader.snapshot(dlq_topic)
            dead = sum(dlq_end[p] - dlq_base.get(p, 0) for p in dlq_end)
        self._check_complete(arm, stats, dead)
        startup = (stats.first_ms / 1000.0) - (time.time() - (time.monotonic() - started))
        return ArmResult(
            arm,
            repeat,
            stats.rate,
            stats.unique,
            stats.records,
            stats.span_s,
            startup_s=startup,
            dead_letters=dead,
            worker_rss_mb=rss_end,
            worker_rss_start_mb=rss_start,
            foreign_busy=foreign,
        )


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """A benchmark subprocess writing to ``log``, in its own session (Ctrl-C of the benchmark does not reach it)."""
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
