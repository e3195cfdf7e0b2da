"""The processor's twins in memory: what a checkpoint writes, idle ones evicted, all dropped on a rebalance.

Why a module of its own: it is the part of :class:`~twinstream.streams.processor.TwinProcessor`
that the ingest agent drives at checkpoints and rebalances, apart from the batch path
that fills the cache; the processor inherits it.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from twinstream.models.twin import Twin
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.twin_journal import TwinJournal

log = logging.getLogger("twinstream.streams.processor")


class TwinCacheUpkeep:
    """Methods of :class:`~twinstream.streams.processor.TwinProcessor` for its twins in memory."""

    settings: Settings
    metrics: WorkerMetrics
    clock: Callable[[], datetime]
    twins: dict[str, Twin]
    touched: OrderedDict[str, float]
    partition_of: dict[str, int]
    dirty: set[str]
    journal: TwinJournal

    def take_dirty(self) -> dict[int, list[tuple[str, bytes]]]:
        """Serialized dirty twins grouped by partition, for a checkpoint; clears the dirty set."""
        grouped: dict[int, list[tuple[str, bytes]]] = {}
        for entity_id in self.dirty:
            blob = self.twins[entity_id].to_bytes()
            self.journal.checkpointed(entity_id, blob)
            grouped.setdefault(self.partition_of[entity_id], []).append((entity_id, blob))
        self.dirty.clear()
        self.journal.records.clear()  # a twin that is not dirty is its base: nothing to replay
        if self.settings.twin_idle_evict_s > 0:
            self.evict_idle()
        return grouped

    def evict_idle(self) -> int:
        """Drop twins idle for ``twin_idle_evict_s`` (by ``clock``) and not dirty; returns how many.

        Why: a fleet of a million entities, most of them quiet at any time, need not stay
        resident. A twin leaves memory only when its state needs no checkpoint (not dirty):
        :meth:`take_dirty` evicts right after serializing every changed twin, and the
        agent's ``load_twin`` answers from those bytes until they are in the table, so the
        twin reloads its latest state on its next event.
        """
        horizon = self.clock().timestamp() - self.settings.twin_idle_evict_s
        idle: list[str] = []
        for entity_id, seen in self.touched.items():  # oldest first
            if seen > horizon:
                break
            if entity_id not in self.dirty:
                idle.append(entity_id)
        for entity_id in idle:
            del self.touched[entity_id]
            self.twins.pop(entity_id, None)
            self.partition_of.pop(entity_id, None)
            self.journal.base.pop(entity_id, None)
            self.journal.records.pop(entity_id, None)
        if idle:
            self.metrics.twins.set(len(self.twins))
            log.debug("evicted %d twins idle for %.0f s; %d stay in memory", len(idle), self.settings.twin_idle_evict_s,
                      len(self.twins))
        return len(idle)

    def drop_all(self) -> int:
        """Forget every cached twin (after a rebalance); their checkpointed state lives on in the table."""
        dropped = len(self.twins)
        self.twins.clear()
        self.touched.clear()
        self.partition_of.clear()
        self.dirty.clear()
        self.journal.clear()
        self.metrics.twins.set(0)
        return dropped
