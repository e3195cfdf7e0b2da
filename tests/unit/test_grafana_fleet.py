"""Fleet and twin dashboards generated from a twins spec: they follow its kinds and tasks, load with Grafana's
schema types, and their Flux queries name only the measurement, tags and fields the InfluxDB sink writes."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from twinstream.connectors.influx import prediction_point
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.twin_spec import load_spec, parse_spec
from twinstream.streams.kinds import bundled_spec_path

pytest.importorskip("grafana_foundation_sdk")
from grafana_foundation_sdk.models.dashboard import Dashboard  # noqa: E402

SOURCE = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "fleet_dashboards.py"
PUMPS = """
kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow}, {name: pressure}]
    tasks: [{type: forecast, metric: flow, horizon: 3}, {type: anomaly, metric: pressure}]
  - name: turbofan
    match: {entity_id: ["fd00?-*"]}
    tasks: [{type: label, target: rul}]
"""


def generator():
    spec = importlib.util.spec_from_file_location("fleet_dashboards", SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def written_names() -> tuple[set[str], set[str], set[str]]:
    """Measurements, tags and fields of the points the sink writes (every optional part present)."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    predictions = [
        Prediction(entity_id="e", event_time=now, seq=1, target="rul", value=1.0, lower=0.0, upper=2.0, model_version="m",
                   prior_version="p", synthetic=True, synthetic_share=0.5, kind="k", in_domain=True, domain_score=0.1),
        Prediction(entity_id="e", event_time=now, seq=1, target="flow", value=1.0, model_version="m", kind="k",
                   task="forecast", target_seq=4),
        Prediction(entity_id="e", event_time=now, seq=1, target="flow", value=0.5, model_version="m", kind="k",
                   task="anomaly", flagged=True),
    ]
    measurements, tags, fields = set(), set(), set()
    for p in predictions:
        point = prediction_point(p)
        measurements.add(point._name)
        tags |= set(point._tags)
        fields |= set(point._fields)
    return measurements, tags, fields


def queries(doc: dict) -> list[str]:
    out = [t["query"] for panel in doc["panels"] for t in panel["targets"]]
    out += [v["query"] for v in doc.get("templating", {}).get("list", [])]
    return out


def test_the_committed_dashboards_are_what_the_source_makes_of_the_bundled_spec() -> None:
    module = generator()
    for name, text in module.render(load_spec(bundled_spec_path("cmapss"))).items():
        assert (module.OUTPUT / name).read_text() == text, "run python deploy/grafana/fleet_dashboards.py"


def test_panels_follow_the_kinds_and_tasks_of_a_spec() -> None:
    rendered = {name: json.loads(text) for name, text in generator().render(parse_spec(PUMPS)).items()}
    fleet_titles = [p["title"] for p in rendered["twinstream-fleet.json"]["panels"]]
    twin_titles = [p["title"] for p in rendered["twinstream-twin.json"]["panels"]]
    for part in ("pump · forecast flow", "pump · anomaly pressure", "turbofan · label rul"):
        assert any(t.startswith(part) for t in fleet_titles) and any(t.startswith(part) for t in twin_titles)
    assert not any("rul" in t for t in fleet_titles if t.startswith("pump"))
    for doc in rendered.values():
        assert Dashboard.from_json(doc).uid == doc["uid"]


def test_queries_name_only_what_the_sink_writes() -> None:
    measurements, tags, fields = written_names()
    module = generator()
    for name in ("twinstream-fleet.json", "twinstream-twin.json"):
        doc = json.loads((module.OUTPUT / name).read_text())
        assert Dashboard.from_json(doc).panels
        for query in queries(doc):
            assert set(re.findall(r'_measurement == "(\w+)"', query)) <= measurements, query
            assert set(re.findall(r'_field == "(\w+)"', query)) <= fields, query
            used_tags = set(re.findall(r"\br\.([a-z][a-z_]*)\b", query)) | set(re.findall(r'tag: "(\w+)"', query))
            assert used_tags <= tags, f"{query} uses {sorted(used_tags - tags)}"
        for panel in doc["panels"]:
            assert panel["datasource"] == {"type": "influxdb", "uid": "twinstream-influxdb"}
