"""Repeat the failover and scale-out scenarios and count the runs that lost nothing.

Each run gets a fresh embedded broker and fresh state dirs; the scenarios and their
checks are the integration tests' own (tests/integration/failover_scenarios.py).

    python benchmarks/failover_loop.py --runs 10 --json benchmarks/results/failover.json

Exit status 1 if any run failed a check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

from failover_scenarios import SCENARIOS, run_scenario  # noqa: E402

from twinstream.broker import EmbeddedBroker  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per scenario")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated subset of " + ",".join(SCENARIOS))
    parser.add_argument("--json", type=Path, default=None, help="write the counts and every run's result here")
    parser.add_argument("--keep", type=Path, default=None, help="keep logs and state dirs under this folder")
    args = parser.parse_args()
    scenarios = [s for s in args.scenarios.split(",") if s]
    base = args.keep or Path(tempfile.mkdtemp(prefix="failover-"))
    runs: list[dict] = []
    started = time.time()
    for run in range(1, args.runs + 1):
        for scenario in scenarios:
            workdir = base / f"{scenario}-{run}"
            workdir.mkdir(parents=True, exist_ok=True)
            with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
                result = run_scenario(scenario, broker.bootstrap_servers, broker.url,
                                      f"failover-{uuid.uuid4().hex[:8]}", workdir)
            runs.append({"run": run, **asdict(result), "ok": result.ok})
            print(f"{scenario} run {run}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.0f} s"
                  + ("" if result.ok else "\n  " + "\n  ".join([repr(result.error), *result.details[:6]])), flush=True)
    summary = {s: {"runs": sum(r["scenario"] == s for r in runs), "passed": sum(r["scenario"] == s and r["ok"] for r in runs)}
               for s in scenarios}
    print(json.dumps(summary))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": " ".join(sys.argv), "started": started,
                                         "seconds": round(time.time() - started), "summary": summary,
                                         "runs": runs}, indent=1) + "\n")
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
