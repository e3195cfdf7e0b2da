"""Shared helpers for the Helm chart tests (test_helm_render, test_helm_api): finding helm,
rendering the chart with values, and picking objects, containers and their environment.

Not a test module.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import yaml
from deploy_render_support import CHART, required_tool

BASE_VALUES = {
    "config": {"broker": "kafka://kafka-bootstrap.kafka.svc:9092", "influx_url": "http://influxdb.monitoring.svc:8086"},
    "influx": {"token": "test-token"},
}


def find_helm() -> str:
    """The helm binary (Helm 3): a failure under CI or with TWINSTREAM_REQUIRE_SERVERS=1, else a skip when missing."""
    path = required_tool("helm", ".ci/test installs it (.ci/deps-helm.sh)", ".ci/test installs it, or source .ci/deps-helm.sh")
    version = subprocess.run([path, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("v3."), f"the chart is checked with Helm 3, found {version}"
    return path


def deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_helm(helm: str, tmp_path: Path, command: str, values: dict, chart: Path = CHART) -> subprocess.CompletedProcess:
    values_file = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    argv = [helm, command]
    if command == "template":
        argv += ["twins", str(chart), "--namespace", "digital-twins"]
    else:
        argv += ["--strict", str(chart)]
    argv += ["--values", str(values_file)]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
           "HELM_CONFIG_HOME": str(tmp_path / "config"), "HELM_DATA_HOME": str(tmp_path / "data")}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


def render(helm: str, tmp_path: Path, extra: dict | None = None, chart: Path = CHART) -> list[dict]:
    result = run_helm(helm, tmp_path, "template", deep_merge(BASE_VALUES, extra or {}), chart)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_error(helm: str, tmp_path: Path, extra: dict) -> str:
    result = run_helm(helm, tmp_path, "template", deep_merge(BASE_VALUES, extra))
    assert result.returncode != 0, "helm template should have refused these values"
    return result.stderr


def by_kind(docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out


def one(docs: list[dict], kind: str, component: str | None = None) -> dict:
    found = [
        d for d in docs
        if d["kind"] == kind and (component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component)
    ]
    assert len(found) == 1, f"expected one {kind} {component or ''}, got {len(found)}"
    return found[0]


def pod_containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]


def container_env(docs: list[dict], workload: dict, container: dict) -> dict[str, str]:
    """The environment a container gets: envFrom ConfigMaps, then env (values or Secret refs)."""
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode()
    return env
