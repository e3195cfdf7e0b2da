"""Real servers for integration tests, started once per session on free loopback ports."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from twinstream.broker import EmbeddedBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """The embedded Tansu broker, or an external one from TWINSTREAM_TEST_BROKER."""
    external = os.environ.get("TWINSTREAM_TEST_BROKER")
    if external:
        host, port = external.split("://")[-1].rsplit(":", 1)
        broker = EmbeddedBroker(host=host, port=int(port))
        yield broker
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker


@pytest.fixture
def app_id() -> str:
    """A fresh Faust app id (= consumer group) per test: Tansu breaks on group reuse."""
    return f"tstest-{uuid.uuid4().hex[:10]}"


# --- time-series servers for the InfluxDB sink (see tsdb_servers.py) -----------------

from collections.abc import Callable  # noqa: E402

from tsdb_servers import (  # noqa: E402
    INFLUXD_BIN,
    VICTORIA_METRICS_BIN,
    InfluxDB1Server,
    VictoriaMetricsServer,
    require_binary,
)


@pytest.fixture(scope="session")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    """One VictoriaMetrics for the session (skipped with the reason if not installed)."""
    binary = require_binary(VICTORIA_METRICS_BIN, "victoria-metrics")
    server = VictoriaMetricsServer(tmp_path_factory.mktemp("vm"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def victoria_metrics_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], VictoriaMetricsServer]]:
    """Private VictoriaMetrics instances for tests that stop and restart the server."""
    binary = require_binary(VICTORIA_METRICS_BIN, "victoria-metrics")
    servers: list[VictoriaMetricsServer] = []

    def start() -> VictoriaMetricsServer:
        server = VictoriaMetricsServer(tmp_path_factory.mktemp("vm-own"), binary)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def influxdb_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB1Server]:
    """One InfluxDB 1.x for the session (skipped with the reason if not installed)."""
    binary = require_binary(INFLUXD_BIN, "influxdb")
    server = InfluxDB1Server(tmp_path_factory.mktemp("influxd"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
