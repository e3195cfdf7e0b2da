#!/usr/bin/env python
"""Fleet scale: one worker holding 100k to 1M twins. Memory, checkpoints and recovery.

For each size N (``--entities``), on one embedded broker, in a fresh topic namespace:

1. A worker (the default configuration plus ``--env``) starts and joins; its RSS is the
   baseline. Then ``--events`` rounds of telemetry are produced, every entity once per
   round (the throughput benchmark's messages: measured, labelled, 14 sensors), so each
   twin is created in round one and stays resident while the others arrive.
2. When the worker has applied every event and acknowledged them (its metrics: events
   applied, checkpoint age 0), the worker's RSS, the resident twins (``twinstream_twins``)
   and its checkpoint statistics (``twinstream_checkpoint_seconds``) are read; RSS per
   resident twin = (RSS at the end - baseline) / resident twins.
3. The twins table's changelog is read back: records, bytes, and bytes per checkpoint
   (total over the checkpoints the worker counted, and the largest one partition's
   checkpoint wrote, from the markers that end each).
4. Recovery, as ``recovery_time.py`` measures it: the worker is stopped, a new one with
   an empty state dir joins the same app id and rebuilds every twin from the changelog;
   seconds from its partition assignment to the end of recovery (its log lines), and the
   twins found in its RocksDB afterwards.

A size whose estimated RSS (a measured heap per twin times N, plus the baseline) exceeds
``--memory-share`` of the machine's available memory is not run; the result then says
so, and extrapolates RSS from the sizes that ran, labelled as an extrapolation. With
idle eviction on (``--env TWINSTREAM_TWIN_IDLE_EVICT_S=...``) every size runs, and a
watchdog stops it if the worker's RSS passes that share. ``resident_twins_peak`` is the
most twins the worker held at once (RSS follows it, not the count at the end).

    python benchmarks/fleet_scale.py --entities 100000,1000000 --json benchmarks/results/fleet_scale.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_common import git_commit  # noqa: E402
from bench_measure import rss_mb, twin_heap_bytes  # noqa: E402
from bench_messages import make_messages  # noqa: E402
from fleet_observe import available_mb, checkpoint_stats, read_changelog, scrape  # noqa: E402
from recovery_time import count_recovered, line_time, start_worker, wait_for_line  # noqa: E402

from twinstream.broker import EmbeddedBroker, free_port  # noqa: E402
from twinstream.connectors.producer import send_all  # noqa: E402
from twinstream.processes import stop_process  # noqa: E402
from twinstream.schemas.topics import topic_catalog  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.app import quiet_library_loggers  # noqa: E402
from twinstream.streams.topic_admin import ensure_topics  # noqa: E402

PARTITIONS = 4


async def produce(settings: Settings, topic: str, messages: list[Any], chunk: int = 50_000) -> float:
    """Send every message, ``chunk`` at a time, each chunk acknowledged before the next.

    Why chunks: aiokafka's producer buffers without a memory bound, and a million
    entities' messages sent at once to a slower broker (on disk) held 16 GB here.
    """
    started = time.monotonic()
    sent = 0
    for start in range(0, len(messages), chunk):
        part = messages[start:start + chunk]
        sent += await send_all(settings.broker_servers, topic, part, description="produce", show_progress=False)
    if sent != len(messages):
        raise RuntimeError(f"produced {sent} of {len(messages)}")
    return len(messages) / (time.monotonic() - started)


class MemoryLimit(RuntimeError):
    """The worker's RSS passed the run's limit; the size is stopped and reported as such."""


def run_size(broker: EmbeddedBroker, workdir: Path, entities: int, args: argparse.Namespace,
             rss_limit_mb: float = float("inf")) -> dict[str, Any]:
    app_id = f"fleet-{entities}-{uuid.uuid4().hex[:6]}"
    port = free_port()
    settings = Settings(
        broker=broker.url,
        app_id=app_id,
        topic_namespace=app_id.replace("-", "_"),
        partitions=PARTITIONS,
        data_dir=workdir / f"state-{entities}",
        metrics_port=port,
    )
    ensure_topics(settings)
    telemetry = next(s.name for s in topic_catalog(PARTITIONS, settings.topic_namespace) if s.name.endswith(".telemetry"))
    total = entities * args.events
    t0 = time.monotonic()
    messages = make_messages(total, entities, seed=args.seed)
    build_s = time.monotonic() - t0
    log = workdir / f"worker-{entities}.log"
    worker = start_worker(settings, log)
    row: dict[str, Any] = {"entities": entities, "events_per_entity": args.events, "events": total}
    try:
        wait_for_line(log, "rebalance complete", 180, process=worker)
        time.sleep(2.0)
        row["rss_baseline_mb"] = round(rss_mb(worker.pid), 1)
        started = time.monotonic()
        row["producer_rate"] = round(asyncio.run(produce(settings, telemetry, messages)), 1)
        del messages
        peak = 0.0
        resident_peak = 0
        deadline = started + args.timeout
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.returncode}); see {log}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{entities} entities: not all {total} events applied after {args.timeout:.0f} s")
            peak = max(peak, rss_mb(worker.pid))
            if peak > rss_limit_mb:
                raise MemoryLimit(f"worker RSS {peak:,.0f} MB exceeded the run's limit of {rss_limit_mb:,.0f} MB")
            metrics = scrape(port)
            resident_peak = max(resident_peak, int(metrics.get("twinstream_twins", 0.0)))
            applied = metrics.get("twinstream_events_applied_total", 0.0)
            if applied >= total and metrics.get("twinstream_checkpoint_age_seconds", 1.0) == 0.0:
                break
            time.sleep(1.0)
        row["apply_s"] = round(time.monotonic() - started, 1)
        row["events_per_s"] = round(total / row["apply_s"], 1)
        time.sleep(args.settle)
        rss_end = rss_mb(worker.pid)
        metrics = scrape(port)
        resident = int(metrics.get("twinstream_twins", 0.0))
        row.update(
            {
                "rss_end_mb": round(rss_end, 1),
                "rss_peak_mb": round(max(peak, rss_end), 1),
                "resident_twins": resident,
                "resident_twins_peak": max(resident_peak, resident),
                "rss_per_resident_twin_bytes": round((rss_end - row["rss_baseline_mb"]) * 1024 * 1024 / max(resident, 1)),
                "dead_letters": int(sum(v for k, v in metrics.items() if k.startswith("twinstream_dead_letters_total"))),
                "checkpoints": checkpoint_stats(metrics),
            }
        )
    finally:
        stop_process(worker, timeout_s=60)
    changelog = asyncio.run(read_changelog(broker.bootstrap_servers, f"{app_id}-twins-changelog", PARTITIONS))
    count = row["checkpoints"]["count"]
    changelog["bytes_per_checkpoint"] = round(changelog["bytes"] / count) if count else None
    changelog["bytes_per_twin_record"] = round(changelog["bytes"] / max(changelog["twin_records"], 1))
    row["changelog"] = changelog
    row["recovery"] = recover(settings, workdir, entities)
    row["build_messages_s"] = round(build_s, 1)
    return row


def recover(settings: Settings, workdir: Path, entities: int) -> dict[str, Any]:
    """A worker with an empty state dir rebuilds the twins from the changelog (recovery_time.py's measurement)."""
    fresh = settings.model_copy(update={"data_dir": workdir / f"recover-{entities}", "metrics_port": None})
    log = workdir / f"recover-{entities}.log"
    t0 = time.time()
    worker = start_worker(fresh, log)
    try:
        assigned = wait_for_line(log, "rebalance: assigned partitions", 180, process=worker)
        done = wait_for_line(log, "rebalance complete", 3600, process=worker)
    finally:
        stop_process(worker, timeout_s=60)
    recovered = count_recovered(fresh.data_dir)
    return {
        "recovery_s": round(line_time(done) - line_time(assigned), 2),
        "start_to_serving_s": round(line_time(done) - t0, 2),
        "recovered_twins": recovered,
        "ok": recovered == entities,
    }


def extrapolate(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, Any] | None:
    """RSS at sizes that did not run, from a straight line through the measured (twins, RSS) points.

    >>> fit = extrapolate([{"resident_twins": 100, "rss_end_mb": 300.0}, {"resident_twins": 200, "rss_end_mb": 500.0}], [1000])
    >>> fit["mb_per_1k_twins"], fit["rss_mb"]
    (2000.0, {'1000': 2100.0})
    """
    points = [(r["resident_twins"], r["rss_end_mb"]) for r in rows if r.get("resident_twins")]
    if not points or not sizes:
        return None
    if len(points) == 1:
        x0, y0 = points[0]
        slope = (y0 - rows[0]["rss_baseline_mb"]) / x0
    else:
        n = len(points)
        mx = sum(x for x, _ in points) / n
        my = sum(y for _, y in points) / n
        slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
        x0, y0 = mx, my
    return {
        "method": "linear fit of rss_end_mb over resident_twins (EXTRAPOLATED, not measured)",
        "from_sizes": [x for x, _ in points],
        "mb_per_1k_twins": round(slope * 1000, 2),
        "rss_mb": {str(size): round(y0 + slope * (size - x0), 1) for size in sizes},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entities", default="100000,1000000", help="comma-separated fleet sizes (default 100000,1000000)")
    p.add_argument("--events", type=int, default=2, help="events per entity, in rounds (default 2)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="worker setting, e.g. TWINSTREAM_GAP_DETECTION=false")
    p.add_argument(
        "--memory-share",
        type=float,
        default=0.6,
        help="skip a size whose estimated worker RSS exceeds this share of the available memory (default 0.6)",
    )
    p.add_argument("--timeout", type=float, default=2400.0, help="seconds a size may take to be applied (default 2400)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds between the last checkpoint and the RSS reading")
    p.add_argument(
        "--broker-storage", default="memory://",
        help="embedded broker storage: memory:// (default) or dir (a directory in the run's temporary folder). "
        "dir keeps the changelog out of memory but is slow at this scale: its object store lists a partition's "
        "batches on every fetch",
    )
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        os.environ[key] = value
    quiet_library_loggers()
    sizes = [int(x) for x in args.entities.split(",") if x]
    base_settings = Settings(broker="kafka://127.0.0.1:1", partitions=PARTITIONS)
    heap = twin_heap_bytes(base_settings, make_messages(2000 * args.events, 2000, seed=args.seed), 2000, steps=args.events)
    evict = {k: v for k, v in base_settings.model_dump().items() if "evict" in k}
    evicting = base_settings.twin_idle_evict_s > 0
    result: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "git_commit": git_commit(),
        "env": args.env,
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "config": {
            "learner": base_settings.learner,
            "twins_spec": base_settings.twins_spec,
            "gap_detection": base_settings.gap_detection,
            "checkpoint_interval_s": base_settings.checkpoint_interval_s,
            "eviction_settings": evict or "none in this version",
            "partitions": PARTITIONS,
            "broker_storage": args.broker_storage,
        },
        "heap_per_twin_bytes_tracemalloc": round(heap),
        "sizes": [],
        "skipped": [],
    }
    print(f"Python heap per twin after {args.events} events (tracemalloc): {heap:,.0f} B", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    try:
        storage = str(workdir / "broker") if args.broker_storage == "dir" else args.broker_storage
        with EmbeddedBroker(log_path=workdir / "broker.log", storage=storage) as broker:
            for size in sizes:
                estimate_mb = 300.0 + heap * size / 1024 / 1024 * 1.3
                limit_mb = args.memory_share * available_mb()
                if estimate_mb > limit_mb and not evicting:  # with eviction the watchdog in run_size guards instead
                    why = (
                        f"estimated worker RSS {estimate_mb:,.0f} MB (heap per twin x 1.3 + 300 MB) exceeds "
                        f"{args.memory_share:.0%} of the available memory ({limit_mb:,.0f} MB)"
                    )
                    print(f"{size:,} entities: skipped, {why}", flush=True)
                    result["skipped"].append({"entities": size, "reason": why})
                    continue
                try:
                    row = run_size(broker, workdir, size, args, rss_limit_mb=limit_mb)
                except MemoryLimit as exc:
                    print(f"{size:,} entities: stopped, {exc}", flush=True)
                    result["skipped"].append({"entities": size, "reason": str(exc)})
                    continue
                row["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
                result["sizes"].append(row)
                print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result["extrapolation"] = extrapolate(result["sizes"], [s["entities"] for s in result["skipped"]])
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["sizes"] and all(r["recovery"]["ok"] for r in result["sizes"]) else 1


if __name__ == "__main__":
    sys.exit(main())
