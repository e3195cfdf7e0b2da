"""How large is a twin? ``Twin.to_bytes()`` (what the changelog carries per checkpoint) and its parts.

Why a benchmark of its own: a twin's size depends on what it holds (the learner's
personal state, the gap detector's per-sensor state, the fill book) and on the data
(how many metrics a sample has, how long the entity has lived). The worker benchmark,
the learning evaluation and the gap-detection notes each measured a different part on
different data; this script measures all parts on both inputs, in one run, with the
worker's own processor (no broker: sizes do not depend on it):

- ``fd001``: the demo's replay of C-MAPSS FD001 (200 engines, 3 settings + 21 sensors
  per sample, labels at failure only);
- ``throughput``: the worker benchmark's messages (``benchmarks/bench_messages.py``:
  14 sensors, a label on every message), as many as its default run.

Each input runs with the gap detector on (the default) and off.

    python benchmarks/twin_size.py --json benchmarks/results/twin_size.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_messages import make_messages  # noqa: E402  (benchmarks/ is not a package)

from twinstream.connectors.cmapss_replay import cmapss_events  # noqa: E402
from twinstream.settings import Settings  # noqa: E402
from twinstream.streams.processor import Record, TwinProcessor  # noqa: E402


def replay(messages: Iterable[tuple[bytes, bytes]], gap_detection: bool, batch: int = 1000) -> dict[str, float | int]:
    """Run ``messages`` through one processor; sizes of every twin at the end."""
    processor = TwinProcessor(Settings(gap_detection=gap_detection), lambda _key: None)
    pending: list[Record] = []
    events = 0
    for offset, (key, value) in enumerate(messages):
        pending.append(Record(key, value, "twinstream.telemetry", 0, offset))
        if len(pending) >= batch:
            processor.process(pending)
            events += len(pending)
            pending = []
    if pending:
        processor.process(pending)
        events += len(pending)

    def size(obj: object) -> int:
        return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    twins = list(processor.twins.values())
    parts = {
        "to_bytes": [len(t.to_bytes()) for t in twins],
        "learner": [size(t.learner) for t in twins],
        "detector": [size(t.detector) for t in twins],
        "fills": [size(t.fills) for t in twins],
    }
    out: dict[str, float | int] = {"events": events, "twins": len(twins)}
    for name, values in parts.items():
        out[f"{name}_mean"] = round(statistics.fmean(values), 1)
        out[f"{name}_max"] = max(values)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--messages", type=int, default=200_000, help="throughput input: messages (its default run)")
    parser.add_argument("--entities", type=int, default=1_000, help="throughput input: entities")
    args = parser.parse_args()
    started = time.perf_counter()
    fd001 = [(e.key, e.value) for e in cmapss_events("FD001")]
    bench = [(m.key, m.value) for m in make_messages(args.messages, args.entities, synthetic=True)]  # as recorded
    result: dict[str, object] = {
        "command": "python benchmarks/twin_size.py" + (f" --json {args.json}" if args.json else ""),
        "inputs": {
            "fd001": "C-MAPSS FD001 replay (demo): 24 metrics per sample, labels at failure",
            "throughput": f"bench_messages.make_messages({args.messages}, {args.entities}): 14 sensors, a label on every message",
        },
    }
    for name, messages in (("fd001", fd001), ("throughput", bench)):
        for detection in (True, False):
            key = f"{name}_gap_detection_{'on' if detection else 'off'}"
            result[key] = replay(messages, detection)
            print(key, result[key], flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
