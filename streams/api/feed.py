"""The predictions topic, followed by the API: last prediction per twin and task, recent history, live subscribers.

Why a consumer of the topic and not a hook in the ingest agent: a prediction counts as
published when the broker has it, which is what the topic shows; the reader survives
rebalances unchanged (it reads every partition, without a consumer group), and a
worker that takes over a partition already knows its twins' recent predictions.
It starts ``lookback`` records before the end of each partition, so after a restart
the API shows the predictions of that tail; older ones are not re-read.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from twinstream.streams.api.summary import task_key

log = logging.getLogger(__name__)

Prediction = dict[str, Any]
FETCH_RECORDS = 500
YIELD_EVERY = 100


class PredictionFeed:
    """Keeps, per entity, the last prediction of each task and the last ``history`` predictions."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        history: int = 256,
        lookback: int = 5000,
        max_entities: int = 100_000,
        on_prediction: Callable[[int, Prediction], None] | None = None,
        security: dict[str, Any] | None = None,
    ) -> None:
        """``security``: :func:`twinstream.kafka_security.client_options` (TLS / SASL); None: plaintext."""
        self.bootstrap_servers = bootstrap_servers
        self.security = security or {}
        self.topic = topic
        self.history = history
        self.lookback = lookback
        self.max_entities = max_entities
        self.on_prediction = on_prediction
        self.last: OrderedDict[str, dict[str, Prediction]] = OrderedDict()
        self.recent: dict[str, deque[Prediction]] = {}
        self.subscribers: dict[str, set[asyncio.Queue[Prediction]]] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="twinstream-api-feed",
            **self.security,
        )
        await self.consumer.start()
        partitions: set[int] = set()
        for _ in range(50):
            partitions = self.consumer.partitions_for_topic(self.topic) or set()
            if partitions:
                break
            await self.consumer._client.force_metadata_update()
            await asyncio.sleep(0.2)
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        if tps:
            begin = await self.consumer.beginning_offsets(tps)
            end = await self.consumer.end_offsets(tps)
            for tp in tps:
                self.consumer.seek(tp, max(begin[tp], end[tp] - self.lookback))
        self._task = asyncio.create_task(self._run(), name="twinstream-api-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        if self.consumer is not None:
            await self.consumer.stop()

    async def _run(self) -> None:
        assert self.consumer is not None
        while True:
            try:
                batches = await self.consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broker outage: keep serving what we know, retry
                log.warning("prediction feed: fetch from topic=%s failed (%s); retrying", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for tp, messages in batches.items():
                for index, message in enumerate(messages):
                    if index % YIELD_EVERY == YIELD_EVERY - 1:
                        await asyncio.sleep(0)  # let requests in: this loop also serves the API
                    try:
                        prediction = orjson.loads(message.value)
                    except orjson.JSONDecodeError:
                        log.warning(
                            "prediction feed: unreadable record topic=%s partition=%d offset=%d", tp.topic, tp.partition, message.offset
                        )
                        continue
                    if isinstance(prediction, dict) and isinstance(prediction.get("entity_id"), str):
                        self.add(prediction, tp.partition)
            if not batches:
                self.caught_up.set()

    def add(self, prediction: Prediction, partition: int = 0) -> None:
        """Record one prediction and hand it to the entity's subscribers (redeliveries are skipped)."""
        entity = prediction["entity_id"]
        key = task_key(prediction)
        slots = self.last.get(entity)
        if slots is None:
            slots = self.last[entity] = {}
            if len(self.last) > self.max_entities:
                old, _ = self.last.popitem(last=False)
                self.recent.pop(old, None)
        else:
            self.last.move_to_end(entity)
        previous = slots.get(key)
        if previous is not None and previous.get("seq", -1) >= prediction.get("seq", -1):
            return  # a redelivered prediction (at-least-once): already known
        slots[key] = prediction
        self.recent.setdefault(entity, deque(maxlen=self.history)).append(prediction)
        if self.on_prediction is not None:
            self.on_prediction(partition, prediction)
        for queue in self.subscribers.get(entity, ()):
            if queue.full():
                continue  # a stalled client: it resumes from Last-Event-ID after reconnecting
            queue.put_nowait(prediction)

    def since(self, entity: str, seq: int) -> list[Prediction]:
        """Remembered predictions of ``entity`` after sequence number ``seq``, in order."""
        return sorted((p for p in self.recent.get(entity, ()) if p.get("seq", -1) > seq), key=lambda p: p.get("seq", -1))

    def subscribe(self, entity: str) -> asyncio.Queue[Prediction]:
        queue: asyncio.Queue[Prediction] = asyncio.Queue(maxsize=1024)
        self.subscribers.setdefault(entity, set()).add(queue)
        return queue

    def unsubscribe(self, entity: str, queue: asyncio.Queue[Prediction]) -> None:
        queues = self.subscribers.get(entity)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[entity]
