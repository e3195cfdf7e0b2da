"""The undo journal's memory: per event waiting for a checkpoint, and per idle twin.

Every applied event stays in the journal until its twin's next checkpoint, and under a
slow broker up to ``PUT_OFF_MAX_EVENTS`` of them wait; what the journal holds per event
is then a worker's memory. It holds the record (its raw bytes are held anyway until the
event is acked), not the decoded sample, which was about 2.5 KB an event. And it keeps
no copy of a checkpointed twin's bytes (they are in the table): a copy per resident twin
was a pickle's size for every twin in memory, most of them idle in a large fleet.
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


def write_copies(dirty: dict[int, list[tuple[str, bytes]]], table: dict[str, bytes]) -> None:
    """Write a checkpoint's twins as a store does: its own copy of each (RocksDB keeps no Python bytes)."""
    for items in dirty.values():
        table.update((entity, bytes(bytearray(blob))) for entity, blob in items)


def test_a_checkpointed_twin_costs_the_journal_nothing() -> None:
    """Heap a checkpoint leaves behind per twin, beyond the table's own copies: a fraction of a pickle, not a copy."""
    table: dict[str, bytes] = {}
    processor = TwinProcessor(Settings(twins_spec="none", learner="river-linear"), table.get, clock=lambda: NOW)
    twins = 400
    processor.process(records(3 * twins, twins))
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        write_copies(processor.take_dirty(), table)
        assert processor.take_dirty() == {}  # nothing changed since: the next checkpoint lets the snapshot go
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    pickle_bytes = sum(len(blob) for blob in table.values()) / twins
    beyond_table = grown / twins - pickle_bytes - 120  # the table's dict entry and bytes header
    # What remains is mostly the attribute dicts pickling made CPython materialize (about 600 B a twin).
    assert beyond_table < 0.25 * pickle_bytes, f"{beyond_table:.0f} bytes per twin beyond the table's copy ({pickle_bytes:.0f} B pickles)"
