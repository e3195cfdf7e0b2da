"""The rebalance and recovery figures in docs/performance.md are the benchmarks' result files."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "performance.md").read_text()
RESULTS = ROOT / "benchmarks" / "results"


def test_failover_table_is_the_loop_result() -> None:
    summary = json.loads((RESULTS / "failover.json").read_text())["summary"]
    for scenario, counts in summary.items():
        assert f"| {scenario} |" in DOC and f"| {counts['passed']} / {counts['runs']} |" in DOC, scenario
    before = json.loads((RESULTS / "failover_before_offset_guard.json").read_text())["summary"]
    assert f"join {before['join']['passed']}/{before['join']['runs']}" in DOC


def test_recovery_table_is_the_benchmark_result() -> None:
    result = json.loads((RESULTS / "recovery_time.json").read_text())
    assert f"{result['twin_bytes']:,} B" in DOC
    for row in result["recovery"]:
        assert row["ok"], row
        assert f"| {row['twins']:,} | {row['changelog_mb']} MB | " in DOC, row
        assert f"{row['recovery_s']} s" in DOC and f"{row['start_to_serving_s']} s" in DOC, row
    for seconds in result["failover"]["per_partition_s"].values():
        assert f"{seconds} s" in DOC, seconds
