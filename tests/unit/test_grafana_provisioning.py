"""Grafana provisioning, parsed with PyYAML / json: the InfluxDB (Flux) datasource, the
mounts compose gives Grafana, and the datasource uid, variables and series of every
dashboard query.
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
    assert len(sources) == 1
    return sources[0]


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


def test_grafana_dashboard_matches_what_the_sink_writes() -> None:
    """The dashboard's defaults name the measurement, tags and field of the sink's points."""
    influx = pytest.importorskip("twinstream.connectors.influx")
    from twinstream.schemas.prediction import Prediction

    prediction = Prediction(
        entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=3, target="rul", value=112.5, model_version="m1"
    )
    line = influx.to_line(prediction)
    series, fields, _timestamp = line.split(" ")
    measurement, *tags = series.split(",")
    tags = dict(tag.split("=", 1) for tag in tags)
    fields = dict(field.split("=", 1) for field in fields.split(","))
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["measurement"]["query"] == measurement
        assert variables["target"]["query"] == Settings.model_fields["target"].default == tags["target"]
        queries = " ".join(t["query"] for panel in dashboard["panels"] for t in panel.get("targets", []))
        for tag in re.findall(r"r\.(\w+) ==", queries):
            assert tag.startswith("_") or tag in tags, f"{path.name} filters on tag {tag!r}, which the sink does not write"
        for field in re.findall(r'r\._field == "(\w+)"', queries):
            assert field in fields, f"{path.name} reads field {field!r}, which the sink does not write"
        assert "entity_id" in tags
