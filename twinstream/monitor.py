"""Read the prediction and dead-letter topics back: counts, last predictions, lag.

Used by the demo to know when every event has been processed and to score the
twins, and usable as a live monitor: it only reads, with no consumer group.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass
class OutputTally:
    """What has arrived on the output topics so far."""

    predictions_raw: int = 0
    dead_letters: int = 0
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    seen: set[tuple[str, int]] = field(default_factory=set)
    last_value: dict[str, tuple[int, float]] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    first_at: float | None = None
    last_at: float | None = None

    @property
    def predictions(self) -> int:
        """Distinct (entity, seq) predictions (duplicates after a crash count once)."""
        return len(self.seen)

    @property
    def processed(self) -> int:
        return self.predictions + self.dead_letters

    @property
    def entities(self) -> int:
        return len(self.last_value)

    def add_prediction(self, payload: bytes, keep_history: Callable[[str], bool]) -> None:
        data = orjson.loads(payload)
        entity, seq, value = data["entity_id"], int(data["seq"]), float(data["value"])
        self.predictions_raw += 1
        self.seen.add((entity, seq))
        previous = self.last_value.get(entity)
        if previous is None or seq >= previous[0]:
            self.last_value[entity] = (seq, value)
        if keep_history(entity):
            self.history.setdefault(entity, []).append((seq, value))

    def add_dead_letter(self, payload: bytes) -> None:
        reason = str(orjson.loads(payload).get("reason", "unknown"))
        self.dead_letters += 1
        self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + 1


async def tally_outputs(
    bootstrap_servers: str,
    predictions_topic: str,
    dlq_topic: str,
    expected: int,
    *,
    timeout_s: float,
    keep_history: Callable[[str], bool] = lambda _: False,
    on_progress: Callable[[OutputTally], None] | None = None,
    security: dict[str, Any] | None = None,
) -> OutputTally:
    """Read both topics from the beginning until ``expected`` events are accounted for.

    Raises ``TimeoutError`` (with the counts so far) when they do not arrive in time.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_bytes=16 * 1024 * 1024, **(security or {}))
    await consumer.start()
    tally = OutputTally()
    try:
        await consumer.topics()  # refresh metadata (the topics were created before)
        partitions = []
        for topic in (predictions_topic, dlq_topic):
            found = consumer.partitions_for_topic(topic)
            if not found:
                raise RuntimeError(f"topic {topic} does not exist; run `twinstream topics create`")
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        while tally.processed < expected:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {tally.processed} of {expected} events accounted for after {timeout_s:.0f} s "
                    f"({tally.predictions} predictions, {tally.dead_letters} dead letters)"
                )
            batches = await consumer.getmany(timeout_ms=500, max_records=10000)
            now = time.monotonic()
            for tp, messages in batches.items():
                if not messages:
                    continue
                if tally.first_at is None:
                    tally.first_at = now
                tally.last_at = now
                for message in messages:
                    if tp.topic == predictions_topic:
                        tally.add_prediction(message.value, keep_history)
                    else:
                        tally.add_dead_letter(message.value)
            if on_progress is not None:
                on_progress(tally)
    finally:
        await consumer.stop()
    return tally
