"""The API latency figures in docs/operations.md are benchmarks/results/api_latency.json, rendered by the benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from api_latency import render_markdown  # noqa: E402


def test_operations_doc_shows_the_recorded_run() -> None:
    result = json.loads((ROOT / "benchmarks" / "results" / "api_latency.json").read_text())
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert render_markdown(result) in doc
    assert {arm["arm"] for arm in result["arms"]} == {"idle", "load"} and result["rate"] == 100.0
    assert all("cpu_s" in arm and "server_share_within_20ms" in arm for arm in result["arms"])
