#!/usr/bin/env python
"""Ingest latency against the consumer's fetch wait, on the embedded broker.

One paced aiokafka producer (500 records/s, one partition by default, round robin over
``--partitions``) and one aiokafka consumer
per ``fetch_max_wait_ms`` value, one after the other on one embedded broker; latency is
the consumer's receive time minus the send time carried in each record (one clock).
Why it exists: Faust fixes its consumer's wait at 1,500 ms, and the embedded broker
holds a fetch for much of the wait even when records are ready, which set the worker's
latency floor (``fetch_max_wait_ms``, streams/fetch_wait.py).

    python benchmarks/fetch_wait.py --json benchmarks/results/fetch_wait.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from twinstream.broker import EmbeddedBroker


async def measure(servers: str, wait_ms: int, rate: float, seconds: float, partitions: int = 1) -> dict[str, Any]:
    topic = f"fetch-wait-{wait_ms}-{partitions}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers, linger_ms=0)
    await producer.start()
    await producer.send_and_wait(topic, b"start", partition=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=servers, group_id=f"fetch-wait-{wait_ms}",
                                auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)
    await consumer.start()
    await asyncio.sleep(3.0)  # joined and positioned before the first timed record
    latencies: list[float] = []
    count = int(rate * seconds)

    async def paced() -> None:
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            await producer.send(topic, repr(time.time()).encode(), partition=i % partitions)

    sender = asyncio.create_task(paced())
    deadline = time.monotonic() + seconds + 5.0
    while len(latencies) < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=100)
        now = time.time()
        latencies += [(now - float(r.value)) * 1000 for records in batches.values() for r in records if r.value != b"start"]
    await sender
    await consumer.stop()
    await producer.stop()
    q = statistics.quantiles(latencies, n=100)
    return {"fetch_max_wait_ms": wait_ms, "partitions": partitions, "records": len(latencies), "sent": count,
            "p50_ms": round(q[49], 1), "p99_ms": round(q[98], 1), "max_ms": round(max(latencies), 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--waits", default="1500,500,50", help="fetch_max_wait_ms values, in the order run")
    p.add_argument("--rate", type=float, default=500.0, help="records per second")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds of paced records per value")
    p.add_argument("--partitions", type=int, default=1, help="partitions of the topic, written round robin")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    rows = []
    with EmbeddedBroker() as broker:
        for wait in (int(w) for w in args.waits.split(",")):
            row = asyncio.run(measure(broker.bootstrap_servers, wait, args.rate, args.seconds, args.partitions))
            print(f"fetch_max_wait_ms={wait}: p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms ({row['records']} records)", flush=True)
            rows.append(row)
    result = {"command": " ".join(sys.argv), "rate": args.rate, "seconds": args.seconds, "partitions": args.partitions, "runs": rows,
              "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
