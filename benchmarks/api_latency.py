"""Twin API latency while the worker processes the benchmark load, and what the API load costs the worker.

    python benchmarks/api_latency.py                                   # 60k messages, 600 entities, 2 repeats
    python benchmarks/api_latency.py --json benchmarks/results/api_latency.json

One embedded broker; the input (``bench_messages.make_messages``) is produced once and
each arm runs a fresh worker (its own consumer group, so it reads everything from the
start) with the API on:

* ``idle``: nobody calls the API;
* ``load``: from the worker's first applied event to its last, an open-loop client
  sends ``GET /twins/{id}`` for random entities at ``--rate`` requests/s (each request
  is started on schedule whether or not earlier ones returned, so a stalled server
  shows up as latency rather than as fewer requests). A twin whose first event has not
  been applied yet is a 404, which counts like any other reply.

The worker's events/s come from its own ``twinstream_events_applied_total`` (read from
the API's ``/metrics``), over the span from its first applied event to its last. Arms
alternate (idle, load, idle, load, ...) so drift of the machine hits both; the drop is
given per repeat (each load arm against the idle arm before it) and over the means.
Each arm also records the CPU seconds of the worker, of its API process and of this
script (the load generator and the metrics polling), which on two shared cores all
come out of the same budget.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from confluent_kafka import Producer

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_messages import make_messages  # noqa: E402

from twinstream.broker import EmbeddedBroker, free_port  # noqa: E402
from twinstream.processes import settings_env, stop_process  # noqa: E402
from twinstream.schemas.topics import TELEMETRY  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.topic_admin import ensure_topics  # noqa: E402

APPLIED = re.compile(r"^twinstream_events_applied_total (\S+)$", re.M)
CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length: *(\d+)")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def applied(client: httpx.AsyncClient, api: str) -> tuple[float | None, str]:
    """The worker's applied-events counter and its whole metrics text (None while the API does not answer)."""
    try:
        reply = await client.get(f"{api}/metrics", timeout=10)
    except httpx.HTTPError:
        return None, ""
    match = APPLIED.search(reply.text) if reply.status_code == 200 else None
    return (float(match.group(1)) if match else None), reply.text


