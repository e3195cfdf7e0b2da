"""py-spy profile of a worker (arm c): recording it, and summarising its raw stacks."""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench_common import console


def start_py_spy(pid: int, path: Path) -> subprocess.Popen | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(exe).exists():
        console.print("[yellow]py-spy not found (pip install py-spy); no profile[/yellow]")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [exe, "record", "--pid", str(pid), "--rate", "100", "--idle", "--nonblocking", "--format", "raw", "--output", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_py_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait(timeout=10)


# (label, substrings any of which in a main-thread stack counts the sample); inclusive shares
PROFILE_GROUPS = [
    ("idle: event loop waiting in epoll", ("EpollSelector.select",)),
    ("ingest agent (IngestAgent._agent)", ("IngestAgent._agent (",)),
    ("  TwinProcessor.process", ("TwinProcessor.process (",)),
    ("    decode_telemetry (pydantic)", ("decode_telemetry (",)),
    ("    Twin.step (learner)", ("Twin.step (",)),
    ("    encode_prediction (orjson)", ("encode_prediction (",)),
    ("    prometheus metrics", ("prometheus_client/",)),
    ("  _handle minus process (mostly producer.send)", ("IngestAgent._handle (",)),
    ("  checkpoint (IngestAgent._checkpoint)", ("IngestAgent._checkpoint (",)),
    ("    Twin.to_bytes (pickle)", ("Twin.to_bytes (",)),
    ("    table writes", ("Table.__setitem__", "Collection.__setitem__", "rocksdict")),
    ("    stream.ack", ("Stream.ack (",)),
    ("faust Fetcher (records -> stream queue or intake)", ("Fetcher._fetcher (",)),
    ("  batch intake (records -> events)", ("BatchIntake._to_events (",)),
    ("faust conductor on_message", ("on_message (faust/transport/conductor.py",)),
    ("faust stream passive drainer", ("Stream._passive_drainer (",)),
    ("aiokafka producer (all)", ("aiokafka/producer/",)),
    ("asyncio task/future machinery (leaf)", ()),
    ("logging", ("logging/__init__.py",)),
]
_ASYNCIO_LEAF = ("asyncio/",)


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of the worker's main thread (the one running the agents) from py-spy raw stacks.

    Faust runs the aiokafka consumer in a second thread with its own event loop; its busy
    share is reported separately.
    """
    main_total = 0
    other_total = 0
    other_idle = 0
    inclusive: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        if not stack.startswith("_run_module_as_main"):
            if stack.startswith("Thread._bootstrap"):
                other_total += count
                if "EpollSelector.select" in frames[-1]:
                    other_idle += count
            continue  # truncated stacks (nonblocking sampling) are dropped
        main_total += count
        leaf[frames[-1]] += count
        for label, needles in PROFILE_GROUPS:
            if not needles:
                if any(n in frames[-1] for n in _ASYNCIO_LEAF) and "EpollSelector.select" not in frames[-1]:
                    inclusive[label] += count
            elif label.startswith("  _handle minus"):
                if "IngestAgent._handle (" in stack and "TwinProcessor.process (" not in stack:
                    inclusive[label] += count
            elif any(needle in stack for needle in needles):
                inclusive[label] += count
    if main_total == 0:
        return {"samples": 0}
    return {
        "samples": main_total,
        "inclusive_pct": {label: round(100.0 * inclusive[label] / main_total, 1) for label, _ in PROFILE_GROUPS},
        "top_self_pct": [(name, round(100.0 * c / main_total, 1)) for name, c in leaf.most_common(top)],
        "consumer_thread_busy_pct": round(100.0 * (other_total - other_idle) / other_total, 1) if other_total else None,
    }
