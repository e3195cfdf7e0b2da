"""Deployment artefacts, checked by rendering them: no servers, no network, no Docker.

* ``docker-compose.yml`` and the Grafana provisioning are parsed with PyYAML / json and
  their structure is checked (images, KRaft Kafka, depends_on, healthchecks, volumes,
  datasource uid of every dashboard query).
* The Helm chart is rendered by the real ``helm`` binary (``helm template`` and
  ``helm lint``). CI installs it with ``.ci/deps-helm.sh``; on a machine without helm
  these tests are skipped, except under ``CI`` where a missing helm fails.
* Every ``TWINSTREAM_*`` name in these files must be a field of
  :class:`twinstream.settings.Settings` (the set is derived from ``Settings.model_fields``),
  and the values the files set must validate as Settings, so the artefacts cannot drift
  from the code unnoticed.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from twinstream.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "Dockerfile"
CHART = REPO / "helm" / "twinstream"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

ENV_PREFIX = Settings.model_config["env_prefix"]
SETTINGS_ENV = frozenset(ENV_PREFIX + name.upper() for name in Settings.model_fields)
ENV_NAME = re.compile(rf"\b{ENV_PREFIX}[A-Z0-9_]+")
# Settings the chart sets itself (not in values.config).
CHART_MANAGED = {"data_dir", "metrics_port", "metrics_addr", "influx_token"}
TWINSTREAM_IMAGE = "twinstream:local"

# Artefacts whose TWINSTREAM_* names must all be Settings fields.
ARTEFACTS = [
    DOCKERFILE,
    COMPOSE_FILE,
    REPO / "docs" / "deploy.md",
    *sorted(p for p in GRAFANA.rglob("*") if p.is_file()),
    *sorted(p for p in CHART.rglob("*") if p.is_file()),
]


def settings_from_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    """Settings built the way a process builds them: from TWINSTREAM_* variables only."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# ---------------------------------------------------------------------------------------
# every artefact
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ARTEFACTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_twinstream_env_name_is_a_settings_field(path: Path) -> None:
    assert path.is_file(), f"{path} is missing"
    names = set(ENV_NAME.findall(path.read_text(encoding="utf-8")))
    unknown = sorted(names - SETTINGS_ENV)
    assert not unknown, f"{path.relative_to(REPO)} uses {unknown}, which are not fields of Settings"


def test_deploy_docs_list_every_setting() -> None:
    text = (REPO / "docs" / "deploy.md").read_text()
    missing = sorted(name for name in SETTINGS_ENV if f"`{name}`" not in text)
    assert not missing, f"docs/deploy.md does not describe {missing}"


# ---------------------------------------------------------------------------------------
# docker compose
# ---------------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}")


def interpolate(value: Any) -> str:
    """A compose value as the container sees it with no variables set on the host."""
    text = str(value)
    text = _INTERPOLATION.sub(lambda m: m.group("default") or "", text)
    return text.replace("$$", "$")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(value) for name, value in env.items()}


def depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((entry["source"], entry["target"]))
        else:
            source, target = entry.split(":")[:2]
            mounts.append((source, target))
    return mounts


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


@pytest.fixture(scope="module")
def twinstream_services(services: dict[str, dict]) -> dict[str, dict]:
    return {name: svc for name, svc in services.items() if svc.get("image") == TWINSTREAM_IMAGE}


def test_compose_services_have_an_image_or_a_build(services: dict[str, dict]) -> None:
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"service {name} has neither image nor build"
        image = svc.get("image", "")
        if image and not svc.get("build"):
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag ({image})"


def test_compose_twinstream_services_build_the_dockerfile(twinstream_services: dict[str, dict]) -> None:
    assert set(twinstream_services) == {"topics", "worker", "sink", "replay"}
    for name, svc in twinstream_services.items():
        build = svc["build"]
        context = build if isinstance(build, str) else build["context"]
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (REPO / context / dockerfile).resolve() == DOCKERFILE, name


