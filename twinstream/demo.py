"""``twinstream demo``: the whole spine in one command, on a fresh machine.

Starts the embedded broker (unless a broker is given), creates the topics, starts a
worker process (and the InfluxDB sink when an InfluxDB URL is given), replays C-MAPSS
FD001, waits until every event is accounted for on the output topics, and reports.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from twinstream.broker import EmbeddedBroker
from twinstream.connectors.cmapss_replay import ReplayEvent, cmapss_events, test_last_cycles
from twinstream.connectors.producer import send_all
from twinstream.data.cmapss import load_subset
from twinstream.monitor import OutputTally, tally_outputs
from twinstream.processes import settings_env, stop_process
from twinstream.schemas.topics import PREDICTIONS, TELEMETRY, TELEMETRY_DLQ
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


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> dict[str, Any]:
    """Run the demo end to end and return the summary (keys as in ``--summary-json``)."""
    broker: EmbeddedBroker | None = None
    worker = sink = None
    run_id = uuid.uuid4().hex[:8]
    report_dir = options.report_dir
    try:
        if settings.broker is None:
            broker = EmbeddedBroker(log_path=report_dir / "logs" / "broker.log").start()
            console.print(f"embedded broker on {broker.url}")
            settings = settings.model_copy(update={"broker": broker.url})
        # A fresh app id and state dir per run: consumer groups are never reused.
        settings = settings.model_copy(update={
            "app_id": f"{settings.app_id}-demo-{run_id}",
            "data_dir": report_dir / "state",
        })
        ensure_topics(settings)
        namespace = settings.topic_namespace
        worker = start_process("twinstream.streams.worker", settings, report_dir / "logs" / "worker.log")
        if settings.influx_url:
            sink = start_process("twinstream.streams.influx_sink", settings, report_dir / "logs" / "sink.log")
        events = cmapss_events(options.subset)
        plot_entities = sorted(test_last_cycles(events))[: options.plot_engines]
        started = time.monotonic()
        sent = asyncio.run(send_all(settings.broker_servers, TELEMETRY.in_namespace(namespace).name, events,
                                    rate=options.rate, description=f"replay {options.subset}"))
        with Progress(TextColumn("[bold]processed"), BarColumn(), MofNCompleteColumn(), console=console) as progress:
            task = progress.add_task("processed", total=sent)
            tally = asyncio.run(tally_outputs(
                settings.broker_servers,
                PREDICTIONS.in_namespace(namespace).name,
                TELEMETRY_DLQ.in_namespace(namespace).name,
                sent,
                timeout_s=options.timeout_s,
                keep_history=lambda entity: entity in plot_entities,
                on_progress=lambda t: progress.update(task, completed=t.processed),
            ))
        # Processing rate from the first output to the last: the replay runs far faster
        # than the worker, so this is the worker's rate on a backlog, without the seconds
        # it spends joining its consumer group (reported separately as wall time).
        first, last = tally.first_at or started, tally.last_at or time.monotonic()
        processing_s = max(last - first, 1e-9)
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
            "events_per_s": round(tally.processed / processing_s, 1),
            "wall_s": round(last - started, 1),
            "rmse": round(rmse, 3),
            "rmse_engines": len(per_engine),
            "learner": settings.learner,
            "report_png": str(plot),
        }
        return summary
    finally:
        stop_process(sink)
        stop_process(worker)
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
