"""Replay NASA C-MAPSS as live telemetry: one event per engine cycle, fleet time order.

Why fleet time order: in a real fleet all engines run at once, so the platform sees
cycle 1 of every engine before cycle 2 of any. Engines are interleaved by cycle
(train and test engines together), which is what the twins would see live.

Entity ids are ``<subset>-<split>-<unit>`` (``fd001-train-001``); the sequence number is
the cycle minus one. Training engines ran to failure, so a replay of them is a
*historical* replay whose remaining useful life is known: it is attached as the
``rul`` target when ``labels=True``. Test engines never carry labels.

>>> events = cmapss_events("FD001")
>>> len(events), events[0].entity_id, events[0].seq
(33727, 'fd001-train-001', 0)
>>> sorted({e.entity_id.split("-")[1] for e in events})
['test', 'train']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from twinstream.datasets.cmapss import CmapssSubset, Cycle, load_subset

SOURCE = "cmapss-replay"


@dataclass(frozen=True, slots=True)
class ReplayEvent:
    """One telemetry event ready to send: key, value and what the demo scores with."""

    entity_id: str
    seq: int
    cycle: int
    split: str
    value: bytes

    @property
    def key(self) -> bytes:
        return self.entity_id.encode()


def entity_id(subset: str, split: str, unit: int) -> str:
    return f"{subset.lower()}-{split}-{unit:03d}"


def _telemetry(
    subset: CmapssSubset, split: str, row: Cycle, event_time: datetime, labels: bool
) -> bytes:
    targets = {"rul": float(subset.train_rul_at(row))} if labels and split == "train" else {}
    # A copy of exact size: orjson's bytes keep their larger write buffer (about 4-8 KB for
    # a 500 B message), and a replay holds every event of a subset at once.
    return memoryview(orjson.dumps(
        {
            "entity_id": entity_id(subset.name, split, row.unit),
            "event_time": event_time,
            "seq": row.cycle - 1,
            "metrics": {**row.settings, **row.sensors},
            "targets": targets,
            "source": SOURCE,
            "schema_version": 1,
            "synthetic": False,
        }
    )).tobytes()


def cmapss_events(
    subset_name: str = "FD001",
    *,
    data_dir: Path | None = None,
    labels: bool = True,
    cycle_seconds: float = 1.0,
    end_time: datetime | None = None,
) -> list[ReplayEvent]:
    """All train and test cycles of a subset as telemetry, interleaved by cycle.

    Event times are spaced ``cycle_seconds`` apart per cycle and end at ``end_time``
    (default: now), so no event lies in the future.
    """
    subset = load_subset(subset_name, data_dir)
    rows = [("train", row) for row in subset.train] + [("test", row) for row in subset.test]
    rows.sort(key=lambda item: (item[1].cycle, item[0] == "test", item[1].unit))
    last_cycle = max(row.cycle for _, row in rows)
    end = end_time or datetime.now(UTC)
    start = end - timedelta(seconds=cycle_seconds * last_cycle)
    return [
        ReplayEvent(
            entity_id=entity_id(subset.name, split, row.unit),
            seq=row.cycle - 1,
            cycle=row.cycle,
            split=split,
            value=_telemetry(subset, split, row, start + timedelta(seconds=cycle_seconds * row.cycle), labels),
        )
        for split, row in rows
    ]


def test_last_cycles(events: list[ReplayEvent]) -> dict[str, int]:
    """Last sequence number of every test engine (where the demo scores RUL)."""
    last: dict[str, int] = {}
    for event in events:
        if event.split == "test":
            last[event.entity_id] = max(last.get(event.entity_id, -1), event.seq)
    return last
