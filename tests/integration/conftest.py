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