class KeepAliveClient:
    """A minimal HTTP/1.1 GET client over a pool of keep-alive connections.

    Why not httpx for the load: its per-request cost (about a millisecond of Python) runs
    on the same two cores as the worker and would count as the API's cost.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def get(self, path: str) -> str:
        """The status code of ``GET path``, or the exception's name.

        A pooled connection the server closed while idle (uvicorn's keep-alive timeout)
        fails before any byte of the reply; the request is then sent once more on a new
        connection, as HTTP clients do for idempotent requests (the retry counts in its latency).
        """
        for attempt in (0, 1):
            conn = self.idle.pop() if self.idle and attempt == 0 else None
            reused = conn is not None
            try:
                if conn is None:
                    conn = await asyncio.open_connection(self.host, self.port)
                reader, writer = conn
                writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), self.host.encode()))
                head = await reader.readuntil(b"\r\n\r\n")
                length = CONTENT_LENGTH.search(head)
                await reader.readexactly(int(length.group(1)) if length else 0)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                if conn is not None:
                    conn[1].close()
                stale = reused and isinstance(exc, (asyncio.IncompleteReadError, ConnectionResetError))
                if stale and attempt == 0 and not getattr(exc, "partial", b""):
                    continue
                return type(exc).__name__
            self.idle.append(conn)
            return head[9:12].decode()
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def children(pid: int) -> list[int]:
    """Child process ids (the worker's API process)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_share_within(metrics_text: str, seconds: float) -> float | None:
    """Share of ``GET /twins/{entity_id}`` requests the API answered within ``seconds`` (its own histogram)."""
    route = 'route="/twins/{entity_id}"'
    buckets = {}
    for line in metrics_text.splitlines():
        if line.startswith("twinstream_api_request_seconds_bucket") and route in line:
            le = re.search(r'le="([^"]+)"', line).group(1)
            buckets[float(le)] = float(line.rsplit(" ", 1)[1])
    total = buckets.get(float("inf"))
    return buckets.get(seconds, 0.0) / total if total else None


async def run_arm(base: Settings, arm: str, n: int, entities: list[str], rate: float, workdir: Path, timeout_s: float) -> dict:
    port = free_port()
    app_id = f"apibench-{arm}-{uuid.uuid4().hex[:6]}"
    settings = base.model_copy(update={"app_id": app_id, "api_port": port, "data_dir": workdir / app_id})
    log = (workdir / f"{app_id}.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "twinstream.streams.worker"],
        env=settings_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    ok_latencies: list[float] = []
    statuses: dict[str, int] = {}
    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    loadgen = KeepAliveClient("127.0.0.1", port)
    metrics_text = ""
    cpu_bench_start = time.process_time()
    async with httpx.AsyncClient(timeout=10) as client:

        async def one(entity: str) -> None:
            started = time.perf_counter()
            status = await loadgen.get(f"/twins/{entity}")
            elapsed = (time.perf_counter() - started) * 1000.0
            latencies.append(elapsed)
            if status == "200":
                ok_latencies.append(elapsed)
            statuses[status] = statuses.get(status, 0) + 1

        async def load() -> None:
            tasks: set[asyncio.Task] = set()
            interval = 1.0 / rate
            next_at = time.perf_counter()
            while not stop.is_set():
                next_at += interval
                task = asyncio.create_task(one(random.choice(entities)))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            await asyncio.gather(*tasks)

        try:
            deadline = time.monotonic() + timeout_s
            loader = None
            while True:
                value, metrics_text = await applied(client, api)
                if value is not None:
                    samples.append((time.monotonic(), value))
                    if value > 0 and loader is None and arm == "load":  # the load spans the measured events
                        loader = asyncio.create_task(load())
                    if value >= n:
                        break
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"arm {arm}: {samples[-1][1] if samples else 0} of {n} events applied (see {log.name})")
                await asyncio.sleep(0.5 if samples else 0.2)
            stop.set()
            if loader is not None:
                await loader
            await asyncio.sleep(0.6)  # the API reports its request metrics to the worker every 0.25 s
            _, metrics_text = await applied(client, api)
            cpu_api = sum(cpu_seconds(pid) for pid in children(worker.pid))
            cpu_worker = cpu_seconds(worker.pid)
            cpu_bench = time.process_time() - cpu_bench_start
        finally:
            stop.set()
            loadgen.close()
            stop_process(worker, timeout_s=30)
            log.close()
    first = next(t for t, v in samples if v > 0)
    before = max((t for t, v in samples if v == 0), default=first)
    span = samples[-1][0] - (before + first) / 2
    return {
        "arm": arm,
        "events": n,
        "events_per_s": n / span if span > 0 else None,
        "span_s": span,
        "requests": len(latencies),
        "statuses": statuses,
        "latency_ms": {
            "p50": percentile(latencies, 0.50),
            "p90": percentile(latencies, 0.90),
            "p99": percentile(latencies, 0.99),
            "max": max(latencies) if latencies else None,
        },
        "latency_ms_200": {"p50": percentile(ok_latencies, 0.50), "p99": percentile(ok_latencies, 0.99)},
        "server_share_within_20ms": server_share_within(metrics_text, 0.02),
        "cpu_s": {"worker": cpu_worker, "api_process": cpu_api, "benchmark_client": cpu_bench},
        "achieved_rate": len(latencies) / span if latencies and span > 0 else 0.0,
    }


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _change(drop: float) -> str:
    return f"{100 * drop:.1f}% fewer" if drop >= 0 else f"{-100 * drop:.1f}% more"


def render_markdown(summary: dict) -> str:
    """The results table and summary lines of docs/operations.md (a unit test checks the page against the JSON)."""
    rows = [
        "| repeat | arm | worker events/s | requests (per s) | replies | p50 ms | p99 ms | p99 ms (200s) | max ms "
        "| API answered within 20 ms "
        "| CPU s: worker / API process / load generator |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in summary["arms"]:
        lat, cpu = arm["latency_ms"], arm["cpu_s"]
        replies = ", ".join(f"{count} × {status}" for status, count in sorted(arm["statuses"].items())) or "–"
        within = arm["server_share_within_20ms"]
        rows.append(
            f"| {arm['repeat']} | {arm['arm']} | {arm['events_per_s']:.0f} | {arm['requests']} ({arm['achieved_rate']:.0f}) "
            f"| {replies} | {_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(arm['latency_ms_200']['p99'])} | {_ms(lat['max'])} "
            f"| {'–' if within is None else f'{100 * within:.2f}%'} "
            f"| {cpu['worker']:.1f} / {cpu['api_process']:.1f} / {cpu['benchmark_client']:.1f} |"
        )

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    arms = summary["arms"]
    per_kevent = {kind: mean([1e6 * a["cpu_s"]["worker"] / a["events"] for a in arms if a["arm"] == kind]) for kind in ("idle", "load")}
    api_idle = mean([a["cpu_s"]["api_process"] for a in arms if a["arm"] == "idle"])
    loaded = [a for a in arms if a["arm"] == "load"]
    api_per_request = mean([1000 * (a["cpu_s"]["api_process"] - api_idle) / a["requests"] for a in loaded])
    client_per_request = mean([1000 * a["cpu_s"]["benchmark_client"] / a["requests"] for a in loaded])
    drops = ", ".join(f"{100 * d:.1f}%" for d in summary["events_per_s_drop_per_repeat"])
    p99s = ", ".join(f"{v:.1f}" for v in summary["latency_p99_ms_per_repeat"])
    rows += [
        "",
        f"Mean events/s: {summary['events_per_s_idle_mean']:.0f} idle, {summary['events_per_s_load_mean']:.0f} under API load "
        f"({_change(summary['events_per_s_drop'])}; drop per repeat {drops}). "
        f"p99 per load arm: {p99s} ms. 1-minute load average at the end: {summary['load_average_1m_at_end']:.1f} "
        f"on {summary['cpus']} cores.",
        "",
        f"Worker CPU per 1,000 events: {per_kevent['idle']:.0f} ms idle, {per_kevent['load']:.0f} ms under API load. "
        f"Per request, the API process used {api_per_request:.2f} ms of CPU more than in the idle arms and the load "
        f"generator {client_per_request:.2f} ms.",
    ]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000)
    parser.add_argument("--entities", type=int, default=600)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="API requests per second in the load arm")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--docs", type=Path, default=None, help="only print the docs table of this result file")
    args = parser.parse_args()
    if args.docs is not None:
        print(render_markdown(json.loads(args.docs.read_text())), end="")
        return

    workdir = Path(tempfile.mkdtemp(prefix="twinstream-apibench-"))
    messages = make_messages(args.messages, args.entities)  # the throughput benchmark's measured telemetry
    entities = sorted({m.key.decode() for m in messages})
    with EmbeddedBroker(log_path=workdir / "tansu.log") as broker:
        base = Settings(
            broker=broker.url, topic_namespace=f"apibench_{uuid.uuid4().hex[:6]}", partitions=args.partitions, log_level="WARNING"
        )
        ensure_topics(base)
        producer = Producer(
            {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": False, "partitioner": "murmur2_random", "linger.ms": 20}
        )
        topic = TELEMETRY.in_namespace(base.topic_namespace).name
        for message in messages:
            while True:
                try:
                    producer.produce(topic, key=message.key, value=message.value)
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(60) == 0
        results = []
        for repeat in range(args.repeat):
            for arm in ("idle", "load"):
                result = asyncio.run(run_arm(base, arm, args.messages, entities, args.rate, workdir, args.timeout))
                result["repeat"] = repeat
                results.append(result)
                lat = result["latency_ms"]
                print(
                    f"r{repeat} {arm:4s}: {result['events_per_s']:8.0f} events/s over {result['span_s']:.1f} s; "
                    f"{result['requests']} requests ({result['achieved_rate']:.0f}/s) {result['statuses']} "
                    f"p50 {lat['p50']} ms p99 {lat['p99']} ms max {lat['max']} ms",
                    flush=True,
                )
    idle = [r["events_per_s"] for r in results if r["arm"] == "idle"]
    loaded = [r["events_per_s"] for r in results if r["arm"] == "load"]
    all_latencies_p99 = [r["latency_ms"]["p99"] for r in results if r["arm"] == "load"]
    drops = [1.0 - load["events_per_s"] / idle_arm["events_per_s"] for idle_arm, load in zip(results[::2], results[1::2])]
    summary = {
        "messages": args.messages,
        "entities": args.entities,
        "partitions": args.partitions,
        "rate": args.rate,
        "repeats": args.repeat,
        "cpus": os.cpu_count(),
        "load_average_1m_at_end": os.getloadavg()[0],
        "events_per_s_idle_mean": sum(idle) / len(idle),
        "events_per_s_load_mean": sum(loaded) / len(loaded),
        "events_per_s_drop": 1.0 - (sum(loaded) / len(loaded)) / (sum(idle) / len(idle)),
        "events_per_s_drop_per_repeat": drops,
        "latency_p99_ms_per_repeat": all_latencies_p99,
        "latency_p99_ms_worst": max(all_latencies_p99),
        "arms": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "arms"}, indent=2))
    print(render_markdown(summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
