"""``twinstream demo``: the whole spine in one command, on a fresh machine.

Starts the embedded broker (unless a broker is given), creates the topics, starts a
worker process and the synthetic-data sidecar (and the InfluxDB sink when an InfluxDB
URL is given), replays C-MAPSS FD001, waits until every event is accounted for on the
output topics, and reports.

Gap filling on show (``DemoOptions.gaps``, on by default; ``--no-gaps``): in the replay
one sensor of one training engine is null for a stretch of cycles mid-life. The
worker's gap detector publishes the gap, the sidecar publishes synthetic fills for it,
and the twin predicts with them (``synthetic_share`` > 0). That engine's cycles after
the gap's first one are held back until the worker has taken in the sidecar's first
fill (see ``run_demo``). The demo reads the gaps, fills and predictions back and checks, against
what it sent, that no fill names a measured value and no prediction has more synthetic
input than the values that were missing.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from twinstream.broker import EmbeddedBroker, free_port
from twinstream.connectors.cmapss_replay import ReplayEvent, cmapss_events, test_last_cycles
from twinstream.connectors.producer import send_all
from twinstream.datasets.cmapss import load_subset
from twinstream.demo_gaps import (
    GapPlan,
    drop_sensor,
    hold_back,
    read_gap_outputs,
    sidecar_group,
    wait_for_commit,
    wait_for_fill,
)
from twinstream.kafka_security import client_options
from twinstream.monitor import OutputTally, tally_outputs
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import PREDICTIONS, SYNTHETIC, TELEMETRY, TELEMETRY_DLQ
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics

RUL_CAP = 125


@dataclass(frozen=True)
class DemoOptions:
    subset: str = "FD001"
    rate: float = 0.0
    timeout_s: float = 600.0
    report_dir: Path = Path("twinstream-report")
    plot_engines: int = 4
    # Gap filling on show: ``gap_sensor`` of the first training engine is null for
    # ``gap_seqs`` (first, last: cycles 61..140 of its 192), filled by the sidecar.
    gaps: bool = True
    gap_sensor: str = "s11"
    gap_seqs: tuple[int, int] = (60, 139)
    fill_wait_s: float = 60.0  # wait at most this long for the first fill, and again for the rest of them
    keep_running: bool = False  # after the summary, keep broker, worker and inspector up until Ctrl-C


def start_process(module: str, settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    return subprocess.Popen([sys.executable, "-m", module], env=settings_env(settings), stdout=log_file, stderr=log_file)


def score(tally: OutputTally, events: list[ReplayEvent], subset: str) -> tuple[float, dict[str, tuple[float, float]]]:
    """RMSE of the RUL predicted at each test engine's last cycle, and per-engine (pred, true)."""
    fd = load_subset(subset)
    per_engine: dict[str, tuple[float, float]] = {}
    for entity, last_seq in test_last_cycles(events).items():
        unit = int(entity.rsplit("-", 1)[1])
        seq, value = tally.last_value.get(entity, (-1, math.nan))
        if seq == last_seq:
            per_engine[entity] = (value, float(fd.test_rul[unit]))
    if not per_engine:
        return math.nan, per_engine
    mse = sum((pred - true) ** 2 for pred, true in per_engine.values()) / len(per_engine)
    return math.sqrt(mse), per_engine


