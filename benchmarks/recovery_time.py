#!/usr/bin/env python
"""How long a partition is without a worker, and how long N twins take to come back.

Two measurements on the embedded broker, side by side in one run:

1. **Failover**: two workers serve a steady stream of telemetry across 4 partitions; one
   is SIGKILLed. Reported: seconds from the kill until a prediction is published again on
   every partition the killed worker served (the survivor detects the death after the
   session timeout, the group rebalances, the survivor recovers those partitions from
   the changelog and its standby copy, and resumes from the checkpoint markers).
2. **Recovery from the changelog alone**: the changelog of the twins table holds N real
   twins (each has applied a few FD001 cycles; written to the changelog as the worker
   writes them); a worker with an *empty* state dir joins and must rebuild all of them.
   Reported: seconds from its partition assignment to the end of recovery (its own log
   lines), and from process start to serving; the recovered key count is checked by
   opening the worker's RocksDB afterwards.

    python benchmarks/recovery_time.py --twins 1000,10000,100000 --json benchmarks/results/recovery_time.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from twinstream.broker import EmbeddedBroker
from twinstream.connectors.cmapss_replay import cmapss_events
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import PREDICTIONS
from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor
from twinstream.streams.topic_admin import ensure_topics

PARTITIONS = 4
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def start_worker(settings: Settings, log: Path) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen([sys.executable, "-m", "twinstream.streams.worker"], env=settings_env(settings),
                            stdout=handle, stderr=handle)


def wait_for_line(log: Path, text: str, timeout_s: float, after: int = 0, process: subprocess.Popen | None = None) -> str:
    """The first log line containing ``text`` among lines after the first ``after``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        for line in lines[after:]:
            if text in line:
                return line
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"worker exited ({process.returncode}) before logging {text!r}; see {log}")
        time.sleep(0.1)
    raise TimeoutError(f"no {text!r} in {log} after {timeout_s:.0f} s")


def line_time(line: str) -> float:
    match = LOG_TIME.match(line)
    if match is None:
        raise ValueError(f"no timestamp in log line: {line!r}")
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def sample_twin_blob(settings: Settings, cycles: int) -> bytes:
    """A real twin's bytes after ``cycles`` FD001 events (what a checkpoint writes)."""
    processor = TwinProcessor(settings, lambda _: None)
    events = [e for e in cmapss_events("FD001") if e.entity_id == "fd001-train-001"][:cycles]
    processor.process([Record(e.key, e.value, "bench", 0, i) for i, e in enumerate(events)])
    return processor.twins["fd001-train-001"].to_bytes()


