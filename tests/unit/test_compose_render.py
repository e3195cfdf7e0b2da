"""``docker-compose.yml``, parsed with PyYAML: images, KRaft Kafka, depends_on,
healthchecks, volumes, the InfluxDB setup, and that the environment the twinstream
services get validates as Settings and their commands parse with the real CLI.
"""

from __future__ import annotations

import pytest
from deploy_render_support import (
    DOCKERFILE,
    ENV_PREFIX,
    REPO,
    check_cli_args,
    depends_on,
    env_of,
    load_compose,
    settings_from_env,
    volume_mounts,
)

TWINSTREAM_IMAGE = "twinstream:local"


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


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
    assert set(twinstream_services) == {"topics", "worker", "sink", "sidecar", "replay"}
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
    for name in ("worker", "sink", "sidecar"):
        deps = depends_on(services[name])
        assert deps["kafka"] == "service_healthy"
        assert deps["topics"] == "service_completed_successfully"
    assert depends_on(services["sink"])["influxdb"] == "service_healthy"
    assert depends_on(services["grafana"])["influxdb"] == "service_healthy"
    assert depends_on(services["replay"])["worker"] == "service_healthy"


def test_compose_healthchecks(services: dict[str, dict]) -> None:
    for name in ("kafka", "worker", "sink", "sidecar", "influxdb", "grafana"):
        check = services[name].get("healthcheck")
        assert check and check.get("test"), f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
    # The twinstream checks read the metrics endpoint, so they need the metrics port.
    for name in ("worker", "sink", "sidecar"):
        assert "TWINSTREAM_METRICS_PORT" in " ".join(services[name]["healthcheck"]["test"])
        assert env_of(services[name]).get("TWINSTREAM_METRICS_PORT")


def test_compose_commands(services: dict[str, dict]) -> None:
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["restart"] == "no"
    assert services["worker"]["command"] == ["worker"]
    assert services["sink"]["command"] == ["sink"]
    assert services["sidecar"]["command"] == ["sidecar"]
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
    sidecar = settings_from_env(monkeypatch, env_of(twinstream_services["sidecar"]))
    assert sidecar.app_id == worker.app_id, "the sidecar derives its consumer group from the worker's app id"
    assert (sidecar.topic_namespace, sidecar.partitions) == (worker.topic_namespace, worker.partitions)
    assert sidecar.metrics_port


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


def test_compose_commands_exist_in_the_cli(twinstream_services: dict[str, dict]) -> None:
    for svc in twinstream_services.values():
        check_cli_args([str(a) for a in svc["command"]])