def plot_report(tally: OutputTally, events: list[ReplayEvent], subset: str, path: Path) -> Path:
    """PNG of predicted vs true RUL over the cycles of a few test engines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fd = load_subset(subset)
    last = test_last_cycles(events)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for entity, points in sorted(tally.history.items()):
        points.sort()
        unit = int(entity.rsplit("-", 1)[1])
        cycles = [seq + 1 for seq, _ in points]
        # The twins predict RUL capped at 125 cycles (the usual C-MAPSS target, and the
        # bundled prior's); the dashed line is the truth under the same cap.
        true = [min(RUL_CAP, fd.test_rul[unit] + last[entity] - seq) for seq, _ in points]
        line = ax.plot(cycles, [value for _, value in points], label=f"{entity} predicted")[0]
        ax.plot(cycles, true, linestyle="--", color=line.get_color(), alpha=0.7, label=f"{entity} true (capped)")
    ax.set_xlabel("cycle")
    ax.set_ylabel("remaining useful life (cycles)")
    ax.set_title(f"twinstream demo: predicted vs true RUL, {subset} test engines")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run_demo(settings: Settings, options: DemoOptions, console: Console,
             on_summary: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the demo end to end and return the summary (keys as in ``--summary-json``).

    ``on_summary`` gets the summary while everything still runs (with ``keep_running``,
    the processes then stay up until Ctrl-C).
    """
    broker: EmbeddedBroker | None = None
    worker = sidecar = sink = None
    run_id = uuid.uuid4().hex[:8]
    report_dir = options.report_dir
    try:
        if settings.broker is None:
            broker = EmbeddedBroker(log_path=report_dir / "logs" / "broker.log", storage=settings.broker_storage).start()
            console.print(f"embedded broker on {broker.url} (storage {settings.broker_storage})")
            settings = settings.model_copy(update={"broker": broker.url})
        # A fresh app id and state dir per run: consumer groups are never reused.
        settings = settings.model_copy(update={
            "app_id": f"{settings.app_id}-demo-{run_id}",
            "data_dir": report_dir / "state",
            "api_port": settings.api_port or free_port(settings.api_addr),
        })
        inspector_url = f"http://{settings.api_addr}:{settings.api_port}/"
        console.print(f"twin inspector (live): {inspector_url}")
        security = client_options(settings)
        ensure_topics(settings)
        namespace = settings.topic_namespace
        worker = start_process("twinstream.streams.worker", settings, report_dir / "logs" / "worker.log")
        # The sidecar: same settings, its own consumer group ({app_id}-sidecar), as in production.
        sidecar = start_process("twinstream.streams.sidecar", settings, report_dir / "logs" / "sidecar.log")
        if settings.influx_url:
            sink = start_process("twinstream.streams.influx_sink", settings, report_dir / "logs" / "sink.log")
        events = cmapss_events(options.subset)
        plan: GapPlan | None = None
        held: list[ReplayEvent] = []
        if options.gaps:
            first_train = next(e.entity_id for e in events if e.split == "train")
            events, plan = drop_sensor(events, first_train, options.gap_sensor, *options.gap_seqs)
            console.print(f"gap: {plan.entity_id} sends {plan.sensor} as null for seqs {plan.seqs[0]}..{plan.seqs[-1]} "
                          f"({len(plan.seqs)} samples); the sidecar fills it")
        plot_entities = sorted(test_last_cycles(events))[: options.plot_engines]
        telemetry_topic = TELEMETRY.in_namespace(namespace).name
        predictions_topic = PREDICTIONS.in_namespace(namespace).name
        dlq_topic = TELEMETRY_DLQ.in_namespace(namespace).name
        # With a gap, the gapped engine's cycles after the gap's first one are held back
        # until the worker has taken in the sidecar's first fill (its group committed past
        # the fill: nothing orders the fills topic against telemetry). In a live fleet cycles are far
        # apart and the fill lands while the sensor is still missing; in this replay the
        # worker would pass the whole gap before the sidecar (which fills only samples it
        # has seen, after the worker reported the gap) computed a single fill.
        sending, held = hold_back(events, plan) if plan else (events, [])
        telemetry_ends: dict[int, int] = {}
        started = time.monotonic()
        sent = asyncio.run(send_all(settings.broker_servers, telemetry_topic, sending, rate=options.rate,
                                    description=f"replay {options.subset}", next_offsets=telemetry_ends, security=security))
        expected = sent + len(held)
        main_done: list[tuple[float, int]] = []  # (when, events processed) once the main replay's outputs are in

        def progress_of(t: OutputTally) -> None:
            progress.update(task, completed=t.processed)
            if not main_done and t.processed >= sent:
                main_done.append((t.last_at or time.monotonic(), t.processed))

        async def send_held() -> int:
            """The held-back cycles, once the worker has taken in the sidecar's first fill of the gap."""
            if plan is None:
                return 0
            fill = await wait_for_fill(settings.broker_servers, SYNTHETIC.in_namespace(namespace).name,
                                       plan.entity_id, timeout_s=options.fill_wait_s, security=security)
            if fill is None:
                console.print(f"[yellow]no fill for {plan.entity_id} after {options.fill_wait_s:.0f} s; "
                              "sending its remaining cycles anyway[/yellow]")
            elif not await wait_for_commit(settings.broker_servers, settings.app_id, fill,
                                           timeout_s=options.fill_wait_s, security=security):
                console.print(f"[yellow]the worker has not taken in the fill for {plan.entity_id} after "
                              f"{options.fill_wait_s:.0f} s; sending its remaining cycles anyway[/yellow]")
            offsets: dict[int, int] = {}
            count = await send_all(settings.broker_servers, telemetry_topic, held, rate=options.rate,
                                   show_progress=False, next_offsets=offsets, security=security)
            for partition, offset in offsets.items():
                telemetry_ends[partition] = max(telemetry_ends.get(partition, 0), offset)
            return count

        async def replay_rest_and_tally() -> OutputTally:
            sender = asyncio.create_task(send_held())
            tally_task = asyncio.create_task(tally_outputs(
                settings.broker_servers, predictions_topic, dlq_topic, expected,
                timeout_s=options.timeout_s,
                keep_history=lambda entity: entity in plot_entities,
                on_progress=progress_of,
                security=security,
            ))
            try:
                await sender  # a failed send fails the demo at once, not after the tally's timeout
                return await tally_task
            finally:
                tally_task.cancel()

        with Progress(TextColumn("[bold]processed"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            task = progress.add_task("processed", total=expected)
            tally = asyncio.run(replay_rest_and_tally())
        sent = expected
        # Processing rate from the first output to the last of the main replay: the replay
        # runs far faster than the worker, so this is the worker's rate on a backlog,
        # without the seconds it spends joining its consumer group (reported separately
        # as wall time) or waiting for the sidecar's first fill.
        first = tally.first_at or started
        last, main_processed = main_done[0] if main_done else (tally.last_at or time.monotonic(), tally.processed)
        processing_s = max(last - first, 1e-9)
        gap = asyncio.run(read_gap_outputs(
            settings.broker_servers, namespace, plan, tally.predictions,
            sidecar_group=sidecar_group(settings) if plan else "", telemetry_ends=telemetry_ends,
            wait_s=options.fill_wait_s, security=security,
        ))
        gap_extra_s = time.monotonic() - last if plan else 0.0
        rmse, per_engine = score(tally, events, options.subset)
        plot = plot_report(tally, events, options.subset, report_dir / "rul_predicted_vs_true.png")
        summary = {
            "events_sent": sent,
            "events_processed": tally.processed,
            "predictions": tally.predictions,
            "predictions_published": tally.predictions_raw,
            "dlq": tally.dead_letters,
            "dlq_reasons": tally.dead_letter_reasons,
            "twins": tally.entities,
            "events_per_s": round(main_processed / processing_s, 1),
            "wall_s": round(last - started, 1),
            "rmse": round(rmse, 3),
            "rmse_engines": len(per_engine),
            "learner": settings.learner,
            "report_png": str(plot),
            "gap_entity": plan.entity_id if plan else None,
            "gap_sensor": plan.sensor if plan else None,
            "gap_samples": len(plan.seqs) if plan else 0,
            "gaps_detected": len(gap.gaps),
            "fills_published": gap.fills_published,
            "gap_samples_filled": len(gap.filled),
            "predictions_with_fills": len(gap.synthetic_seqs),
            "max_synthetic_share": round(gap.max_share, 4),
            "gap_extra_s": round(gap_extra_s, 1),  # after the main replay: first fill, held-back cycles, the other fills
            "measured_overwritten": len(gap.violations),
            "measured_overwritten_examples": gap.violations[:5],
            "inspector_url": inspector_url,
        }
        if on_summary is not None:
            on_summary(summary)
        if options.keep_running:
            console.print(f"still serving: inspector {inspector_url}, broker {settings.broker}; Ctrl-C stops everything")
            try:
                while worker.poll() is None:
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass
        return summary
    finally:
        # SIGTERM, wait, SIGKILL after 15 s (stop_process) for each child, concurrently:
        # they are independent (own consumer groups), so shutdown takes the slowest, not the sum.
        children = [child for child in (sink, sidecar, worker) if child is not None]
        if children:
            with ThreadPoolExecutor(max_workers=len(children)) as pool:
                list(pool.map(stop_process, children))
        if broker is not None:
            broker.stop()


def print_summary(summary: dict[str, Any], console: Console) -> None:
    table = Table(title="twinstream demo")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("events_sent", "events_processed", "predictions", "dlq", "twins", "events_per_s", "wall_s", "rmse", "report_png"):
        table.add_row(key, str(summary[key]))
    console.print(table)
    console.print(f"RUL error (RMSE) at the last cycle of {summary['rmse_engines']} test engines: {summary['rmse']}")
    if summary.get("gap_entity"):
        gaps = Table(title=f"gap filling: {summary['gap_entity']} without {summary['gap_sensor']} "
                           f"for {summary['gap_samples']} samples")
        gaps.add_column("metric")
        gaps.add_column("value", justify="right")
        for key in ("gaps_detected", "fills_published", "gap_samples_filled", "predictions_with_fills",
                    "max_synthetic_share", "measured_overwritten"):
            gaps.add_row(key, str(summary[key]))
        console.print(gaps)
        if summary["measured_overwritten"]:
            console.print("[red]measured values overwritten:[/red] " + "; ".join(summary["measured_overwritten_examples"]))
        else:
            console.print("no measured value overwritten: every fill is for a sample whose value was sent as null, "
                          "and no prediction has more synthetic input than the values that were missing")
    else:
        console.print(f"gap filling: no gap in the replay (--no-gaps); gaps detected {summary['gaps_detected']}, "
                      f"fills published {summary['fills_published']}")