def test_compose_kafka_is_apache_kafka_in_kraft_mode(services: dict[str, dict], twinstream_services: dict) -> None:
    kafka = services["kafka"]
    repo, _, tag = kafka["image"].partition(":")
    assert repo == "apache/kafka" and tag
    env = env_of(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in name for name in env), "KRaft mode: no ZooKeeper"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@")
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols) and set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    # The twinstream containers reach Kafka through a listener advertised under the
    # Kafka container's own name.
    in_network = {addr for addr in advertised.values() if addr.split(":")[0] in {"kafka", kafka.get("hostname")}}
    assert in_network
    for name, svc in twinstream_services.items():
        broker = env_of(svc)[f"{ENV_PREFIX}BROKER"]
        assert broker.startswith("kafka://") and broker.removeprefix("kafka://") in in_network, name
    # The data directory is on the named volume.
    assert (next(iter(volume_mounts(kafka)))[1]) == env["KAFKA_LOG_DIRS"]


def test_compose_depends_on_targets_exist_and_conditions_hold(services: dict[str, dict]) -> None:
    for name, svc in services.items():
        for target, condition in depends_on(svc).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert target != name
            dep = services[target]
            if condition == "service_healthy":
                assert dep.get("healthcheck", {}).get("test"), f"{name} waits for {target} to be healthy: no healthcheck"
            elif condition == "service_completed_successfully":
                assert dep.get("restart", "no") == "no", f"{target} is one-shot: restart must be 'no'"
            else:
                assert condition == "service_started", f"{name}: unknown condition {condition}"
            if not svc.get("profiles"):
                assert not dep.get("profiles"), f"{name} (always on) depends on {target}, which is in a profile"


def test_compose_start_order(services: dict[str, dict]) -> None:
    assert depends_on(services["topics"]) == {"kafka": "service_healthy"}
    for name in ("worker", "sink"):
        deps = depends_on(services[name])
        assert deps["kafka"] == "service_healthy"
        assert deps["topics"] == "service_completed_successfully"
    assert depends_on(services["sink"])["influxdb"] == "service_healthy"
    assert depends_on(services["grafana"])["influxdb"] == "service_healthy"
    assert depends_on(services["replay"])["worker"] == "service_healthy"


