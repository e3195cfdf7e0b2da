"""The undo journal's memory per event waiting for a checkpoint.

Every applied event stays in the journal until its twin's next checkpoint, and under a
slow broker up to ``PUT_OFF_MAX_EVENTS`` of them wait; what the journal holds per event
is then a worker's memory. It holds the record (its raw bytes are held anyway until the
event is acked), not the decoded sample, which was about 2.5 KB an event.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from datetime import UTC, datetime, timedelta

from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SENSORS = [f"s{i}" for i in range(14)]


def records(count: int, entities: int) -> list[Record]:
    out = []
    for k in range(count):
        entity, seq = f"e{k % entities}", k // entities
        value = json.dumps({"entity_id": entity, "event_time": (NOW - timedelta(hours=1) + timedelta(seconds=seq)).isoformat(),
                            "seq": seq, "metrics": {name: 500.0 + i + seq * 0.01 for i, name in enumerate(SENSORS)},
                            "targets": {"rul": 300.0 - seq}}).encode()
        out.append(Record(entity.encode(), value, "twinstream.telemetry", 0, k))
    return out


def test_the_journal_holds_records_not_decoded_samples() -> None:
    processor = TwinProcessor(Settings(twins_spec="none", learner="river-linear"), lambda _entity: None, clock=lambda: NOW)
    batch = records(3000, 50)
    processor.process(batch[:1000])
    processor.take_dirty()  # every twin exists and is checkpointed: what follows is the journal's
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        processor.process(batch[1000:])
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    waiting = sum(len(items) for items in processor.journal.records.values())
    assert waiting == 2000
    assert grown / waiting < 1000, f"{grown / waiting:.0f} bytes per event waiting for a checkpoint"
