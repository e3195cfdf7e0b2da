"""The worker's side of the twin API: publish twin states and group state to the API process, take its reports.

Cost to the worker, bounded by twins rather than events: every ``SNAPSHOT_INTERVAL_S``
the worker's loop computes the state document (:func:`twin_state`) of each twin the
batches since the last tick touched, once per twin however many events it took, and
hands the list to a sender thread, which pickles it and writes it to the API process.
Checkpointed twins that no batch has touched since a rebalance are sent as their
checkpoint bytes (read from the table's store, never unpickled here), in chunks; the
API process reads one when it is first asked for. What comes back (the API's request
metrics, the in-domain flags of predictions, requests for the worker's metrics text)
is handled on a receiver thread, outside the worker's loop.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
from collections.abc import Iterable, Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest

from twinstream.streams.api.routing import Ownership
from twinstream.streams.api.summary import twin_state
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.output import partition_for
from twinstream.streams.records import Record

if TYPE_CHECKING:
    from twinstream.streams.health import HealthProbe
    from twinstream.streams.ingest import IngestAgent

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 0.25  # how stale a summary may be, beyond the batch being applied
BACKFILL_BYTES_PER_TICK = 4 * 1024 * 1024
MAX_QUEUED = 8  # messages waiting for the sender thread; beyond it a tick keeps its twins for the next one


class SnapshotPublisher:
    """Collects the twins each batch touched; on every tick sends their states and any change of ownership."""

    def __init__(self, agent: IngestAgent, metrics: WorkerMetrics, probe: HealthProbe | None = None) -> None:
        self.agent = agent
        self.metrics = metrics
        self.probe = probe
        self.touched: dict[str, int] = {}  # entity id -> partition, since the last tick
        # Published before a checkpoint wrote them (entity id -> partition, checkpoint number
        # then): published once more after the next checkpoint, for their stored size.
        self.unsized: dict[str, tuple[int, int]] = {}
        self.conn: Connection | None = None
        self.outbox: queue.Queue[Any] = queue.Queue()
        self.sent_ownership: Ownership | None = None
        self.loaded_generation: int | None = None
        self.backfill: Iterator[tuple[str, int, bytes]] | None = None
        self.published: set[str] = set()  # sent as states since the backfill began
        self.telemetry_topic = agent.telemetry.get_topic_name()
        self.changelog_topic = agent.table.changelog_topic.get_topic_name()

    # --- the worker's loop ----------------------------------------------------------------
    def on_batch(self, records: Iterable[Record]) -> None:
        """Ingest hook after each batch: remember which twins it touched (one dict write per event)."""
        touched = self.touched
        for record in records:
            if record.key:
                touched[record.key.decode(errors="replace")] = record.partition

    def attach(self, conn: Connection) -> None:
        """Start talking to the API process over ``conn``."""
        self.conn = conn
        threading.Thread(target=self._send_loop, name="twinstream-api-send", daemon=True).start()
        threading.Thread(target=self._receive_loop, name="twinstream-api-receive", daemon=True).start()

    async def tick(self) -> None:
        """Publish what changed since the last tick (a Faust timer: runs between batches)."""
        if self.conn is None or self.outbox.qsize() >= MAX_QUEUED:
            return  # the API process is behind: the touched twins wait for the next tick
        ownership = self._ownership()
        if ownership != self.sent_ownership:
            self.outbox.put(("own", ownership))
            self.sent_ownership = ownership
        if ownership.rebalancing:
            self.touched.clear()  # the cache was dropped; the backfill after the rebalance covers these twins
            return
        states = self._states()
        if states:
            self.outbox.put(("states", states))
        blobs = self._backfill_chunk()
        if blobs:
            self.outbox.put(("states", blobs))

    def _ownership(self) -> Ownership:
        agent = self.agent
        try:
            owned = frozenset(tp.partition for tp in agent.app.consumer.assignment() if tp.topic == self.telemetry_topic)
        except Exception:  # the consumer is not started yet
            owned = frozenset()
        distribution = {
            str(url).rstrip("/"): tuple(sorted(topics.get(self.changelog_topic, ())))
            for url, topics in agent.app.assignor.changelog_distribution.items()
        }
        rebalancing = agent.rebalancing
        if not rebalancing and self.loaded_generation != agent.generation and self.backfill is None:
            self.backfill = self._checkpointed(owned)
            self.published = set()
            self.loaded_generation = agent.generation
        elif rebalancing:
            self.backfill, self.loaded_generation = None, None
        loaded = not rebalancing and self.backfill is None and self.loaded_generation == agent.generation
        return Ownership(rebalancing=rebalancing, owned=owned, distribution=distribution, loaded=loaded)

    def _states(self) -> list[tuple[str, int, dict[str, Any]]]:
        fresh, self.touched = self.touched, {}
        checkpoint = self.agent.checkpoint_number
        touched = dict(fresh)
        for entity_id, (partition, published_at) in list(self.unsized.items()):
            if published_at < checkpoint:  # checkpointed since: publish its stored size
                touched.setdefault(entity_id, partition)
                del self.unsized[entity_id]
        twins = self.agent.processor.twins
        out = []
        for entity_id, partition in touched.items():
            twin = twins.get(entity_id)
            if twin is None:  # dead-lettered before it had a twin, or evicted from the cache
                continue
            blob = self._read(partition, entity_id.encode())
            out.append((entity_id, partition, twin_state(twin, len(blob) if blob is not None else 0)))
            self.published.add(entity_id)
            if entity_id in fresh:
                self.unsized[entity_id] = (partition, checkpoint)
        return out

    def _backfill_chunk(self) -> list[tuple[str, int, bytes]]:
        if self.backfill is None:
            return []
        out, size = [], 0
        cached = self.agent.processor.twins
        for entity_id, partition, blob in self.backfill:
            if entity_id in cached or entity_id in self.published:
                continue  # its live state is (or will be) published
            out.append((entity_id, partition, blob))
            size += len(blob)
            if size >= BACKFILL_BYTES_PER_TICK:
                return out
        self.backfill = None  # done: the next ownership says loaded
        return out

    def _checkpointed(self, owned: frozenset[int]) -> Iterator[tuple[str, int, bytes]]:
        """Every checkpointed twin of the owned partitions (entity keys only: markers start with ``_``)."""
        data = self.agent.table.data
        db_for_partition = getattr(data, "_db_for_partition", None)
        if db_for_partition is not None:  # RocksDB: one database per partition
            for partition in sorted(owned):
                for key, blob in db_for_partition(partition).items():
                    if _is_entity_key(key) and isinstance(blob, bytes):
                        yield key.decode(errors="replace"), partition, blob
            return
        partitions = self.agent.settings.partitions
        for key, blob in list(data.items()):
            if _is_entity_key(key) and isinstance(blob, bytes):
                partition = partition_for(key, partitions, iter(()))
                if partition in owned:
                    yield key.decode(errors="replace"), partition, blob

    def _read(self, partition: int, key: bytes) -> bytes | None:
        db_for_partition = getattr(self.agent.table.data, "_db_for_partition", None)
        if db_for_partition is None:
            return self.agent.table.data.get(key)
        return db_for_partition(partition).get(key)

    # --- threads ----------------------------------------------------------------------------
    def _send_loop(self) -> None:
        assert self.conn is not None
        while True:
            message = self.outbox.get()
            try:
                self.conn.send(message)
            except (OSError, ValueError):
                return  # the receiver notices the API process is gone

    def _receive_loop(self) -> None:
        assert self.conn is not None
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                log.critical("twin API process stopped; stopping the worker")
                os.kill(os.getpid(), signal.SIGTERM)  # the worker must not live on without its API
                return
            try:
                self.handle(message)
            except Exception:  # a bad report must not stop the reports that follow
                log.exception("twin API: could not handle a message from the API process")

    def handle(self, message: tuple[Any, ...]) -> None:
        """One message from the API process: a report of requests and in-domain flags, or a metrics request."""
        if message[0] == "report":
            _, requests, domain = message
            for route, method, status, seconds in requests:
                self.metrics.api_requests.labels(route, method, str(status)).inc()
                self.metrics.api_request_seconds.labels(route).observe(seconds)
            if self.probe is not None:
                for partition, kind, flag in domain:
                    self.probe.on_prediction(partition, {"kind": kind, "in_domain": flag})
        elif message[0] == "metrics?":
            self.outbox.put(("metrics", message[1], generate_latest(self.metrics.registry)))


def _is_entity_key(key: object) -> bool:
    """Entity ids start with a letter or digit; checkpoint markers and Faust's offset key with ``_``."""
    return isinstance(key, bytes) and bool(key) and key[:1] != b"_"
