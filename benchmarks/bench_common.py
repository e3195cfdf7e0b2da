"""Shared by the throughput benchmark's modules: the console, the arm names, an arm's result."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Console

console = Console(stderr=False)

ARM_NAMES = {
    "a": "bare aiokafka loop (orjson, no learning)",
    "b": "bare loop + TwinProcessor (twins learn)",
    "c": "twinstream worker, 1 process",
    "d": "twinstream worker, 2 processes",
    "r": "twinstream worker, 1 process, river-linear (the peer's learner)",
    "p": "Quix Streams app, River model per entity in its state (peer)",
}

# Arm r: the worker configured like the peer (arm p): every entity a twin of the River
# StandardScaler | LinearRegression learner (no declared kinds, so no fleet prior), no gap detector.
PEER_WORKER_ENV = {
    "TWINSTREAM_LEARNER": "river-linear",
    "TWINSTREAM_TWINS_SPEC": "none",
    "TWINSTREAM_GAP_DETECTION": "false",
}


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
