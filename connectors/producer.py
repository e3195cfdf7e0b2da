"""Send telemetry to Kafka at a chosen rate (or as fast as possible) with progress.

Shared by every replay-style connector: they produce ``(key, value)`` pairs and this
module handles batching, pacing and delivery confirmation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class KeyedMessage(Protocol):
    @property
    def key(self) -> bytes: ...

    @property
    def value(self) -> bytes: ...


async def send_all(
    bootstrap_servers: str,
    topic: str,
    messages: Sequence[KeyedMessage],
    *,
    rate: float = 0.0,
    show_progress: bool = True,
    description: str = "replay",
    on_sent: Callable[[int], None] | None = None,
    next_offsets: dict[int, int] | None = None,
    security: dict[str, Any] | None = None,
) -> int:
    """Send every message, keyed, confirming delivery; ``rate`` <= 0 means unthrottled.

    Returns the number of messages the broker acknowledged (all of them, or it raises).
    ``next_offsets``, when given, is filled with partition -> offset after the last
    message sent there, from the broker's own acknowledgements (exact even where a
    broker's reported end offsets are not). ``security``: :func:`twinstream.kafka_security.client_options`.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        linger_ms=10,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=False,  # the embedded broker rejects idempotent producers
        **(security or {}),
    )
    await producer.start()
    started = time.monotonic()
    futures: list[asyncio.Future] = []
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} ev/s"), TimeRemainingColumn(),
        disable=not show_progress, transient=False,
    )
    try:
        with progress:
            task = progress.add_task(description, total=len(messages), rate=0.0)
            for index, message in enumerate(messages, start=1):
                futures.append(await producer.send(topic, message.value, key=message.key))
                if rate > 0:
                    ahead = index / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
                if on_sent is not None:
                    on_sent(index)
                if index % 1000 == 0 or index == len(messages):
                    elapsed = max(time.monotonic() - started, 1e-9)
                    progress.update(task, completed=index, rate=index / elapsed)
            await producer.flush()
            delivered = await asyncio.gather(*futures)
            if next_offsets is not None:
                for metadata in delivered:
                    next_offsets[metadata.partition] = max(next_offsets.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return len(futures)
