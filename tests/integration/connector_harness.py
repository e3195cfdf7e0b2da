"""Shared pieces of the connector integration tests: mosquitto, the connectors, the topic.

Every test runs one asyncio scenario (``asyncio.run``): the in-process OPC UA and
Modbus servers, the connectors and the checks share its loop; the Kafka topic is read
with kafka-python in a worker thread.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from worker_harness import TopicReader

from twinstream.broker import free_port, wait_for_port
from twinstream.connectors.config import parse_config
from twinstream.connectors.runner import Connectors
from twinstream.processes import stop_process
from twinstream.schemas.telemetry import Telemetry
from twinstream.schemas.topics import TELEMETRY
from twinstream.settings import Settings
from twinstream.streams.topic_admin import ensure_topics


def mosquitto_binary() -> str:
    """Debian's mosquitto (in /usr/sbin, not always on PATH); skip or fail as the other servers do."""
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        reason = "mosquitto not found: install it with `apt-get install -y mosquitto`"
        if os.environ.get("TWINSTREAM_REQUIRE_SERVERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


class Mosquitto:
    """A private mosquitto on a free loopback port, persisting sessions to its directory."""

    def __init__(self, directory: Path) -> None:
        self.binary = mosquitto_binary()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        conf = directory / "mosquitto.conf"
        conf.write_text(
            # user: run as root, mosquitto would otherwise switch to its own user, who cannot write here
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nautosave_interval 1\nlog_dest file {directory}/mosquitto.log\n"
        )
        self.conf = conf

    def start(self) -> Mosquitto:
        self.process = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 10.0, self.process)
        return self

    def stop(self) -> None:
        stop_process(self.process, timeout_s=10)  # SIGTERM: mosquitto writes its persistence file
        self.process = None


def telemetry_topic(bootstrap: str) -> str:
    """A fresh namespace's telemetry topic, created on the broker."""
    namespace = f"c{uuid.uuid4().hex[:10]}"
    spec = TELEMETRY.in_namespace(namespace).with_partitions(2)
    ensure_topics(Settings(broker=f"kafka://{bootstrap}", topic_namespace=namespace), specs=[spec])
    return spec.name


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    """Wait for ``condition`` with a deadline; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(step_s)


class Topic:
    """The telemetry topic as read so far; every message validated against :class:`Telemetry`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.reader = TopicReader(bootstrap, topic)
        self.samples: list[Telemetry] = []

    async def poll(self) -> int:
        before = len(self.reader.messages)
        await asyncio.to_thread(self.reader.poll, 200)
        for message in self.reader.messages[before:]:
            sample = Telemetry.model_validate_json(message.value)
            assert message.key == sample.entity_id.encode(), "keyed by entity id"
            self.samples.append(sample)
        return len(self.samples)

    async def wait_for(self, predicate: Callable[[list[Telemetry]], bool], timeout_s: float, what: str) -> list[Telemetry]:
        async def check() -> bool:
            await self.poll()
            return predicate(self.samples)

        await until(check, timeout_s, what, step_s=0.0)
        return self.samples

    def close(self) -> None:
        self.reader.close()


def assert_exactly_once(samples: list[Telemetry]) -> None:
    """No (entity, seq) twice, and each entity's seqs are 0..n-1 with no gap."""
    counts = Counter((s.entity_id, s.seq) for s in samples)
    duplicates = [key for key, n in counts.items() if n > 1]
    assert not duplicates, f"(entity, seq) delivered more than once: {duplicates[:5]}"
    by_entity: dict[str, list[int]] = {}
    for s in samples:
        by_entity.setdefault(s.entity_id, []).append(s.seq)
    for entity, seqs in by_entity.items():
        assert sorted(seqs) == list(range(len(seqs))), f"{entity}: seqs {sorted(seqs)[:10]}... not 0..{len(seqs) - 1}"


@asynccontextmanager
async def running_connectors(raw_config: dict[str, Any], bootstrap: str, topic: str, state_dir: Path) -> AsyncIterator[Connectors]:
    """The connectors of ``raw_config`` running in this loop (buffer in ``state_dir``)."""
    raw = {"buffer": {"path": str(state_dir / "connectors.sqlite")},
           "kafka": {"request_timeout_s": 3.0, "reconnect": {"initial_s": 0.2, "max_s": 1.0}}, **raw_config}
    connectors = Connectors(parse_config(raw), bootstrap, topic)
    task = asyncio.create_task(connectors.run())
    try:
        yield connectors
    finally:
        connectors.stop.set() if hasattr(connectors, "stop") else None
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
