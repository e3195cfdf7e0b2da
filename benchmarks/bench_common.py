"""Shared by the throughput benchmark's modules: the console, the arm names, an arm's result."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

console = Console(stderr=False)

ARM_NAMES = {
    "a": "bare aiokafka loop (orjson, no learning)",
    "b": "bare loop + TwinProcessor (twins learn)",
    "c": "twinstream worker, 1 process",
    "d": "twinstream worker, 2 processes",
    "r": "twinstream worker, 1 process, river-linear (the peer's learner)",
    "p": "Quix Streams app, River model per entity in its state (peer)",
    "s": "twinstream worker, 1 process, input through Faust's per-record stream",
}

# Arm r: the worker configured like the peer (arm p): every entity a twin of the River
# StandardScaler | LinearRegression learner (no declared kinds, so no fleet prior), no gap detector.
PEER_WORKER_ENV = {
    "TWINSTREAM_LEARNER": "river-linear",
    "TWINSTREAM_TWINS_SPEC": "none",
    "TWINSTREAM_GAP_DETECTION": "false",
}

# Arm s: the worker of arm c with its input through Faust's own stream and take buffer
# instead of the batch intake, for a side-by-side measure of what the intake changes.
STREAM_WORKER_ENV = {"TWINSTREAM_BATCH_INTAKE": "false"}


@dataclass
class ArmResult:
    arm: str
    repeat: int
    rate: float  # unique outputs / (last - first output CreateTime)
    outputs: int  # unique (entity, seq) outputs
    records: int  # output records incl. duplicates
    span_s: float
    loop_rate: float | None = None  # a/b: in-loop wall clock, first send -> all acked
    startup_s: float | None = None  # worker arms: process start -> first output
    dead_letters: int = 0
    background_busy: float | None = None  # CPU share used by other processes just before the arm
    foreign_busy: float | None = None  # CPU share used by other processes during the arm
    worker_rss_mb: list[float] = field(default_factory=list)
    worker_rss_start_mb: list[float] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.records - self.outputs


def git_commit() -> str | None:
    """The commit the benchmarked code is at (plus "+dirty" with uncommitted changes), for the result file."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
