"""Grafana provisioning, parsed with PyYAML / json: the InfluxDB (Flux) datasource, the
mounts compose gives Grafana, the datasource uid, variables and series of every
dashboard query, the layout, and the panels that show synthetic (gap-filled) data.

The measurement, tag and field names are taken from what the sink writes
(``twinstream.connectors.influx.to_line`` of a measured and of a synthetic prediction),
so renaming them in the sink fails these tests until the dashboard follows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_render_support import DASHBOARDS, GRAFANA, env_of, load_compose, volume_mounts

from twinstream.settings import Settings


@pytest.fixture(scope="module")
def services() -> dict[str, dict]:
    return load_compose()["services"]


def datasource_refs(node: Any) -> Iterator[Any]:
    """Every value of a "datasource" key in a dashboard, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


@pytest.fixture(scope="module")
def provisioned_datasource() -> dict:
    files = sorted((GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
    assert files
    sources = [ds for f in files for ds in yaml.safe_load(f.read_text())["datasources"]]
    influx = [ds for ds in sources if ds["type"] == "influxdb"]  # Prometheus: test_grafana_pipeline.py
    assert len(influx) == 1
    return influx[0]


def test_grafana_datasource_is_influxdb_flux(provisioned_datasource: dict, services: dict[str, dict]) -> None:
    ds = provisioned_datasource
    assert ds["type"] == "influxdb" and ds["uid"]
    assert ds["jsonData"]["version"] == "Flux"
    assert ds["jsonData"]["organization"] and ds["jsonData"]["defaultBucket"]
    assert ds["secureJsonData"]["token"]
    # $VARS in the provisioning file are expanded from the grafana container's environment.
    text = "\n".join(f.read_text() for f in (GRAFANA / "provisioning" / "datasources").glob("*.y*ml"))
    referenced = set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text))
    assert referenced <= set(env_of(services["grafana"])), referenced - set(env_of(services["grafana"]))


