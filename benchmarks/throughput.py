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
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# benchmarks/ is not a package: its parts are the sibling modules bench_*.py. Put this
# script's directory on sys.path so they import however the script is started
# (``python benchmarks/throughput.py`` already does; runpy or an import may not).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_arms import Bench  # noqa: E402
from bench_common import ArmResult, console  # noqa: E402
from bench_measure import twin_heap_bytes, wait_quiet  # noqa: E402
from bench_messages import make_messages  # noqa: E402
from bench_report import build_summary, report, write_json  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from twinstream.broker import EmbeddedBroker  # noqa: E402
from twinstream.schemas.telemetry import Telemetry  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.app import quiet_library_loggers  # noqa: E402


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
    return build_summary(args, bench.settings, bench.twin_bytes, results, arms, avg_size, producer_rate,
                         heap_per_twin)


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
            write_json(summary, args.json)
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