def test_compose_healthchecks(services: dict[str, dict]) -> None:
    for name in ("kafka", "worker", "sink", "influxdb", "grafana"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
    # The twinstream checks read the metrics endpoint, so they need the metrics port.
    for name in ("worker", "sink"):
        assert "TWINSTREAM_METRICS_PORT" in " ".join(services[name]["healthcheck"]["test"])
        assert env_of(services[name]).get("TWINSTREAM_METRICS_PORT")


def test_compose_commands(services: dict[str, dict]) -> None:
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["restart"] == "no"
    assert services["worker"]["command"] == ["worker"]
    assert services["sink"]["command"] == ["sink"]
    replay = services["replay"]["command"]
    assert replay[:2] == ["replay", "cmapss"] and "--rate" in replay
    assert float(replay[replay.index("--rate") + 1]) > 0


def test_compose_replay_only_in_the_demo_profile(services: dict[str, dict]) -> None:
    assert services["replay"]["profiles"] == ["demo"]
    assert [name for name, svc in services.items() if svc.get("profiles")] == ["replay"]


def test_compose_env_values_are_valid_settings(
    twinstream_services: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, svc in twinstream_services.items():
        env = {k: v for k, v in env_of(svc).items() if k.startswith(ENV_PREFIX)}
        settings = settings_from_env(monkeypatch, env)  # raises on an invalid value
        assert settings.broker_servers == "kafka:9092", name
    worker = settings_from_env(monkeypatch, env_of(twinstream_services["worker"]))
    sink = settings_from_env(monkeypatch, env_of(twinstream_services["sink"]))
    assert worker.app_id == sink.app_id, "the sink derives its consumer group from the worker's app id"
    assert worker.metrics_port and sink.metrics_port
    assert sink.influx_url and sink.influx_token.get_secret_value()
    assert worker.topic_namespace == sink.topic_namespace
    assert worker.partitions == sink.partitions


def test_compose_volumes_are_declared_and_state_is_persistent(compose: dict, services: dict[str, dict]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for source, _ in volume_mounts(svc):
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
    named = {name: {t for s, t in volume_mounts(svc) if not s.startswith((".", "/"))} for name, svc in services.items()}
    assert named["kafka"] and named["influxdb"] and named["grafana"]
    assert env_of(services["worker"])["TWINSTREAM_DATA_DIR"] in named["worker"]
    assert "/var/lib/influxdb2" in named["influxdb"]
    assert "/var/lib/grafana" in named["grafana"]
    used = {s for svc in services.values() for s, _ in volume_mounts(svc)}
    assert declared <= used, f"declared but unused volumes: {declared - used}"


def test_compose_influx_setup_matches_sink_and_grafana(services: dict[str, dict]) -> None:
    influx, sink, grafana = (env_of(services[n]) for n in ("influxdb", "sink", "grafana"))
    raw = {n: services[n]["environment"] for n in ("influxdb", "sink", "grafana")}
    assert influx["DOCKER_INFLUXDB_INIT_MODE"] == "setup"
    assert len(influx["DOCKER_INFLUXDB_INIT_PASSWORD"]) >= 8, "InfluxDB refuses passwords under 8 characters"
    assert influx["DOCKER_INFLUXDB_INIT_ORG"] == sink["TWINSTREAM_INFLUX_ORG"] == grafana["INFLUX_ORG"]
    assert influx["DOCKER_INFLUXDB_INIT_BUCKET"] == sink["TWINSTREAM_INFLUX_BUCKET"] == grafana["INFLUX_BUCKET"]
    # Same expression (same host variable and default) for the token in all three.
    assert (
        raw["influxdb"]["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
        == raw["sink"]["TWINSTREAM_INFLUX_TOKEN"]
        == raw["grafana"]["INFLUX_TOKEN"]
    )
    assert sink["TWINSTREAM_INFLUX_URL"] == grafana["INFLUX_URL"] == "http://influxdb:8086"
    assert sink["TWINSTREAM_INFLUX_API"] == "v2"


# ---------------------------------------------------------------------------------------
# Grafana provisioning
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Dockerfile
# ---------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_python_slim_non_root_and_entrypoint() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0]) for w, rest in instructions if w == "FROM"]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    entrypoint = json.loads(next(rest for word, rest in instructions if word == "ENTRYPOINT"))
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["twinstream"] and "twinstream" in scripts


def test_dockerfile_copies_every_package_folder() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _dest = rest.split()
            for source in sources:
                if "[" in source:  # optional file (glob that may match nothing)
                    continue
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
                copied.add(source.rstrip("/"))
    assert "pyproject.toml" in copied
    package_dirs = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert package_dirs <= copied, f"package folders not copied into the image: {package_dirs - copied}"


def test_dockerfile_data_dir_is_writable_by_the_user() -> None:
    text = DOCKERFILE.read_text()
    env = dict(re.findall(r"(TWINSTREAM_[A-Z_]+)=(\S+)", text))
    data_dir = env["TWINSTREAM_DATA_DIR"]
    assert f"mkdir -p {data_dir}" in text and re.search(rf"chown \S+ {re.escape(data_dir)}\b", text)


# ---------------------------------------------------------------------------------------
# CLI commands used by the artefacts (checked once twinstream.cli exists)
# ---------------------------------------------------------------------------------------


def check_cli_args(args: list[str]) -> None:
    """Parse ``args`` with the real CLI, without running the command (unknown commands or
    options raise)."""
    cli = pytest.importorskip("twinstream.cli")
    import typer

    command = typer.main.get_command(cli.app)
    rest = list(args)
    name = "twinstream"
    while hasattr(command, "commands"):  # a group: descend into the named sub-command
        assert rest, f"{args}: incomplete command"
        name = rest.pop(0)
        assert name in command.commands, f"{args}: no command {name!r} (has {sorted(command.commands)})"
        command = command.commands[name]
    command.make_context(name, rest)


def test_compose_commands_exist_in_the_cli(twinstream_services: dict[str, dict]) -> None:
    for svc in twinstream_services.values():
        check_cli_args([str(a) for a in svc["command"]])


# ---------------------------------------------------------------------------------------
# Helm chart, rendered by the real helm binary
# ---------------------------------------------------------------------------------------

BASE_VALUES = {
    "config": {"broker": "kafka://kafka-bootstrap.kafka.svc:9092", "influx_url": "http://influxdb.monitoring.svc:8086"},
    "influx": {"token": "test-token"},
}


@pytest.fixture(scope="module")
def helm() -> str:
    path = shutil.which("helm")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("helm is not installed: source .ci/deps-helm.sh in the CI script")
        pytest.skip("helm is not installed (source .ci/deps-helm.sh)")
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


@pytest.fixture(scope="module")
def default_docs(helm: str, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    return render(helm, tmp_path_factory.mktemp("helm"))


def test_helm_lint_strict(helm: str, tmp_path: Path) -> None:
    for extra in ({}, {"sink": {"enabled": False}}, {"metrics": {"serviceMonitor": {"enabled": True}}}):
        result = run_helm(helm, tmp_path, "lint", deep_merge(BASE_VALUES, extra))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 chart(s) failed" in result.stdout


def test_helm_renders_the_expected_objects(default_docs: list[dict]) -> None:
    kinds = Counter(doc["kind"] for doc in default_docs)
    assert kinds == Counter(
        {"StatefulSet": 1, "Deployment": 1, "ConfigMap": 1, "Secret": 1, "Service": 2, "ServiceAccount": 1}
    )
    for doc in default_docs:
        assert doc["metadata"]["name"].startswith("twins-twinstream")
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "twins"


def test_helm_env_names_are_settings_fields_and_values_validate(
    default_docs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    configmap = one(default_docs, "ConfigMap")
    assert set(configmap["data"]) <= SETTINGS_ENV
    for workload in (one(default_docs, "StatefulSet"), one(default_docs, "Deployment")):
        for container in pod_containers(workload):
            env = container_env(default_docs, workload, container)
            names = {n for n in env if n.startswith(ENV_PREFIX)}
            assert names <= SETTINGS_ENV, names - SETTINGS_ENV
            settings = settings_from_env(monkeypatch, env)
            assert settings.broker == BASE_VALUES["config"]["broker"]
            assert settings.data_dir.is_absolute()


def test_helm_every_setting_can_be_configured(helm: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """values.config holds every Settings field the chart does not manage, and each renders and validates."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["config"]) == set(Settings.model_fields) - CHART_MANAGED
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    listed = re.search(r'define "twinstream.settingsFields" -}}\s*(.*?)\s*{{-', helpers, re.S).group(1).split()
    assert sorted(listed) == sorted(Settings.model_fields), "update twinstream.settingsFields in _helpers.tpl"
    managed = re.search(r'define "twinstream.chartManagedFields" -}}\s*(.*?)\s*{{-', helpers, re.S).group(1).split()
    assert set(managed) == CHART_MANAGED

    defaults = settings_from_env(monkeypatch, {}).model_dump(mode="json")
    config: dict[str, Any] = {name: defaults[name] for name in Settings.model_fields if name not in CHART_MANAGED}
    config.update(
        BASE_VALUES["config"],
        batch_size=2_000_000,
        max_payload_bytes=1 << 20,
        influx_api="v1",
        learner_params={"clip_min": 0.5, "nested": {"a": [1, 2]}},
    )
    docs = render(helm, tmp_path, {"config": config, "metrics": {"port": 9100}})
    configmap = one(docs, "ConfigMap")
    assert set(configmap["data"]) == {ENV_PREFIX + n.upper() for n in Settings.model_fields} - {f"{ENV_PREFIX}INFLUX_TOKEN"}
    sink = one(docs, "Deployment")
    settings = settings_from_env(monkeypatch, container_env(docs, sink, sink["spec"]["template"]["spec"]["containers"][0]))
    assert settings.batch_size == 2_000_000, "large numbers must not render as 2e+06"
    assert settings.max_payload_bytes == 1 << 20
    assert settings.influx_api == "v1"
    assert settings.metrics_port == 9100
    assert settings.influx_token == SecretStr("test-token")
    assert settings.learner_params == {"clip_min": 0.5, "nested": {"a": [1, 2]}}
    rendered = settings.model_dump(mode="json")
    for name in config:
        assert rendered[name] == Settings(**{name: config[name]}).model_dump(mode="json")[name], name


def test_helm_worker_statefulset_keeps_state_on_a_pvc(default_docs: list[dict]) -> None:
    sts = one(default_docs, "StatefulSet", "worker")
    configmap = one(default_docs, "ConfigMap")["data"]
    claims = {c["metadata"]["name"]: c for c in sts["spec"]["volumeClaimTemplates"]}
    assert "state" in claims
    assert claims["state"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claims["state"]["spec"]["resources"]["requests"]["storage"]
    spec = sts["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    assert worker["args"] == ["worker"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts["state"] == configmap["TWINSTREAM_DATA_DIR"]
    assert "state" not in {v["name"] for v in spec.get("volumes", [])}, "state must come from the claim template"
    # The headless Service that governs the StatefulSet exists.
    service = next(s for s in default_docs if s["kind"] == "Service" and s["metadata"]["name"] == sts["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"


@pytest.mark.parametrize("kind", ["StatefulSet", "Deployment"])
def test_helm_probes_security_and_metrics_port(default_docs: list[dict], kind: str) -> None:
    workload = one(default_docs, kind)
    port = int(one(default_docs, "ConfigMap")["data"]["TWINSTREAM_METRICS_PORT"])
    spec = workload["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    (container,) = spec["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": port}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert probe in container, f"{kind} has no {probe}"
        command = container[probe]["exec"]["command"]
        assert command[0] == "python" and "TWINSTREAM_METRICS_PORT" in command[-1] and "/metrics" in command[-1]
    for c in pod_containers(workload):
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        if c["securityContext"].get("readOnlyRootFilesystem"):
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}


def test_helm_metrics_services_select_the_pods_and_carry_scrape_annotations(default_docs: list[dict]) -> None:
    port = int(one(default_docs, "ConfigMap")["data"]["TWINSTREAM_METRICS_PORT"])
    for component, kind in (("worker", "StatefulSet"), ("sink", "Deployment")):
        service = one(default_docs, "Service", component)
        pod_labels = one(default_docs, kind, component)["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        annotations = service["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(port)
        assert annotations["prometheus.io/path"] == "/metrics"
        assert service["spec"]["ports"] == [{"name": "metrics", "port": port, "targetPort": "metrics", "protocol": "TCP"}]


def test_helm_sink_uses_the_secret_and_its_own_consumer_group(default_docs: list[dict]) -> None:
    sink = one(default_docs, "Deployment", "sink")
    (container,) = sink["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["sink"]
    env = {e["name"]: e for e in container["env"]}
    ref = env["TWINSTREAM_INFLUX_TOKEN"]["valueFrom"]["secretKeyRef"]
    secret = one(default_docs, "Secret")
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["data"]
    # Same app id as the worker: the sink derives its own consumer group from it.
    assert "TWINSTREAM_APP_ID" not in env
    assert "TWINSTREAM_INFLUX_TOKEN" not in one(default_docs, "ConfigMap")["data"]


def test_helm_existing_secret_and_disabled_sink(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"influx": {"existingSecret": "influx-writer", "tokenKey": "token"}})
    assert "Secret" not in by_kind(docs)
    (container,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in container["env"] if e["name"] == "TWINSTREAM_INFLUX_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "influx-writer", "key": "token"}

    docs = render(helm, tmp_path, {"sink": {"enabled": False}, "config": {"influx_url": ""}})
    kinds = by_kind(docs)
    assert "Deployment" not in kinds and "Secret" not in kinds
    assert [s["metadata"]["labels"]["app.kubernetes.io/component"] for s in kinds["Service"]] == ["worker"]


def test_helm_service_monitor_is_optional(helm: str, tmp_path: Path, default_docs: list[dict]) -> None:
    assert "ServiceMonitor" not in by_kind(default_docs)
    docs = render(helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["digital-twins"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in by_kind(docs)["Service"] if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 2
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_helm_storage_class_options(helm: str, tmp_path: Path) -> None:
    def claim(storage_class: str) -> dict:
        docs = render(helm, tmp_path, {"worker": {"persistence": {"storageClass": storage_class}}})
        return one(docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"]

    assert "storageClassName" not in claim("")
    assert claim("-")["storageClassName"] == ""
    assert claim("fast-ssd")["storageClassName"] == "fast-ssd"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"worker": {"replicas": 13}, "config": {"partitions": 12}}, "must not exceed config.partitions"),
        ({"sink": {"replicas": 5}, "config": {"partitions": 4}}, "sink.replicas (5) must not exceed"),
        ({"config": {"broker": ""}}, "config.broker is required"),
        ({"config": {"influx_url": ""}}, "config.influx_url is required"),
        ({"config": {"batch_sise": 10}}, "config.batch_sise is not a twinstream setting"),
        ({"config": {"data_dir": "/x"}}, "config.data_dir is set by the chart"),
    ],
    ids=["worker-replicas", "sink-replicas", "no-broker", "no-influx-url", "unknown-key", "managed-key"],
)
def test_helm_refuses_invalid_values(helm: str, tmp_path: Path, extra: dict, message: str) -> None:
    assert message in render_error(helm, tmp_path, extra)


def test_helm_replicas_up_to_partitions_render(helm: str, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"worker": {"replicas": 12}, "config": {"partitions": 12}})
    assert one(docs, "StatefulSet")["spec"]["replicas"] == 12


def test_helm_notes_render(helm: str, tmp_path: Path) -> None:
    """NOTES.txt is rendered by a copy of the chart that turns it into a ConfigMap."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes-source.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: rendered-notes\ndata:\n  notes: |\n"
        '{{ tpl (.Files.Get "notes-source.txt") . | indent 4 }}\n'
    )
    docs = render(helm, tmp_path, chart=chart)
    notes = next(d for d in docs if d["metadata"]["name"] == "rendered-notes")["data"]["notes"]
    assert BASE_VALUES["config"]["broker"] in notes and BASE_VALUES["config"]["influx_url"] in notes
    assert "worker.replicas <= config.partitions" in notes
    assert "WARNING" not in notes
    names = set(ENV_NAME.findall(notes))
    assert names <= SETTINGS_ENV


def test_helm_container_args_exist_in_the_cli(default_docs: list[dict]) -> None:
    for workload in (one(default_docs, "StatefulSet"), one(default_docs, "Deployment")):
        for container in pod_containers(workload):
            check_cli_args(container["args"])


def test_helm_manifests_match_the_kubernetes_schema(helm: str, tmp_path: Path) -> None:
    """Strict schema check (unknown fields fail) for the oldest and newest supported Kubernetes."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs = render(helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True}}})
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest = re.match(r">=\s*(\d+\.\d+)", chart["kubeVersion"]).group(1) + ".0"
    for version in (oldest, kubernetes_validate.latest_version()):
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no schema in the Kubernetes API
            kubernetes_validate.validate(doc, version, strict=True)
