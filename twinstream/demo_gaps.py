"""The demo's gap (``twinstream demo``, ``DemoOptions.gaps``): blank a sensor, hold back, read the outcome back.

Why a module of its own: the demo shows gap filling on a replay far faster than a live
fleet, which takes more than blanking a sensor: the gapped engine's later cycles wait for
the sidecar's first fill, and the outcome is read back from the gaps, synthetic and
predictions topics and checked against what was sent (no fill over a measured value, no
prediction with more synthetic input than was missing). :mod:`twinstream.demo` runs it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from twinstream.connectors.cmapss_replay import ReplayEvent
from twinstream.schemas.topics import GAPS, PREDICTIONS, SYNTHETIC, TELEMETRY
from twinstream.settings import Settings


@dataclass
class GapPlan:
    """The stretch the demo blanks: which entity, sensor and samples, and what share of each sample that is."""

    entity_id: str
    sensor: str
    seqs: list[int]
    missing_share: float  # 1 / number of metrics in a sample: the most synthetic input a gapped sample may take


def drop_sensor(events: list[ReplayEvent], entity_id: str, sensor: str, first: int, last: int
                ) -> tuple[list[ReplayEvent], GapPlan]:
    """The replay with ``sensor`` of ``entity_id`` set to null for seqs ``first..last``."""
    out: list[ReplayEvent] = []
    seqs: list[int] = []
    share = 0.0
    for event in events:
        if event.entity_id == entity_id and first <= event.seq <= last:
            body = orjson.loads(event.value)
            if sensor not in body["metrics"]:
                raise ValueError(f"{entity_id} has no sensor {sensor!r}")
            body["metrics"][sensor] = None
            share = 1.0 / len(body["metrics"])
            event = ReplayEvent(event.entity_id, event.seq, event.cycle, event.split, orjson.dumps(body))
            seqs.append(event.seq)
        out.append(event)
    if not seqs:
        raise ValueError(f"{entity_id} has no samples in seqs {first}..{last}")
    return out, GapPlan(entity_id, sensor, seqs, share)


def hold_back(events: list[ReplayEvent], plan: GapPlan) -> tuple[list[ReplayEvent], list[ReplayEvent]]:
    """(the replay without the gapped entity's samples after the gap's first one, those samples)."""
    first = plan.seqs[0]
    held = [e for e in events if e.entity_id == plan.entity_id and e.seq > first]
    return [e for e in events if not (e.entity_id == plan.entity_id and e.seq > first)], held


async def wait_for_fill(bootstrap_servers: str, topic: str, entity_id: str, *, timeout_s: float,
                        security: dict[str, Any] | None = None) -> tuple[str, int, int] | None:
    """The first synthetic fill for ``entity_id`` on ``topic`` as (topic, partition, offset); None after ``timeout_s``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **(security or {}))
    await consumer.start()
    key = entity_id.encode()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for tp, messages in batches.items():
                for message in messages:
                    if message.key == key:
                        return tp.topic, tp.partition, message.offset
        return None
    finally:
        await consumer.stop()


async def wait_for_commit(bootstrap_servers: str, group: str, position: tuple[str, int, int], *, timeout_s: float,
                          security: dict[str, Any] | None = None) -> bool:
    """True once ``group`` has committed past ``position`` (topic, partition, offset); False after ``timeout_s``.

    Why the demo waits for this and not only for the fill to be on its topic: the worker
    reads telemetry and fills from two topics, and nothing orders one topic's records
    against the other's. A held-back cycle sent as soon as the fill is on its topic can
    reach the twin first; the worker commits an offset only after the record is applied.
    """
    topic, partition, offset = position
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await asyncio.to_thread(committed_up_to, bootstrap_servers, group, {(topic, partition): offset + 1}, security):
            return True
        await asyncio.sleep(0.2)
    return False


@dataclass
class GapOutcome:
    """What the gaps, synthetic and predictions topics show about the demo's gap."""

    gaps: set[tuple[str, str, str, int | None]] = field(default_factory=set)  # distinct (entity, kind, sensors, first_seq)
    gap_closed: bool = False  # the closing message of the planned gap arrived
    fills_published: int = 0  # messages on the synthetic topic
    filled: set[int] = field(default_factory=set)  # planned seqs with a fill
    synthetic_seqs: set[int] = field(default_factory=set)  # seqs of the gapped entity predicted with synthetic_share > 0
    max_share: float = 0.0
    violations: list[str] = field(default_factory=list)  # fills over measured values, shares above what was missing