async def fill_changelog(bootstrap: str, topic: str, count: int, blob: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1024 * 1024,
                                max_request_size=8 * 1024 * 1024, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            futures.append(await producer.send(topic, key=f"bench-{i:07d}".encode(), value=blob))
            if len(futures) >= 5000:
                await asyncio.gather(*futures)
                futures.clear()
        await asyncio.gather(*futures)
        # One single-record batch per partition: the embedded broker's reported high
        # watermark is the base offset of the last batch + 1 (the worker's checkpoints do the same).
        await asyncio.gather(*[await producer.send(topic, key=f"__checkpoint__.{p}".encode(), value=b"{}", partition=p)
                               for p in range(PARTITIONS)])
    finally:
        await producer.stop()


def count_recovered(state_dir: Path) -> int:
    from rocksdict import AccessType, Rdict

    total = 0
    for db_path in state_dir.rglob("*.db"):
        if db_path.is_dir() and "twins" in str(db_path):
            db = Rdict(str(db_path), access_type=AccessType.read_only())
            total += sum(1 for key in db.keys() if not bytes(key).startswith(b"__"))
            db.close()
    return total


def recovery_from_changelog(broker: EmbeddedBroker, workdir: Path, twins: int, blob: bytes) -> dict:
    app_id = f"recover-{uuid.uuid4().hex[:8]}"
    settings = Settings(broker=broker.url, app_id=app_id, topic_namespace=app_id.replace("-", "_"),
                        partitions=PARTITIONS, data_dir=workdir / f"state-{twins}")
    ensure_topics(settings)
    # The table's changelog topic, created as the worker would (same partitions), then filled.
    first = start_worker(settings, workdir / f"create-{twins}.log")
    wait_for_line(workdir / f"create-{twins}.log", "rebalance complete", 120, process=first)
    stop_process(first, timeout_s=20)
    shutil.rmtree(settings.data_dir)
    started = time.monotonic()
    asyncio.run(fill_changelog(broker.bootstrap_servers, f"{app_id}-twins-changelog", twins, blob))
    fill_s = time.monotonic() - started
    log = workdir / f"recover-{twins}.log"
    t0 = time.time()
    worker = start_worker(settings, log)
    try:
        assigned = wait_for_line(log, "rebalance: assigned partitions", 120, process=worker)
        done = wait_for_line(log, "rebalance complete", 600, process=worker)
    finally:
        stop_process(worker, timeout_s=30)
    recovered = count_recovered(settings.data_dir)
    return {"twins": twins, "twin_bytes": len(blob), "changelog_mb": round(twins * len(blob) / 1e6, 1),
            "fill_s": round(fill_s, 1), "recovery_s": round(line_time(done) - line_time(assigned), 2),
            "start_to_serving_s": round(line_time(done) - t0, 2), "recovered": recovered, "ok": recovered == twins}


async def _last_prediction_times(bootstrap: str, topic: str, since: float, partitions: set[int], timeout_s: float) -> dict:
    """First prediction time (broker CreateTime, s) per partition, among predictions stamped after ``since``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="latest")
    await consumer.start()
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    first: dict[int, float] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while len(first) < len(partitions) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=200)).items():
                for message in messages:
                    stamped = message.timestamp / 1000
                    if stamped > since and tp.partition not in first:
                        first[tp.partition] = stamped
    finally:
        await consumer.stop()
    return first


def failover(broker: EmbeddedBroker, workdir: Path, rate: float) -> dict:
    app_id = f"failover-{uuid.uuid4().hex[:8]}"
    namespace = app_id.replace("-", "_")
    settings = Settings(broker=broker.url, app_id=app_id, topic_namespace=namespace, partitions=PARTITIONS,
                        data_dir=workdir / "fo-state-1")
    ensure_topics(settings)
    logs = [workdir / "fo-worker-1.log", workdir / "fo-worker-2.log"]
    workers = [start_worker(settings, logs[0]),
               start_worker(settings.model_copy(update={"data_dir": workdir / "fo-state-2"}), logs[1])]
    replay = None
    try:
        for worker, log in zip(workers, logs):
            wait_for_line(log, "rebalance complete", 120, process=worker)
        replay = subprocess.Popen([sys.executable, "-m", "twinstream", "replay", "cmapss", "--rate", str(rate)],
                                  env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(8)  # steady state before the kill (not a timing under test)
        victim_line = [line for line in logs[1].read_text().splitlines() if "rebalance: assigned partitions" in line][-1]
        victim = {int(p) for p in re.findall(r"\d+", victim_line.split("partitions=", 1)[1].split("]")[0])} or set(range(PARTITIONS))
        killed_at = time.time()
        workers[1].send_signal(signal.SIGKILL)
        first = asyncio.run(_last_prediction_times(broker.bootstrap_servers, PREDICTIONS.in_namespace(namespace).name,
                                                   killed_at, victim, 120))
    finally:
        if replay is not None:
            stop_process(replay)
        for worker in workers:
            stop_process(worker)
    return {"killed_partitions": sorted(victim), "session_timeout_s": settings.session_timeout_s,
            "failover_s": round(max(first.values()) - killed_at, 2) if len(first) == len(victim) else None,
            "per_partition_s": {str(p): round(t - killed_at, 2) for p, t in sorted(first.items())}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", default="1000,10000,100000", help="comma-separated twin counts")
    parser.add_argument("--cycles", type=int, default=30, help="FD001 cycles applied to the sample twin")
    parser.add_argument("--rate", type=float, default=2000.0, help="replay rate during the failover measurement")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="recovery-"))
    settings = Settings(broker="kafka://127.0.0.1:1", partitions=PARTITIONS)
    blob = sample_twin_blob(settings, args.cycles)
    results: dict = {"command": " ".join(sys.argv), "twin_bytes": len(blob), "recovery": []}
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        results["failover"] = failover(broker, workdir, args.rate)
        print(json.dumps(results["failover"]), flush=True)
        for twins in [int(n) for n in args.twins.split(",") if n]:
            row = recovery_from_changelog(broker, workdir, twins, blob)
            results["recovery"].append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode() + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(row["ok"] for row in results["recovery"]) and results["failover"]["failover_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
