"""The pipeline-health dashboard: generated from deploy/grafana/pipeline_dashboard.py, loadable by Grafana's
schema types, and querying only metrics the worker, sink and sidecar register."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from twinstream.streams.metrics import WorkerMetrics

pytest.importorskip("grafana_foundation_sdk")
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "deploy" / "grafana"
SOURCE = GRAFANA / "pipeline_dashboard.py"


def generator():
    spec = importlib.util.spec_from_file_location("pipeline_dashboard", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def emitted_names() -> set[str]:
    """Every series name the processes' registry can expose (counters' _total, histograms' _bucket/_sum/_count)."""
    names: set[str] = set()
    for family in WorkerMetrics().registry.collect():
        names.add(family.name)
        names.update(f"{family.name}{suffix}" for suffix in ("_total", "_bucket", "_sum", "_count", "_created"))
    return names


def test_the_committed_dashboard_is_what_the_source_makes() -> None:
    module = generator()
    assert module.OUTPUT.read_text() == module.render(), "run python deploy/grafana/pipeline_dashboard.py"


def test_every_query_names_only_emitted_metrics() -> None:
    data = json.loads(generator().OUTPUT.read_text())
    emitted = emitted_names()
    exprs = [target["expr"] for panel in data["panels"] for target in panel["targets"]]
    assert len(exprs) >= 16
    for expr in exprs:
        used = set(re.findall(r"\b((?:twinstream|kafka)_[a-z_]+)\b", expr))
        assert used, expr
        assert used <= emitted, f"{expr} uses {sorted(used - emitted)}, which no process registers"


def test_dashboard_loads_with_grafanas_schema_and_uses_the_provisioned_prometheus() -> None:
    data = json.loads(generator().OUTPUT.read_text())
    board = Dashboard.from_json(data)
    assert board.uid == "twinstream-pipeline" and len(board.panels) == len(data["panels"])
    sources = [ds for f in sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
               for ds in yaml.safe_load(f.read_text())["datasources"]]
    prometheus = [ds for ds in sources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1
    refs = [panel["datasource"] for panel in data["panels"]] + [t["datasource"] for p in data["panels"] for t in p["targets"]]
    assert all(ref == {"type": "prometheus", "uid": prometheus[0]["uid"]} for ref in refs)
    titles = " ".join(panel["title"] for panel in data["panels"]).lower()
    for topic in ("events in", "lag", "checkpoint", "dead letters", "sidecar", "prior"):
        assert topic in titles