def test_grafana_mounts_match_the_provisioning(services: dict[str, dict]) -> None:
    mounts = dict(volume_mounts(services["grafana"]))
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    providers = [
        p
        for f in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.y*ml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    assert providers and {p["options"]["path"] for p in providers} == {mounts["./deploy/grafana/dashboards"]}
    home = env_of(services["grafana"]).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        rel = Path(home).relative_to(mounts["./deploy/grafana/dashboards"])
        assert (GRAFANA / "dashboards" / rel).is_file()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_dashboard_parses_and_uses_the_provisioned_datasource(path: Path, provisioned_datasource: dict) -> None:
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    refs = list(datasource_refs(dashboard))
    assert refs
    for ref in refs:
        assert isinstance(ref, dict), f"datasource by name ({ref!r}); refer to it by uid"
        assert ref == {"type": provisioned_datasource["type"], "uid": provisioned_datasource["uid"]}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " ".join(panel["title"] for panel in dashboard["panels"]).lower()
    assert "rul" in titles and "rate" in titles
    # Every query targets a datasource and only uses variables the dashboard defines.
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    queries = [t["query"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    queries += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert queries
    for query in queries:
        assert "from(bucket: v.defaultBucket)" in query or "bucket: v.defaultBucket" in query
        used = set(re.findall(r"\$\{(\w+)", query)) | set(re.findall(r"\$(\w+)", query))
        assert used <= variables, f"undefined dashboard variables {used - variables} in {query!r}"
    for panel in dashboard["panels"]:
        if panel["type"] != "text":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(measurement, tags, fields) of one line of line protocol (no escaped characters)."""
    series, fields, _timestamp = line.split(" ")
    measurement, *tags = series.split(",")
    return (
        measurement,
        dict(tag.split("=", 1) for tag in tags),
        dict(field.split("=", 1) for field in fields.split(",")),
    )


@pytest.fixture(scope="module")
def sink_points() -> dict[str, tuple[str, dict[str, str], dict[str, str]]]:
    """The points the sink writes for a measured and for a synthetic prediction."""
    from twinstream.connectors import influx
    from twinstream.schemas.prediction import Prediction

    common = dict(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=3, target="rul", value=112.5, model_version="m1")
    points = {
        "measured": parse_line(influx.to_line(Prediction(**common))),
        "synthetic": parse_line(influx.to_line(Prediction(**common, synthetic=True, synthetic_share=0.25))),
    }
    assert {measurement for measurement, _, _ in points.values()} == {influx.MEASUREMENT}
    return points


@pytest.fixture(scope="module")
def synthetic_names(sink_points: dict) -> dict[str, str]:
    """The sink's names for synthetic data: the tag that tells measured from synthetic
    predictions, its two values, and the field with the synthetic share."""
    _, measured_tags, measured_fields = sink_points["measured"]
    _, synthetic_tags, synthetic_fields = sink_points["synthetic"]
    differing = [k for k in synthetic_tags if measured_tags.get(k) != synthetic_tags[k]]
    assert len(differing) == 1, f"expected one tag to tell synthetic from measured points, got {differing}"
    tag = differing[0]
    share_fields = [k for k in synthetic_fields if k not in measured_fields]
    assert len(share_fields) == 1, f"expected one field written for synthetic input only, got {share_fields}"
    share = share_fields[0]
    assert float(synthetic_fields[share]) == 0.25
    return {"tag": tag, "true": synthetic_tags[tag], "false": measured_tags[tag], "share": share}


def test_grafana_dashboard_matches_what_the_sink_writes(sink_points: dict) -> None:
    """The dashboard's defaults name the measurement, tags and field of the sink's points."""
    measurement, tags, _ = sink_points["measured"]
    fields = {**sink_points["measured"][2], **sink_points["synthetic"][2]}
    tag_values: dict[str, set[str]] = {}
    for _, point_tags, _ in sink_points.values():
        for name, value in point_tags.items():
            tag_values.setdefault(name, set()).add(value)
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["measurement"]["query"] == measurement
        assert variables["target"]["query"] == Settings.model_fields["target"].default == tags["target"]
        queries = " ".join(t["query"] for panel in dashboard["panels"] for t in panel.get("targets", []))
        for tag in re.findall(r"r\.(\w+) ==", queries):
            assert tag.startswith("_") or tag in tags, f"{path.name} filters on tag {tag!r}, which the sink does not write"
        for tag, value in re.findall(r'r\.(\w+) == "([^"$]*)"', queries):
            if not tag.startswith("_"):
                assert value in tag_values[tag], f"{path.name} compares tag {tag!r} with {value!r}; the sink writes {tag_values[tag]}"
        for field in re.findall(r'r\._field == "(\w+)"', queries):
            assert field in fields, f"{path.name} reads field {field!r}, which the sink does not write"
        assert "entity_id" in tags


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_grafana_dashboard_layout_and_query_syntax(path: Path) -> None:
    """Panels fit the 24-column grid without overlapping; every query's brackets and quotes balance."""
    panels = json.loads(path.read_text())["panels"]
    boxes = []
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["y"] >= 0, panel["title"]
        assert pos["x"] + pos["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        boxes.append((panel["title"], pos["x"], pos["y"], pos["x"] + pos["w"], pos["y"] + pos["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1 :]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"panels {a!r} and {b!r} overlap"
    for panel in panels:
        refs = [t["refId"] for t in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), f"panel {panel['title']!r} repeats a refId"
        for target in panel.get("targets", []):
            query = target["query"]
            assert query.count('"') % 2 == 0, query
            text = re.sub(r'"[^"]*"', '""', query)  # brackets inside strings do not count
            for opening, closing in ("()", "[]", "{}"):
                assert text.count(opening) == text.count(closing), f"unbalanced {opening}{closing} in {query!r}"


def dashboard_panels() -> list[dict]:
    return [panel for path in DASHBOARDS for panel in json.loads(path.read_text())["panels"]]


def queries_of(panel: dict) -> dict[str, str]:
    return {t["refId"]: t["query"] for t in panel.get("targets", [])}


def frame_overrides(panel: dict) -> dict[str, dict[str, Any]]:
    """refId -> {property id: value} of the panel's overrides matched by frame refId."""
    return {
        o["matcher"]["options"]: {p["id"]: p["value"] for p in o["properties"]}
        for o in panel.get("fieldConfig", {}).get("overrides", [])
        if o["matcher"]["id"] == "byFrameRefID"
    }


def test_grafana_shows_the_synthetic_share_per_entity(synthetic_names: dict[str, str]) -> None:
    """A time series of the sink's share field per entity; measured-only predictions,
    which the sink writes without the field, are counted (as 0) through the tag."""
    share = f'r._field == "{synthetic_names["share"]}"'
    measured = f'r.{synthetic_names["tag"]} == "{synthetic_names["false"]}"'
    panels = [p for p in dashboard_panels() if any(share in q for q in queries_of(p).values())]
    assert panels, f"no dashboard panel reads the field {synthetic_names['share']!r}"
    timeseries = [p for p in panels if p["type"] == "timeseries"]
    assert timeseries, "the synthetic share is not shown over time"
    for panel in timeseries:
        for query in queries_of(panel).values():
            assert share in query and measured in query
            assert 'group(columns: ["entity_id"])' in query and "aggregateWindow(" in query and "fn: mean" in query
        assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
        assert panel["fieldConfig"]["defaults"]["displayName"] == "${__field.labels.entity_id}"


def test_grafana_splits_predictions_by_the_synthetic_tag(synthetic_names: dict[str, str]) -> None:
    """Counts per interval of measured and of synthetic predictions, as two named series."""
    tag, true, false = synthetic_names["tag"], synthetic_names["true"], synthetic_names["false"]
    found = []
    for panel in dashboard_panels():
        queries = queries_of(panel)
        by_value = {
            value: [ref for ref, q in queries.items() if f'r.{tag} == "{value}"' in q and "fn: count" in q]
            for value in (true, false)
        }
        if panel["type"] == "timeseries" and by_value[true] and by_value[false]:
            found.append(panel)
            names = frame_overrides(panel)
            shown = {names.get(ref, {}).get("displayName") for value in (true, false) for ref in by_value[value]}
            assert None not in shown and len(shown) == 2, f"{panel['title']!r}: name the measured and synthetic series"
            for query in queries.values():
                assert "aggregateWindow(every: v.windowPeriod" in query
    assert found, f"no panel counts predictions per interval split by the tag {tag!r}"


def test_grafana_marks_synthetic_input_in_the_prediction_value_panel(synthetic_names: dict[str, str]) -> None:
    """Every per-entity time series of the prediction value also queries the predictions
    tagged synthetic and draws them differently (override by refId)."""
    synthetic = f'r.{synthetic_names["tag"]} == "{synthetic_names["true"]}"'
    share = f'r._field == "{synthetic_names["share"]}"'
    value_panels = [
        p for p in dashboard_panels()
        if p["type"] == "timeseries"
        and any(
            'r._field == "value"' in q and share not in q and 'group(columns: ["entity_id"])' in q
            for q in queries_of(p).values()
        )
    ]
    assert value_panels
    for panel in value_panels:
        queries = queries_of(panel)
        refs = [ref for ref, q in queries.items() if synthetic in q]
        assert refs, f"{panel['title']!r} does not tell synthetic from measured predictions"
        assert any(synthetic not in q for q in queries.values()), f"{panel['title']!r} lost the series of all predictions"
        overrides = frame_overrides(panel)
        for ref in refs:
            props = overrides.get(ref, {})
            assert "custom.drawStyle" in props or "color" in props, f"{panel['title']!r}: {ref} is drawn like the rest"
            assert "synthetic" in props.get("displayName", ""), f"{panel['title']!r}: {ref} needs its own legend name"
