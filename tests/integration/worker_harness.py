"""Start and stop real worker processes, and read the output topics, for integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition

from twinstream.demo_gaps import committed_up_to  # one committed-offsets check for the demo and the tests
from twinstream.models.twin import Twin
from twinstream.processes import stop_process


class WorkerProcess:
    """``python -m twinstream.streams.worker`` (or another ``module``, e.g. the sidecar) with its own env and log."""

    def __init__(self, env: dict[str, str], log_path: Path, module: str = "twinstream.streams.worker") -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.module = module
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                        stdout=log, stderr=log)
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit, no flush."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        stop_process(self.process, timeout_s=20)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


class TopicReader:
    """Reads a topic from the beginning, incrementally, without a consumer group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                      auto_offset_reset="earliest")
        partitions = self.consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + 15
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            self.consumer.topics()
            partitions = self.consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} has no partitions"
        self.tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(self.tps)
        self.consumer.seek_to_beginning(*self.tps)
        self.messages: list = []

    def poll(self, timeout_ms: int = 300) -> int:
        for batch in self.consumer.poll(timeout_ms=timeout_ms, max_records=20000).values():
            self.messages.extend(batch)
        return len(self.messages)

    def read_to_end(self, timeout_ms: int = 1000) -> int:
        """Poll until a poll brings nothing new (the embedded broker under-reports end offsets)."""
        before = -1
        while before != len(self.messages):
            before = len(self.messages)
            self.poll(timeout_ms)
        return len(self.messages)

    def values(self) -> list[dict]:
        return [orjson.loads(m.value) for m in self.messages]

    def close(self) -> None:
        self.consumer.close()


def wait_until(predicate: Callable[[], object], timeout_s: float, what: str | Callable[[], str], poll_s: float = 0.2) -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout_s`` naming ``what`` (a callable: evaluated only then,
    so it can show state such as a log tail at the moment of the failure)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what() if callable(what) else what}")
        time.sleep(poll_s)


def latest_twins_from_changelog(bootstrap: str, changelog_topic: str) -> dict[str, Twin]:
    """The last checkpointed twin of every entity, as recovery would rebuild it."""
    reader = TopicReader(bootstrap, changelog_topic)
    end = reader.consumer.end_offsets(reader.tps)  # may be short of the true end (embedded broker)
    while any(reader.consumer.position(tp) < end[tp] for tp in reader.tps):
        reader.poll(500)
    reader.read_to_end()
    latest: dict[str, Twin] = {}
    for message in reader.messages:
        if message.value is not None:
            key = message.key.decode()
            if not key.startswith("__"):  # checkpoint markers
                latest[key] = Twin.from_bytes(message.value)
    reader.close()
    return latest


def committed_all(bootstrap: str, group: str, topic: str, next_offsets: dict[int, int]) -> bool:
    """Whether the consumer group has committed up to ``next_offsets`` (partition -> offset).

    The expected offsets come from the producer's acknowledgements, not from the
    broker's end offsets, which the embedded broker under-reports.
    """
    return committed_up_to(bootstrap, group, {(topic, p): end for p, end in next_offsets.items()})


def prediction_keys(values: list[dict]) -> Counter:
    return Counter((v["entity_id"], v["seq"]) for v in values)


def where_missing(bootstrap: str, telemetry_topic: str, missing: set[tuple[str, int]], shown: int = 20) -> str:
    """The (entity, seq) pairs without a prediction, with their input partition and offset, for a failure message.

    Why: a missing prediction is a lost event or one skipped as already applied; which
    partition and offsets it sits at tells the worker log's lines to read.
    """
    reader = TopicReader(bootstrap, telemetry_topic)
    reader.read_to_end()
    where: dict[tuple[str, int], tuple[int, int]] = {}
    for message in reader.messages:
        value = orjson.loads(message.value)
        where[(value["entity_id"], value["seq"])] = (message.partition, message.offset)
    reader.close()
    placed = sorted((where.get(key, (-1, -1)), key) for key in missing)
    per_partition = Counter(partition for (partition, _), _ in placed)
    lines = [f"{key} at partition {partition} offset {offset}" if partition >= 0 else f"{key} not in the input"
             for (partition, offset), key in placed[:shown]]
    return (f"{len(missing)} (entity, seq) pairs without a prediction, per input partition {dict(per_partition)}; "
            f"first ones: " + "; ".join(lines))
