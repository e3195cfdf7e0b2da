#!/usr/bin/env python
"""Throughput of the twin worker against bare aiokafka loops, on one broker, in one run.

Arms (all read the same input topic, produced once, through their own consumer groups):

  a  bare aiokafka loop: getmany -> orjson decode -> encode -> send to an output topic
  b  the same loop plus the twins: each getmany batch goes through the worker's own
     ``TwinProcessor`` (validation, Twin.step with the configured learner, prediction
     encoding); its predictions are sent
  c  the twinstream worker (``python -m twinstream.streams.worker``) as a subprocess
  d  two worker processes with one app id (the input's partitions split between them)
  r  one worker configured like the peer: river-linear twins, no kinds, no gap detector
  p  the peer: a hand-wired Quix Streams app with the same River model per entity in its
     state (bench_quix_app.py); skipped with --no-peer or without quixstreams
  s  one worker configured as c but with its input through Faust's own per-record stream
     (``TWINSTREAM_BATCH_INTAKE=false``); only with --stream-arm

Then the latency of the worker (configured as arm c) at half of arm c's rate, from a paced
producer, at each ``--latency-checkpoint`` interval (bench_latency.py).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# benchmarks/ is not a package: its parts are the sibling modules bench_*.py. Put this
# script's directory on sys.path so they import however the script is started
# (``python benchmarks/throughput.py`` already does; runpy or an import may not).
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_arms import Bench  # noqa: E402
from bench_common import PEER_WORKER_ENV, STREAM_WORKER_ENV, ArmResult, console, git_commit  # noqa: E402
from bench_latency import latency_run  # noqa: E402
from bench_measure import twin_heap_bytes, wait_quiet  # noqa: E402
from bench_messages import make_messages  # noqa: E402
from bench_peer import peer_arm, peer_available  # noqa: E402
from bench_report import build_summary, report, write_json  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from twinstream.broker import EmbeddedBroker  # noqa: E402
from twinstream.schemas.telemetry import Telemetry  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.app import quiet_library_loggers  # noqa: E402
from twinstream.streams.worker import tune_garbage_collector  # noqa: E402


# --------------------------------------------------------------------------- main
@dataclass
class Target:
    """One broker the arms run against; ``label`` names its storage when several are compared."""

    broker_url: str
    workdir: Path
    broker_pids: list[int] = field(default_factory=list)  # their CPU is the broker's, not "other processes"
    label: str = ""


async def run(args: argparse.Namespace, targets: list[Target]) -> list[dict[str, Any]]:
    """Every arm on every target; with several targets the arms alternate between them
    (r0 a on each, then r0 b on each, ...), so a change in the machine's load meanwhile
    hits every target alike. One summary per target, in order."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    arms = ["a", "b", "c"] + (["s"] if args.stream_arm else []) + (["d"] if args.two_workers else [])
    arms += ["r"] if args.peer else []
    peer_version, peer_skipped = peer_available(args.peer_python) if args.peer else (None, "--no-peer")
    if peer_version:
        arms.append("p")
        console.print(f"peer arm p: Quix Streams {peer_version} under {args.peer_python}")
    elif args.peer:
        console.print(f"[yellow]peer arm p skipped: {peer_skipped}[/yellow]")
    with progress:
        benches: list[Bench] = []
        for target in targets:
            bench = Bench(args, target.broker_url, target.workdir, progress, target.broker_pids[0] if target.broker_pids else None)
            bench.own_pids.extend(target.broker_pids[1:])
            console.print(
                f"{target.label + ': ' if target.label else ''}broker {target.broker_url}  namespace "
                f"{bench.namespace}  input {bench.input_topic}  partitions {args.partitions}"
            )
            bench.create_topics()
            benches.append(bench)
        t0 = time.monotonic()
        messages = make_messages(args.messages, args.entities, seed=args.seed)
        avg_size = sum(len(m.value) for m in messages) / len(messages)
        for m in (messages[0], messages[len(messages) // 2], messages[-1]):
            Telemetry.model_validate_json(m.value)
        console.print(
            f"{len(messages):,} messages built in {time.monotonic() - t0:.1f} s "
            f"(avg {avg_size:.0f} B, {args.entities:,} entities, 14 sensors, rul target)"
        )
        producer_rates = [await bench.produce_input(messages) for bench in benches]
        heap_per_twin = twin_heap_bytes(benches[0].settings, messages, args.entities)
        results: list[list[ArmResult]] = [[] for _ in targets]
        for repeat in range(args.repeat):
            for arm in arms:
                for index, (target, bench) in enumerate(zip(targets, benches, strict=True)):
                    name = f"{target.label} " if target.label else ""
                    profile = None
                    if args.profile and repeat == 0 and arm == "c" and index == 0:
                        profile = Path(args.profile)
                    for attempt in range(args.retries + 1):
                        busy = await wait_quiet(args.wait_quiet)
                        if busy > 0.10:
                            progress.console.print(
                                f"[yellow]{name}r{repeat} {arm}: other processes keep {busy:.0%} "
                                "of the CPUs busy; rates will be low[/yellow]"
                            )
                        if arm in ("a", "b"):
                            result = await bench.bare_loop(arm, repeat)
                        elif arm == "p":
                            result = await peer_arm(bench, repeat, args.peer_python)
                        else:
                            extra_env = {"r": PEER_WORKER_ENV, "s": STREAM_WORKER_ENV}.get(arm)
                            result = await bench.worker_arm(arm, repeat, 2 if arm == "d" else 1, profile, extra_env)
                        result.background_busy = busy
                        if (result.foreign_busy or 0.0) <= args.max_foreign or attempt == args.retries:
                            break
                        progress.console.print(
                            f"[yellow]{name}r{repeat} {arm}: {result.rate:,.0f} ev/s discarded, other processes used "
                            f"{result.foreign_busy:.0%} of the CPUs meanwhile (> {args.max_foreign:.0%}); again[/yellow]"
                        )
                    results[index].append(result)
                    progress.console.print(
                        f"{name}r{repeat} {arm}: {result.rate:,.0f} ev/s over {result.span_s:.2f} s"
                        + (f" (in-loop {result.loop_rate:,.0f} ev/s)" if result.loop_rate else "")
                        + (f", start-up {result.startup_s:.1f} s excluded" if result.startup_s is not None else "")
                        + (f", {result.duplicates} duplicate outputs" if result.duplicates else "")
                        + f"; other processes used {result.foreign_busy:.0%} of the CPUs meanwhile"
                    )
        latency = await measure_latency(args, benches[0], results[0])
    summaries = [
        build_summary(args, bench.settings, bench.twin_bytes, arm_results, arms, avg_size, producer_rate, heap_per_twin)
        for bench, arm_results, producer_rate in zip(benches, results, producer_rates, strict=True)
    ]
    summaries[0].update(latency)
    for summary in summaries:
        summary["peer"] = {
            "ran": peer_version is not None,
            "quixstreams": peer_version,
            "skipped": peer_skipped or None,
            "worker_env_arm_r": PEER_WORKER_ENV,
        }
    return summaries


async def measure_latency(args: argparse.Namespace, bench: Bench, results: list[ArmResult]) -> dict[str, Any]:
    """Latency at ``--latency-load`` of arm c's median rate, once per checkpoint interval; keys for the summary."""
    rates = sorted(r.rate for r in results if r.arm == "c")
    if not args.latency or not rates:
        return {"latency": None}
    rate = args.latency_load * rates[len(rates) // 2]
    intervals = args.latency_checkpoint or [bench.settings.checkpoint_interval_s, 5.0]
    runs = []
    for index, interval in enumerate(intervals):
        busy = await wait_quiet(args.wait_quiet)
        run = await latency_run(bench, index, rate, interval, args.latency_seconds, args.latency_warmup)
        run["background_busy"] = round(busy, 3)
        runs.append(run)
    first = runs[0]
    return {
        "latency": {
            "load": args.latency_load,
            "rate_c": rates[len(rates) // 2],
            "runs": runs,
            "timing": "input CreateTime (stamped by the paced producer at send) to the prediction's "
            "CreateTime (stamped by the worker's producer), same clock",
        },
        "latency_p50_ms": first["p50_ms"],
        "latency_p99_ms": first["p99_ms"],
        "latency_checkpoint_interval_s": first["checkpoint_interval_s"],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000, help="telemetry messages (default 200000)")
    p.add_argument("--entities", type=int, default=1_000, help="entities = twins (default 1000)")
    p.add_argument("--partitions", type=int, default=4, help="partitions of every topic (default 4)")
    p.add_argument("--repeat", type=int, default=1, help="run every arm K times; medians are reported")
    p.add_argument("--broker", default=None, help="kafka://host:port; default: start an embedded Tansu broker")
    p.add_argument(
        "--broker-storage",
        action="append",
        default=[],
        metavar="SPEC",
        help="run every arm on an embedded broker with this storage: memory://, dir (a fresh directory "
        "in the temporary folder), a directory path or s3://bucket/. Repeat it to compare "
        "storages side by side in one run (one broker each, one after the other); the JSON then "
        "holds one summary per storage and their rate ratios. Default: one memory broker",
    )
    p.add_argument("--json", default=None, help="write the results as JSON to this path")
    p.add_argument(
        "--two-workers", action=argparse.BooleanOptionalAction, default=True, help="run arm d (two worker processes); default on"
    )
    p.add_argument("--arm-timeout", type=float, default=None, help="seconds an arm may take (default max(300, messages/500))")
    p.add_argument("--profile", default=None, help="record arm c of the first repeat with py-spy (raw folded stacks) to this path")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set an environment variable for the twin code of arm b and the workers, e.g. "
        "TWINSTREAM_LEARNER=river-linear or TWINSTREAM_BATCH_SIZE=2000 (repeatable)",
    )
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each arm, wait up to this long for other processes to leave the CPUs idle",
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=0.25,
        metavar="SHARE",
        help="re-run an arm when other processes used more than this share of all CPUs during it (default 0.25)",
    )
    p.add_argument("--retries", type=int, default=2, help="re-runs per arm for --max-foreign (default 2)")
    p.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run arms r (worker with the peer's learner) and p (Quix Streams peer); default on",
    )
    p.add_argument(
        "--stream-arm",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="also run arm s (worker c with its input through Faust's per-record stream), side by side; default off",
    )
    p.add_argument("--peer-python", default=sys.executable, help="interpreter with quixstreams and river for arm p (default: this one)")
    p.add_argument(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure latency at half of arm c's rate after the arms; default on",
    )
    p.add_argument("--latency-load", type=float, default=0.5, help="latency load as a share of arm c's rate")
    p.add_argument(
        "--latency-checkpoint",
        type=float,
        action="append",
        default=[],
        metavar="SECONDS",
        help="checkpoint interval of a latency run (repeatable; default: the setting's, then 5)",
    )
    p.add_argument("--latency-seconds", type=float, default=20.0, help="measured seconds per latency run")
    p.add_argument("--latency-warmup", type=float, default=5.0, help="seconds of paced input left out first")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (worker logs, data)")
    args = p.parse_args(argv)
    if args.arm_timeout is None:
        args.arm_timeout = max(300.0, args.messages / 500.0)
    if args.messages < args.entities:
        p.error("--messages must be >= --entities")
    if args.broker_storage and args.broker is not None:
        p.error("--broker-storage is for the embedded broker; not with --broker")
    return args


def start_embedded(storages: list[str], workdir: Path) -> tuple[list[EmbeddedBroker], list[Target]]:
    """One embedded broker per storage spec (``dir``: a fresh directory in ``workdir``), all running."""
    brokers: list[EmbeddedBroker] = []
    targets: list[Target] = []
    try:
        for index, storage in enumerate(storages):
            where = workdir / f"storage-{index}"
            where.mkdir(parents=True, exist_ok=True)
            broker = EmbeddedBroker(
                log_path=where / "tansu.log", storage=str(where / "broker-data") if storage == "dir" else storage
            ).start()
            brokers.append(broker)
            pids = [
                p.pid
                for p in (getattr(broker, "_process", None), broker.object_store.process if broker.object_store else None)
                if p is not None
            ]
            targets.append(Target(broker.url, where, pids, storage))
    except BaseException:
        for broker in brokers:
            broker.stop()
        raise
    return brokers, targets


def compare_storages(summaries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document for several storages: each summary, and every arm's rate relative to the first storage's.

    >>> compare_storages({"memory://": {"rates": {"a": 100.0, "c": 50.0}}, "dir": {"rates": {"a": 80.0, "c": None}}})["relative_rates"]
    {'dir': {'a': 0.8, 'c': None}}
    """
    baseline_name, baseline = next(iter(summaries.items()))
    relative = {
        name: {
            arm: (round(rate / baseline["rates"][arm], 3) if rate and baseline["rates"].get(arm) else None)
            for arm, rate in summary["rates"].items()
        }
        for name, summary in list(summaries.items())[1:]
    }
    return {
        "timing": "each storage ran every arm on its own embedded broker, one after the other, in one run",
        "baseline": baseline_name,
        "rates": {name: summary["rates"] for name, summary in summaries.items()},
        "relative_rates": relative,
        "storages": summaries,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for item in args.env:  # before any Settings() is built, so arm b and the workers agree
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        os.environ[key] = value
    quiet_library_loggers()
    tune_garbage_collector(Settings().gc_gen0_threshold)  # as the worker does, so arm b runs its twin code alike
    workdir = Path(tempfile.mkdtemp(prefix="twinstream-bench-"))
    brokers: list[EmbeddedBroker] = []
    try:
        if args.broker_storage:
            brokers, targets = start_embedded(args.broker_storage, workdir)
        elif args.broker is None:
            brokers, targets = start_embedded(["memory://"], workdir)
            targets[0].label = ""
            targets[0].workdir = workdir
        else:
            # an outside broker: its CPU counts as "other processes" if it runs on this machine
            targets = [Target(Settings(broker=args.broker).broker or args.broker, workdir)]
        load_before = os.getloadavg()
        commit = git_commit()
        summaries = asyncio.run(run(args, targets))
        load_after = os.getloadavg()
        for summary in summaries:
            summary["git_commit"] = commit
            summary["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]}
        for target, summary in zip(targets, summaries, strict=True):
            if args.broker_storage:
                summary["config"]["broker_storage"] = target.label
                console.print(f"[bold]broker storage {target.label}[/bold]")
            report(summary)
        if len(summaries) > 1:
            combined = compare_storages({t.label: s for t, s in zip(targets, summaries, strict=True)})
            for name, ratios in combined["relative_rates"].items():
                console.print(
                    f"{name} vs {combined['baseline']}: "
                    + ", ".join(f"{arm} {ratio:.2f}x" for arm, ratio in ratios.items() if ratio is not None)
                )
            output: dict[str, Any] = combined
        else:
            output = summaries[0]
        if args.json:
            write_json(output, args.json)
        return 0
    finally:
        for broker in brokers:
            broker.stop()
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
