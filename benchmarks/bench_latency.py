"""Latency at a fixed load: producer timestamp to prediction timestamp, with a paced producer.

One run = a fresh topic namespace and a fresh worker (configured like arm c, with the
checkpoint interval under test), joined before any input is sent; then an open-loop
producer sends the benchmark's messages at ``rate`` events/s (each on its schedule,
whatever the worker does, so a stalled worker shows as latency), stamping each record's
CreateTime itself. Latency of an event = CreateTime of its prediction (stamped by the
worker's producer when it sends it) minus CreateTime of its input, both from this
machine's clock. The first ``warmup_s`` seconds of input (twins being created, first
checkpoints) are left out of the percentiles.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import numpy as np
from aiokafka import AIOKafkaProducer
from bench_arms import Bench
from bench_common import console
from bench_measure import rss_mb
from bench_messages import make_messages

from twinstream.schemas.topics import topic_catalog
from twinstream.streams.topic_admin import ensure_topics


def percentiles(latencies_ms: list[float]) -> dict[str, float | int | None]:
    """p50, p90, p99 and max (ms) of the latencies, and how many there are.

    >>> percentiles([1.0, 2.0, 3.0, 4.0])["p50_ms"]
    2.5
    >>> percentiles([])["samples"]
    0
    """
    if not latencies_ms:
        return {"samples": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    values = np.asarray(latencies_ms, dtype=float)
    p50, p90, p99 = (round(float(np.percentile(values, q)), 1) for q in (50, 90, 99))
    return {"samples": int(values.size), "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "max_ms": round(float(values.max()), 1)}


async def wait_for_log(log: Any, text: str, timeout_s: float, proc: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"latency worker exited ({proc.returncode}) before {text!r}: {log.read_text(errors='replace')[-2000:]}")
        await asyncio.sleep(0.2)
    raise TimeoutError(f"no {text!r} in {log} after {timeout_s:.0f} s")


async def latency_run(bench: Bench, index: int, rate: float, checkpoint_s: float, seconds: float, warmup_s: float) -> dict[str, Any]:
    """One paced run against a fresh worker; the latency percentiles after the warm-up."""
    args = bench.args
    namespace = f"{bench.namespace}_lat{index}"
    settings = bench.settings.model_copy(update={"topic_namespace": namespace})
    ensure_topics(settings)
    catalog = {spec.name.split(".", 1)[1]: spec.name for spec in topic_catalog(args.partitions, namespace)}
    input_topic, predictions = catalog["telemetry"], catalog["predictions"]
    n = int(rate * (warmup_s + seconds))
    entities = min(args.entities, n)
    messages = make_messages(n, entities, seed=args.seed + 1 + index)
    app_id = f"bench-lat{index}-{bench.run_id}-{uuid.uuid4().hex[:6]}"
    log = bench.workdir / f"{app_id}.log"
    base = await bench.reader.snapshot(predictions)
    proc = bench.start_worker(app_id, 0, log, namespace=namespace, extra_env={"TWINSTREAM_CHECKPOINT_INTERVAL_S": str(checkpoint_s)})
    producer = AIOKafkaProducer(
        bootstrap_servers=bench.servers, acks="all", linger_ms=1, enable_idempotence=False, client_id=f"{app_id}-paced", **bench.security
    )
    sent_ms: list[int] = [0] * n
    try:
        await wait_for_log(log, "rebalance complete", 120, proc)
        await asyncio.sleep(1.0)  # the consumer's first fetch after the assignment
        await asyncio.wait_for(producer.start(), timeout=30)
        behind_max = 0.0
        t0 = time.monotonic()
        i = 0
        while i < n:
            now = time.monotonic()
            due = min(n, int((now - t0) * rate) + 1)
            behind_max = max(behind_max, (due - i) / rate)
            while i < due:
                ms = int(time.time() * 1000)
                await producer.send(input_topic, messages[i].value, key=messages[i].key, timestamp_ms=ms)
                sent_ms[i] = ms
                i += 1
            await asyncio.sleep(0.002)
        sent_rate = n / (time.monotonic() - t0)
        await asyncio.wait_for(producer.flush(), timeout=60)
        stats = None
        deadline = time.monotonic() + max(120.0, 4 * seconds)
        while time.monotonic() < deadline:
            await asyncio.sleep(2.0)
            stats = await bench.reader.read_outputs(predictions, base, keep_times=True)
            if stats.unique >= n:
                break
        rss = rss_mb(proc.pid)
    finally:
        await producer.stop()
        bench.stop_worker(proc)
    if stats is None or stats.unique < n or stats.times is None:
        raise RuntimeError(f"latency run {index}: {0 if stats is None else stats.unique} of {n} predictions")
    cutoff = sent_ms[0] + warmup_s * 1000
    latencies = []
    for k, ms in enumerate(sent_ms):
        if ms >= cutoff:
            latencies.append(stats.times[(f"unit-{k % entities:05d}", k // entities)] - ms)
    result = {
        "checkpoint_interval_s": checkpoint_s,
        "target_rate": round(rate, 1),
        "sent_rate": round(sent_rate, 1),
        "producer_behind_max_s": round(behind_max, 3),
        "messages": n,
        "entities": entities,
        "warmup_s": warmup_s,
        "measured_s": seconds,
        "duplicates": stats.records - stats.unique,
        "worker_rss_mb": round(rss, 1),
        **percentiles(latencies),
    }
    console.print(
        f"latency at {rate:,.0f} ev/s, checkpoint interval {checkpoint_s} s: p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms over {result['samples']:,} events "
        f"(sent at {sent_rate:,.0f} ev/s)"
    )
    return result
