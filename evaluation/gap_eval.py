"""How well the gap detector finds injected faults in C-MAPSS test engines (part of ``eval synth``).

Every test engine's telemetry (all 21 sensors, seq = cycle, one sample every 10
minutes) goes through a fresh :class:`~twinstream.models.gaps.GapDetector` once as
recorded, and once per fault kind with one fault injected, for engines of at least
``MIN_CYCLES`` cycles. The fault starts at a seeded cycle ``c`` (at least 30 cycles in,
at least 15 before the end) on a seeded informative sensor:

- ``missing_sensor``: the sensor is null for cycles ``c .. c+9``;
- ``flatline``: the sensor repeats its value of cycle ``c`` from ``c`` on (dead sensor);
- ``missed_samples``: cycles ``c .. c+4`` never arrive.

A fault counts as found when the detector reports a gap of that kind, on that sensor
(none for missed samples), starting at ``c`` (a flat line may start a little earlier,
when the frozen value happened to repeat just before ``c``: the same run). Every other
gap reported is counted as false; the clean runs count false gaps on data as recorded.
The delay is the number of cycles from ``c`` to the report, ``c`` included (for missed
samples the report comes with the first sample after the hole).

>>> r = evaluate_detection(limit_engines=3)
>>> r["clean"]["false_gaps"], sorted(r["faults"])
(0, ['flatline', 'missed_samples', 'missing_sensor'])
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets import cmapss
from twinstream.models.gaps import GapDetector
from twinstream.schemas.gaps import Gap, GapKind

MIN_CYCLES = 60
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CADENCE = timedelta(minutes=10)
KINDS = (GapKind.MISSING_SENSOR, GapKind.FLATLINE, GapKind.MISSED_SAMPLES)


def _run(entity: str, rows: list[cmapss.Cycle], kind: GapKind | None, at: int, sensor: str) -> list[tuple[int, Gap]]:
    """(cycle at which it was reported, gap) for one engine with one fault (or none)."""
    det = GapDetector(entity)
    out = []
    frozen = None
    for r in rows:
        metrics: dict[str, float | None] = dict(r.sensors)
        if kind is GapKind.MISSED_SAMPLES and at <= r.cycle < at + 5:
            continue
        if kind is GapKind.MISSING_SENSOR and at <= r.cycle < at + 10:
            metrics[sensor] = None
        if kind is GapKind.FLATLINE and r.cycle >= at:
            frozen = metrics[sensor] if frozen is None else frozen
            metrics[sensor] = frozen
        out.extend((r.cycle, g) for g in det.observe_one(r.cycle, T0 + r.cycle * CADENCE, metrics, detected_at=T0))
    return out


def evaluate_detection(subset: str = "FD001", data_dir: Path | None = None, seed: int = 0,
                       limit_engines: int | None = None) -> dict[str, Any]:
    """Found, missed and false gaps per fault kind, and false gaps on the data as recorded."""
    fd = cmapss.load_subset(subset, data_dir)
    engines: dict[int, list[cmapss.Cycle]] = {}
    for r in sorted(fd.test, key=lambda r: (r.unit, r.cycle)):
        if limit_engines is None or r.unit <= limit_engines:
            engines.setdefault(r.unit, []).append(r)
    rng = np.random.default_rng([seed, 2])
    clean_false = 0
    samples = 0
    faults: dict[str, dict[str, Any]] = {k.value: {"injected": 0, "found": 0, "false_gaps": 0, "delays": []} for k in KINDS}
    for unit, rows in engines.items():
        samples += len(rows)
        clean_false += sum(1 for _, g in _run(f"test-{unit}", rows, None, 0, "") if g.open or g.kind is GapKind.MISSED_SAMPLES)
        if len(rows) < MIN_CYCLES:
            continue
        for kind in KINDS:
            at = int(rng.integers(30, len(rows) - 15))
            sensor = str(rng.choice(cmapss.INFORMATIVE_SENSORS))
            stats = faults[kind.value]
            stats["injected"] += 1
            found = False
            for cycle, g in _run(f"test-{unit}", rows, kind, at, sensor):
                if not (g.open or g.kind is GapKind.MISSED_SAMPLES):
                    continue  # the closing message of a gap already counted
                want = [] if kind is GapKind.MISSED_SAMPLES else [sensor]
                starts = g.first_seq == at or (  # a flat line may start earlier if the value repeated naturally
                    kind is GapKind.FLATLINE and g.first_seq is not None and g.last_seq is not None and g.first_seq <= at <= g.last_seq)
                if not found and g.kind is kind and g.sensors == want and starts:
                    found = True
                    stats["delays"].append(cycle - at + 1)
                else:
                    stats["false_gaps"] += 1
            stats["found"] += found
    for stats in faults.values():
        delays = stats.pop("delays")
        stats["recall"] = stats["found"] / stats["injected"] if stats["injected"] else None
        stats["delay_median"] = float(np.median(delays)) if delays else None
        stats["delay_max"] = int(max(delays)) if delays else None
    return {
        "data": f"C-MAPSS {subset} test engines, all 21 sensors",
        "engines": len(engines),
        "samples": samples,
        "seed": seed,
        "rng": f"numpy default_rng([{seed}, 2])",
        "clean": {"false_gaps": clean_false},
        "faults": faults,
    }
