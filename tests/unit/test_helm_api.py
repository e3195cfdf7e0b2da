"""The chart with the twin API on: the worker pods expose it, bind every address and advertise their own IP."""

from __future__ import annotations

from pathlib import Path

import pytest
from helm_render_support import find_helm, render


@pytest.fixture(scope="module")
def helm() -> str:
    return find_helm()


def worker_container(docs: list[dict]) -> dict:
    statefulset = next(d for d in docs if d["kind"] == "StatefulSet")
    return statefulset["spec"]["template"]["spec"]["containers"][0]


def test_api_port_is_exposed_and_advertised_per_pod(helm: str, tmp_path: Path) -> None:
    container = worker_container(render(helm, tmp_path, {"config": {"api_port": 8080},
                                                         "worker": {"extraEnv": [{"name": "X", "value": "1"}]}}))
    assert {"name": "api", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["TWINSTREAM_API_ADDR"]["value"] == "0.0.0.0"
    assert env["TWINSTREAM_API_ADVERTISED_URL"]["value"] == "http://$(POD_IP):8080"
    names = [e["name"] for e in container["env"]]
    assert names.index("POD_IP") < names.index("TWINSTREAM_API_ADVERTISED_URL")  # $(POD_IP) expands from above
    assert env["X"]["value"] == "1"


def test_api_off_by_default_and_explicit_values_win(helm: str, tmp_path: Path) -> None:
    container = worker_container(render(helm, tmp_path))
    assert [p["name"] for p in container["ports"]] == ["metrics"] and "env" not in container
    container = worker_container(render(helm, tmp_path, {"config": {
        "api_port": 8080, "api_addr": "10.0.0.1", "api_advertised_url": "http://twins-api:8080"}}))
    assert [e["name"] for e in container["env"]] == ["POD_IP"]
