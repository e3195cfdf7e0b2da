"""Heap per resident twin in a worker that loaded its twins from the table and checkpointed them.

Why: what a fleet operator asks first is how many twins fit in a worker's memory. A
worker restarted (or rebalanced) loads each twin from the table on the twin's next
event and keeps it resident; the checkpoints then write the changed twins again. What
the worker's processor holds per resident twin after that, beyond the twin itself
(e.g. a copy of its checkpointed bytes), is memory every resident twin costs. The
worker's own processor on the throughput benchmark's messages, no broker, traced with
``tracemalloc``:

1. a first processor applies one event per entity and checkpoints: the table (a dict
   of copies, as RocksDB keeps no Python bytes) holds every twin;
2. a second processor, the restarted worker, applies the next event of every entity,
   each twin loaded from the table, and checkpoints twice (the second finds nothing
   changed, as the next interval of an idle fleet does);
3. ``heap_per_resident_twin_bytes``: the heap the second processor grew by over step 2,
   per twin, the table's new copies left out. ``pickle_bytes``: a twin's table entry.

    python benchmarks/resident_twin_memory.py --json benchmarks/results/journal_base/resident_after.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_messages import make_messages  # noqa: E402  (benchmarks/ is not a package)
from journal_memory import heap_growth, write_result  # noqa: E402

import twinstream  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.processor import Record, TwinProcessor  # noqa: E402


def checkpoint(processor: TwinProcessor, table: dict[str, bytes]) -> None:
    """Write the changed twins as a store does: its own copy of each."""
    for items in processor.take_dirty().values():
        for entity_id, blob in items:
            table[entity_id] = bytes(bytearray(blob))


def code_commit() -> str:
    """The commit of the twinstream package measured (which build ran, for a side-by-side)."""
    root = Path(twinstream.__file__).resolve().parent
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=5_000, help="entities (default 5000)")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    messages = make_messages(2 * args.entities, args.entities)
    records = [Record(m.key, m.value, "twinstream.telemetry", 0, k) for k, m in enumerate(messages)]
    table: dict[str, bytes] = {}
    first = TwinProcessor(Settings(), table.get)
    for start in range(0, args.entities, 1000):
        first.process(records[start:start + 1000])
    checkpoint(first, table)
    del first
    restarted = TwinProcessor(Settings(), table.get)
    restarted.process(records[:1])  # lazily built module state, outside the trace (that twin is left out below)
    table_before = sum(len(blob) for blob in table.values())

    def apply_and_checkpoint() -> None:
        for start in range(args.entities, len(records), 1000):
            restarted.process(records[start:start + 1000])
        checkpoint(restarted, table)
        checkpoint(restarted, table)  # nothing changed since: the snapshot before it is let go

    grown, _ = heap_growth(apply_and_checkpoint)
    table_grown = sum(len(blob) for blob in table.values()) - table_before
    twins = len(restarted.twins) - 1
    result = {
        "command": "python benchmarks/resident_twin_memory.py" + (f" --json {args.json}" if args.json else ""),
        "code": code_commit(),
        "twins": twins,
        "heap_per_resident_twin_bytes": round((grown - table_grown) / twins),
        "pickle_bytes": round(sum(len(blob) for blob in table.values()) / len(table)),
    }
    write_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
