"""How long the worker's consumer lets the broker hold a fetch: a bound on ingest latency.

Why: Faust creates its consumer with ``fetch_max_wait_ms=1500`` and no setting to change
it. Apache Kafka answers a fetch as soon as it has ``fetch_min_bytes`` (one byte), so
there the wait only matters when a topic is idle. The embedded broker sleeps before it
answers even a fetch whose records are ready, about half the wait, so a bare consumer's
latency grows with the wait (``benchmarks/fetch_wait.py``; docs/performance.md). A short
wait costs more fetches on a quiet topic: nothing on the in-memory broker or Apache
Kafka, but on the embedded broker's durable storage each fetch lists a partition's
objects, and at 50 ms those listings starved the broker's writes (produce requests timed
out in the broker-restart test). Hence a default of 500 ms, a third of Faust's, and 50 ms
where latency matters and the broker allows it. Setting: ``fetch_max_wait_ms``.
"""

from __future__ import annotations

from typing import Any

import faust

_ATTRIBUTE = "twinstream_fetch_max_wait_ms"


def set_fetch_max_wait(app: faust.App, max_wait_ms: int) -> None:
    """Make ``app``'s worker consumer wait at most ``max_wait_ms`` per fetch (other apps keep Faust's 1,500 ms)."""
    setattr(app, _ATTRIBUTE, max_wait_ms)
    _wrap_consumer_factory()


def _wrap_consumer_factory() -> None:
    """Wrap the aiokafka driver's worker-consumer factory once per process; it reads the app's wait."""
    from faust.transport.drivers import aiokafka as driver

    thread_class = driver.AIOKafkaConsumerThread
    current = thread_class._create_worker_consumer
    if getattr(current, "__twinstream_fetch_wait__", False):
        return

    def create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = current(self, transport)
        wait = getattr(self.app, _ATTRIBUTE, None)
        if wait is not None:
            consumer._fetch_max_wait_ms = int(wait)  # read when the consumer starts its fetcher
        return consumer

    create_worker_consumer.__twinstream_fetch_wait__ = True  # type: ignore[attr-defined]
    thread_class._create_worker_consumer = create_worker_consumer
