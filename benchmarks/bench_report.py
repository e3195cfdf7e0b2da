"""The benchmark's results: the summary (the JSON keys), the printed report, the JSON file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

from bench_common import ARM_NAMES, ArmResult, console
from bench_profile import summarize_profile
from rich.table import Table

from twinstream.settings import Settings


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def build_summary(
    args: argparse.Namespace,
    settings: Settings,
    twin_bytes: list[int],
    results: list[ArmResult],
    arms: list[str],
    avg_size: float,
    producer_rate: float,
    heap_per_twin: float,
) -> dict[str, Any]:
    by_arm = {arm: [r.rate for r in results if r.arm == arm] for arm in arms}
    med = {arm: median(rates) for arm, rates in by_arm.items()}
    a, b, c, d = med.get("a"), med.get("b"), med.get("c"), med.get("d")
    r, peer = med.get("r"), med.get("p")
    worker_rss = [x for r in results if r.arm == "c" for x in r.worker_rss_mb]
    worker_rss_start = [x for r in results if r.arm == "c" for x in r.worker_rss_start_mb]
    summary: dict[str, Any] = {
        "timing": "events/s = unique outputs / (last - first output CreateTime); start-up and group joins excluded",
        "config": {
            "messages": args.messages,
            "entities": args.entities,
            "sensors": 14,
            "partitions": args.partitions,
            "repeat": args.repeat,
            "broker": "embedded tansu" if args.broker is None else args.broker,
            "avg_message_bytes": round(avg_size, 1),
            "batch_size": settings.batch_size,
            "learner": settings.learner,
            "env": args.env,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "producer_rate": producer_rate,
        "rates": {"a": a, "b": b, "c": c, "d": d, "r": r, "p": peer, **({"s": med["s"]} if "s" in med else {})},
        "runs": {arm: rates for arm, rates in by_arm.items()},
        "loop_rates": {arm: [r.loop_rate for r in results if r.arm == arm] for arm in ("a", "b")},
        "worker_startup_s": [r.startup_s for r in results if r.startup_s is not None],
        "duplicates": {arm: [r.duplicates for r in results if r.arm == arm] for arm in arms},
        "background_cpu_busy": {arm: [round(r.background_busy or 0.0, 3) for r in results if r.arm == arm] for arm in arms},
        "foreign_cpu_busy": {arm: [round(r.foreign_busy or 0.0, 3) for r in results if r.arm == arm] for arm in arms},
        "ratio": (c / b) if (c and b) else None,
        "ratio_c_a": (c / a) if (c and a) else None,
        "ratio_b_a": (b / a) if (b and a) else None,
        "ratio_d_b": (d / b) if (d and b) else None,
        "ratio_d_c": (d / c) if (d and c) else None,
        # the worker against the Quix Streams peer, both with the River StandardScaler | LinearRegression per entity
        "ratio_c_peer": (r / peer) if (r and peer) else None,
        "ratio_r_c": (r / c) if (r and c) else None,
        "ratio_c_s": (c / med["s"]) if (c and med.get("s")) else None,
        "peer_rss_mb_end": median([x for res in results if res.arm == "p" for x in res.worker_rss_mb]),
        "startup_s": {
            arm: [round(res.startup_s, 2) for res in results if res.arm == arm and res.startup_s is not None]
            for arm in arms
            if arm not in ("a", "b")
        },
        "twin_bytes_avg": statistics.fmean(twin_bytes) if twin_bytes else None,
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
    console.print(
        f"messages {cfg['messages']:,}  entities {cfg['entities']:,}  partitions {cfg['partitions']}  "
        f"repeat {cfg['repeat']}  avg message {cfg['avg_message_bytes']} B  cpus {cfg['cpus']}"
    )
    console.print(f"producer alone (input): {summary['producer_rate']:,.0f} msg/s")
    console.print(
        f"in-loop wall-clock rates a: {[fmt(x) for x in summary['loop_rates']['a']]}  b: {[fmt(x) for x in summary['loop_rates']['b']]}"
    )
    console.print(
        f"[bold]ratio c/a = {fmt(summary['ratio_c_a'], '.3f')}   c/b = {fmt(summary['ratio'], '.3f')}[/bold]"
        f"   b/a = {fmt(summary['ratio_b_a'], '.3f')}"
        + (f"   d/b = {fmt(summary['ratio_d_b'], '.3f')}   d/c = {fmt(summary['ratio_d_c'], '.2f')}" if summary["ratio_d_b"] else "")
    )
    console.print(
        f"memory per twin: Twin.to_bytes() avg {fmt(summary['twin_bytes_avg'])} B; "
        f"Python heap of a cached twin (tracemalloc) {fmt(summary['twin_heap_bytes'])} B"
    )
    console.print(
        f"worker RSS (arm c): {fmt(summary['worker_rss_mb_first_output'], '.0f')} MB at first output, "
        f"{fmt(summary['worker_rss_mb_end'], '.0f')} MB at the end; start-up (excluded) "
        f"{', '.join(f'{x:.1f}' for x in summary['worker_startup_s'])} s"
    )
    for key, when in (("background_cpu_busy", "just before"), ("foreign_cpu_busy", "during")):
        console.print(
            f"share of all CPUs used by other processes {when} each arm: "
            + "  ".join(f"{arm} {', '.join(f'{x:.0%}' for x in v)}" for arm, v in summary[key].items())
        )
    if summary.get("ratio_c_peer") is not None:
        console.print(
            f"[bold]worker with the peer's learner (r) / Quix Streams peer (p) = "
            f"{fmt(summary['ratio_c_peer'], '.2f')}[/bold]   r/c = {fmt(summary['ratio_r_c'], '.2f')}"
        )
    if summary.get("ratio_c_s") is not None:
        console.print(f"[bold]worker through the batch intake (c) / through Faust's stream (s) = {fmt(summary['ratio_c_s'], '.2f')}[/bold]")
    latency = summary.get("latency")
    if latency:
        for run in latency["runs"]:
            console.print(
                f"latency at {run['target_rate']:,.0f} ev/s ({latency['load']:.0%} of c), checkpoint interval "
                f"{run['checkpoint_interval_s']} s: p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, "
                f"max {run['max_ms']} ms ({run['samples']:,} events)"
            )
    if any(any(v) for v in summary["duplicates"].values()):
        console.print(f"[yellow]duplicate outputs per run: {summary['duplicates']}[/yellow]")
    prof = summary.get("profile_c")
    if prof and prof.get("samples"):
        console.print(
            f"py-spy profile of arm c (worker main thread, first output to last, {prof['samples']} samples "
            f"at 100 Hz; inclusive % of wall time; Faust's consumer thread busy "
            f"{fmt(prof['consumer_thread_busy_pct'], '.0f')}%):"
        )
        for label, pct in prof["inclusive_pct"].items():
            console.print(f"  {label:<40} {pct:5.1f}%")
        console.print("  top self time:")
        for name, pct in prof["top_self_pct"]:
            console.print(f"    {pct:5.1f}%  {name}")


def write_json(summary: dict[str, Any], path: str) -> None:
    Path(path).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    console.print(f"wrote {path}")