def committed_up_to(bootstrap_servers: str, group: str, ends: dict[tuple[str, int], int],
                    security: dict[str, Any] | None = None) -> bool:
    """Whether ``group`` has committed at least ``ends`` ((topic, partition) -> offset); blocking.

    The offsets come from the producer's acknowledgements and the messages read, not
    from the broker's end offsets (the embedded broker under-reports them).
    """
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KafkaTopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=group, enable_auto_commit=False, **(security or {}))
    try:
        return all((consumer.committed(KafkaTopicPartition(topic, p)) or 0) >= end for (topic, p), end in ends.items())
    finally:
        consumer.close()


async def read_gap_outputs(bootstrap_servers: str, namespace: str, plan: GapPlan | None, predictions_expected: int,
                           *, sidecar_group: str, telemetry_ends: dict[int, int], wait_s: float,
                           security: dict[str, Any] | None = None) -> GapOutcome:
    """Read gaps, fills and predictions back (no consumer group) and check them against the plan.

    Predictions are read until ``predictions_expected`` distinct (entity, seq) are seen
    (the demo has counted them on the topic already). Fills are read until the sidecar
    is done with the gap: its closing message is on the gaps topic and the sidecar's
    consumer group has committed every telemetry and gap message (it commits only
    after the fills they caused are on the synthetic topic), then to the end of the
    fills. Gives up on the fills after ``wait_s`` (what arrived is reported).
    """
    gaps_topic = GAPS.in_namespace(namespace).name
    fills_topic = SYNTHETIC.in_namespace(namespace).name
    predictions_topic = PREDICTIONS.in_namespace(namespace).name
    telemetry_topic = TELEMETRY.in_namespace(namespace).name
    gapped = set(plan.seqs) if plan else set()
    key = plan.entity_id.encode() if plan else None
    outcome = GapOutcome()
    seen: set[tuple[bytes | None, int]] = set()
    ends: dict[tuple[str, int], int] = {(telemetry_topic, p): end for p, end in telemetry_ends.items()}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_bytes=16 * 1024 * 1024, **(security or {}))
    await consumer.start()
    started = time.monotonic()
    sidecar_done = plan is None
    checked_at = 0.0
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for topic in (gaps_topic, fills_topic, predictions_topic)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            batches = await consumer.getmany(timeout_ms=300, max_records=10000)
            for tp, messages in batches.items():
                for message in messages:
                    data = orjson.loads(message.value)
                    entity, seq = data.get("entity_id"), data.get("seq")
                    if tp.topic == predictions_topic:
                        seen.add((message.key, seq))
                        share = float(data.get("synthetic_share", 0.0))
                        allowed = plan.missing_share if plan and message.key == key and seq in gapped else 0.0
                        if share > allowed + 1e-9:
                            outcome.violations.append(f"prediction {entity} seq {seq}: synthetic_share {share:.4f} "
                                                      f"> {allowed:.4f} missing")
                        if message.key == key and share > 0:
                            outcome.synthetic_seqs.add(seq)
                            outcome.max_share = max(outcome.max_share, share)
                    elif tp.topic == gaps_topic:
                        ends[(gaps_topic, tp.partition)] = max(ends.get((gaps_topic, tp.partition), 0), message.offset + 1)
                        sensors = ",".join(data.get("sensors") or ())
                        outcome.gaps.add((entity, data.get("kind"), sensors, data.get("first_seq")))
                        if plan and entity == plan.entity_id and sensors == plan.sensor and not data.get("open"):
                            outcome.gap_closed = True
                    else:
                        outcome.fills_published += 1
                        names = [n for n, v in (data.get("metrics") or {}).items() if v is not None]
                        if plan and entity == plan.entity_id and seq in gapped and names == [plan.sensor]:
                            outcome.filled.add(seq)
                        else:
                            outcome.violations.append(f"fill {entity} seq {seq} {names}: names a measured value")
            now = time.monotonic()
            if len(seen) >= predictions_expected:
                if sidecar_done and not batches:
                    break  # everything the sidecar published before its last commit has been read
                if not sidecar_done and outcome.gap_closed and now - checked_at >= 1.0:
                    checked_at = now
                    sidecar_done = await asyncio.to_thread(committed_up_to, bootstrap_servers, sidecar_group, ends, security)
                if not sidecar_done and now - started > wait_s:
                    break
            elif now - started > wait_s + 120.0:
                raise TimeoutError(f"read {len(seen)} of {predictions_expected} predictions back")
    finally:
        await consumer.stop()
    return outcome


def sidecar_group(settings: Settings) -> str:
    from twinstream.streams.sidecar import sidecar_app_id  # imports Faust: only when needed

    return sidecar_app_id(settings)
