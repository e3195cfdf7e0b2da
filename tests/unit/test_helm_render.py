"""The Helm chart, rendered by the real ``helm`` binary (``helm template`` and
``helm lint``). CI installs it with ``.ci/deps-helm.sh``; on a machine without helm these
tests are skipped, except under ``CI`` where a missing helm fails. The rendered objects'
``TWINSTREAM_*`` names must be Settings fields and their values must validate as Settings.
"""

from __future__ import annotations

import base64
import re
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_render_support import (
    CHART,
    ENV_NAME,
    ENV_PREFIX,
    SETTINGS_ENV,
    check_cli_args,
    settings_from_env,
)
from helm_render_support import (
    BASE_VALUES,
    by_kind,
    container_env,
    deep_merge,
    find_helm,
    one,
    pod_containers,
    render,
    render_error,
    run_helm,
)
from pydantic import SecretStr

from twinstream.settings import Settings

# Settings the chart sets itself (not in values.config).
CHART_MANAGED = {"data_dir", "metrics_port", "metrics_addr", "influx_token", "api_token", "kafka_sasl_password", "kafka_sasl_password_file",
                 "kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile"}
# Settings of the embedded broker only (`twinstream broker`): the chart runs against Apache Kafka.
EMBEDDED_BROKER_ONLY = {"broker_storage"}
# Kafka credentials and certificates (values.kafka): mounted files, never the password in the ConfigMap.
KAFKA_VALUES = {"sasl": {"password": "kafka-pw-never-in-a-configmap"},
                "tls": {"caSecret": "kafka-ca", "clientCertSecret": "twinstream-client"}}


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


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
        {"StatefulSet": 1, "Deployment": 2, "ConfigMap": 1, "Secret": 1, "Service": 3, "ServiceAccount": 1}
    )
    for doc in default_docs:
        assert doc["metadata"]["name"].startswith("twins-twinstream")
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == "twins"


def test_helm_env_names_are_settings_fields_and_values_validate(
    default_docs: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    configmap = one(default_docs, "ConfigMap")
    assert set(configmap["data"]) <= SETTINGS_ENV
    for workload in (one(default_docs, "StatefulSet"), one(default_docs, "Deployment", "sink"),
                     one(default_docs, "Deployment", "sidecar")):
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
    assert set(values["config"]) == set(Settings.model_fields) - CHART_MANAGED - EMBEDDED_BROKER_ONLY
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
        prior_registry_url="http://prior-registry:8780",
        prior_registry_public_key="MCowBQYDK2VwAyEAexample0000000000000000000000000=",
        synth_generator_dir="/models/generator",
        learn_from_synthetic=True,
        synthetic_learn_weight=0.25,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="twinstream",
        api_port=8088,
        api_advertised_url="http://twins.example:8088",
    )
    docs = render(helm, tmp_path, {"config": config, "metrics": {"port": 9100}, "kafka": KAFKA_VALUES,
                                   "api": {"token": "api-token-never-in-a-configmap"}})
    configmap = one(docs, "ConfigMap")
    assert set(configmap["data"]) == ({ENV_PREFIX + n.upper() for n in Settings.model_fields}
                                      - {f"{ENV_PREFIX}INFLUX_TOKEN", f"{ENV_PREFIX}KAFKA_SASL_PASSWORD",
                                         f"{ENV_PREFIX}API_TOKEN"})
    assert "api-token-never-in-a-configmap" not in yaml.safe_dump(configmap)
    worker = one(docs, "StatefulSet")
    worker_env = {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert worker_env["TWINSTREAM_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"].endswith("-api")
    sink = one(docs, "Deployment", "sink")
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


@pytest.mark.parametrize("kind, component", [("StatefulSet", "worker"), ("Deployment", "sink"), ("Deployment", "sidecar")])
def test_helm_probes_security_and_metrics_port(default_docs: list[dict], kind: str, component: str) -> None:
    workload = one(default_docs, kind, component)
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
    for component, kind in (("worker", "StatefulSet"), ("sink", "Deployment"), ("sidecar", "Deployment")):
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
    (container,) = one(docs, "Deployment", "sink")["spec"]["template"]["spec"]["containers"]
    ref = next(e for e in container["env"] if e["name"] == "TWINSTREAM_INFLUX_TOKEN")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "influx-writer", "key": "token"}

    docs = render(helm, tmp_path, {"sink": {"enabled": False}, "config": {"influx_url": ""}})
    kinds = by_kind(docs)
    assert "Secret" not in kinds
    assert [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in kinds["Deployment"]] == ["sidecar"]
    assert sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in kinds["Service"]) == ["sidecar", "worker"]


