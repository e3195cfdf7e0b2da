"""What the undo journal holds per event waiting for a checkpoint, and what a decoded sample would add.

Why: every applied event stays in the processor's undo journal until its twin's next
checkpoint, and while checkpoints are put off (a slow broker) up to
``PUT_OFF_MAX_EVENTS`` events wait, so the journal's bytes per event are a worker's
memory under load. The worker's own processor on the throughput benchmark's messages,
no broker, traced with ``tracemalloc``:

- ``journal_bytes_per_event``: the heap grown while ``events`` are applied with no
  checkpoint (the journal, plus whatever the twins grow meanwhile);
- ``decoded_sample_bytes``: the heap of one decoded sample (``decode_telemetry``), kept,
  which a journal holding decoded samples would add per event.

    python benchmarks/journal_memory.py --json benchmarks/results/journal_memory/journal.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_messages import make_messages  # noqa: E402  (benchmarks/ is not a package)

from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.processor import Record, TwinProcessor  # noqa: E402
from twinstream.streams.validation import decode_telemetry  # noqa: E402


def heap_growth(work: Callable[[], object]) -> tuple[int, object]:
    """Bytes the heap grew by while ``work`` ran, with what it returned still alive."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = work()
        gc.collect()
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    return grown, kept


def write_result(result: dict, path: Path | None) -> None:
    """Print the result, and write it to ``path`` when one is given."""
    print(json.dumps(result, indent=2))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="messages (default 50000)")
    parser.add_argument("--entities", type=int, default=1_000, help="entities (default 1000)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    messages = make_messages(args.events, args.entities)
    records = [Record(m.key, m.value, "twinstream.telemetry", 0, k) for k, m in enumerate(messages)]
    processor = TwinProcessor(Settings(), lambda _entity: None)
    first = args.entities  # one event per entity: every twin exists, then a checkpoint
    processor.process(records[:first])
    processor.take_dirty()

    def apply_rest() -> None:
        for start in range(first, len(records), 1000):
            processor.process(records[start:start + 1000])

    journal_grown, _ = heap_growth(apply_rest)
    waiting = sum(len(items) for items in processor.journal.records.values())
    now = datetime.now(UTC)
    decoded_grown, decoded = heap_growth(lambda: [decode_telemetry(r.value, r.key, now=now) for r in records[first:]])
    result = {
        "command": "python benchmarks/journal_memory.py" + (f" --json {args.json}" if args.json else ""),
        "events": args.events,
        "entities": args.entities,
        "events_waiting": waiting,
        "journal_bytes_per_event": round(journal_grown / waiting),
        "decoded_sample_bytes": round(decoded_grown / len(decoded)),  # type: ignore[arg-type]
    }
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