def test_helm_sidecar_is_optional_and_needs_no_influx_secret(helm: str, tmp_path: Path, default_docs: list[dict]) -> None:
    sidecar = one(default_docs, "Deployment", "sidecar")
    (container,) = sidecar["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["sidecar"]
    assert "TWINSTREAM_INFLUX_TOKEN" not in {e["name"] for e in container.get("env", [])}
    assert "TWINSTREAM_APP_ID" not in {e["name"] for e in container.get("env", [])}, "derives its group from app_id"
    docs = render(helm, tmp_path, {"sidecar": {"enabled": False}})
    assert [d["metadata"]["labels"]["app.kubernetes.io/component"] for d in by_kind(docs)["Deployment"]] == ["sink"]
    assert "sidecar.replicas (5) must not exceed" in render_error(helm, tmp_path, {"sidecar": {"replicas": 5}, "config": {"partitions": 4}})


def test_helm_service_monitor_is_optional(helm: str, tmp_path: Path, default_docs: list[dict]) -> None:
    assert "ServiceMonitor" not in by_kind(default_docs)
    docs = render(helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["digital-twins"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in by_kind(docs)["Service"] if selector.items() <= s["metadata"]["labels"].items()]
    assert len(selected) == 3
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
        ({"config": {"kafka_sasl_password": "x"}}, "config.kafka_sasl_password is set by the chart"),
        ({"config": {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"}}, "needs kafka.sasl.password"),
        ({"config": {"kafka_security_protocol": "SASL_SSL"}, "kafka": {"sasl": {"password": "p"}}}, "needs config.kafka_sasl_username"),
        ({"kafka": {"tls": {"caConfigMap": "a", "caSecret": "b"}}}, "not both"),
    ],
    ids=["worker-replicas", "sink-replicas", "no-broker", "no-influx-url", "unknown-key", "managed-key", "kafka-password-in-config",
         "sasl-without-password", "sasl-without-user", "two-cas"],
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
    for workload in (one(default_docs, "StatefulSet"), *by_kind(default_docs)["Deployment"]):
        for container in pod_containers(workload):
            check_cli_args(container["args"])


def test_helm_manifests_match_the_kubernetes_schema(helm: str, tmp_path: Path) -> None:
    """Strict schema check (unknown fields fail) for the oldest and newest supported Kubernetes."""
    import kubernetes_validate  # a test extra
    docs = render(helm, tmp_path, {"metrics": {"serviceMonitor": {"enabled": True}}})
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    oldest = re.match(r">=\s*(\d+\.\d+)", chart["kubeVersion"]).group(1) + ".0"
    for version in (oldest, kubernetes_validate.latest_version()):
        for doc in docs:
            if doc["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no schema in the Kubernetes API
            kubernetes_validate.validate(doc, version, strict=True)


def test_helm_kafka_credentials_come_from_secrets_and_the_ca_from_a_configmap(helm: str, tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """SASL_SSL with mutual TLS: every pod mounts the password (a Secret), the CA and the client certificate as files;
    the ConfigMap holds only their paths, never the password; the pods' settings validate."""
    import kubernetes_validate  # a test extra

    password = KAFKA_VALUES["sasl"]["password"]
    extra = {"config": {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "twinstream"},
             "kafka": {**KAFKA_VALUES, "tls": {"caConfigMap": "kafka-ca", "caKey": "bundle.pem",
                                               "clientCertSecret": "twinstream-client"}}}
    docs = render(helm, tmp_path, extra)
    configmap = one(docs, "ConfigMap")
    assert password not in yaml.safe_dump(configmap)
    assert "TWINSTREAM_KAFKA_SASL_PASSWORD" not in configmap["data"]
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-kafka"))
    assert base64.b64decode(secret["data"]["kafka-password"]).decode() == password
    for workload in (one(docs, "StatefulSet"), one(docs, "Deployment", "sink"), one(docs, "Deployment", "sidecar")):
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["kafka-sasl"]["secret"]["secretName"] == secret["metadata"]["name"]
        assert volumes["kafka-ca"]["configMap"] == {"name": "kafka-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]}
        assert volumes["kafka-client"]["secret"]["secretName"] == "twinstream-client"
        (container,) = pod["containers"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        env = container_env(docs, workload, container)
        assert env["TWINSTREAM_KAFKA_SASL_PASSWORD_FILE"].startswith(mounts["kafka-sasl"] + "/")
        assert env["TWINSTREAM_KAFKA_SSL_CAFILE"] == mounts["kafka-ca"] + "/ca.crt"
        assert env["TWINSTREAM_KAFKA_SSL_CERTFILE"] == mounts["kafka-client"] + "/tls.crt"
        assert env["TWINSTREAM_KAFKA_SSL_KEYFILE"] == mounts["kafka-client"] + "/tls.key"
        assert all(password not in str(value) for value in env.values())
        settings = settings_from_env(monkeypatch, env)
        assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_sasl_username == "twinstream"
        for version in ("1.27.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(workload, version, strict=True)

    docs = render(helm, tmp_path, {"config": extra["config"], "kafka": {"sasl": {"existingSecret": "kafka-user", "passwordKey": "pw"},
                                                                        "tls": {"caSecret": "kafka-ca"}}})
    assert not [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-kafka")]
    volumes = {v["name"]: v for v in one(docs, "StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["kafka-sasl"]["secret"]["secretName"] == "kafka-user"
    assert volumes["kafka-sasl"]["secret"]["items"] == [{"key": "pw", "path": "password"}]
    assert volumes["kafka-ca"]["secret"]["secretName"] == "kafka-ca" and "kafka-client" not in volumes
