"""The processor's twins in memory: what a checkpoint writes, idle ones evicted, all dropped on a rebalance.

Why a module of its own: it is the part of :class:`~twinstream.streams.processor.TwinProcessor`
that the ingest agent drives at checkpoints and rebalances, apart from the batch path
that fills the cache; the processor inherits it.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime

from twinstream.models.twin import Twin
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.twin_journal import TwinJournal

log = logging.getLogger("twinstream.streams.processor")


class TwinSnapshot:
    """A checkpoint's twins: the entities it waits for, and the bytes of those pickled so far.

    >>> snapshot = TwinSnapshot({"e1": 0})
    >>> snapshot.blobs["e1"], snapshot.partitions["e1"] = b"state", snapshot.pending.pop("e1")
    >>> snapshot.complete, snapshot.by_partition()
    (True, {0: [('e1', b'state')]})
    """

    def __init__(self, pending: dict[str, int]) -> None:
        self.pending = pending  # entity -> partition, still to pickle
        self.blobs: dict[str, bytes] = {}  # entity -> state as of the snapshot
        self.partitions: dict[str, int] = {}

    @property
    def complete(self) -> bool:
        return not self.pending

    def written(self) -> None:
        """Its bytes are in the table now: let them go (a reload or an undo reads them there)."""
        self.blobs = {}
        self.partitions = {}

    def by_partition(self) -> dict[int, list[tuple[str, bytes]]]:
        grouped: dict[int, list[tuple[str, bytes]]] = {}
        for entity_id, blob in self.blobs.items():
            grouped.setdefault(self.partitions[entity_id], []).append((entity_id, blob))
        return grouped


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
    snapshot: TwinSnapshot  # the latest checkpoint's twins; complete once none is pending
    load_twin: Callable[[str], bytes | None]  # a twin's bytes in the table (None: not there)

    def take_dirty(self) -> dict[int, list[tuple[str, bytes]]]:
        """Serialized dirty twins grouped by partition, all at once; clears the dirty set.

        A checkpoint uses :meth:`begin_snapshot` instead, which spreads the pickling.
        """
        snapshot = self.begin_snapshot()
        self.snapshot_some(len(snapshot.pending))
        return snapshot.by_partition()

    def begin_snapshot(self) -> TwinSnapshot:
        """The dirty twins as of now, for a checkpoint; clears the dirty set, pickles nothing yet.

        Why not pickle them here: the checkpoint's snapshot is taken where the agent stands,
        and pickling a thousand twins there held it for about a tenth of a second per
        checkpoint, a stall every event arriving meanwhile waited out (docs/performance.md).
        Instead each twin is pickled before its next change (:meth:`twin`), before it is
        evicted, or by :meth:`snapshot_some` in slices between batches; whichever comes
        first, the bytes are its state as of now. The previous snapshot must be complete.
        """
        if self.snapshot.pending:
            raise RuntimeError("a snapshot began while the previous one was incomplete")
        self.snapshot = TwinSnapshot({entity_id: self.partition_of[entity_id] for entity_id in self.dirty})
        self.dirty.clear()
        # A twin that is neither dirty nor pending is its base: nothing to replay. A pending
        # twin keeps its records until it is pickled (an undo before that needs them).
        for entity_id in [e for e in self.journal.records if e not in self.snapshot.pending]:
            del self.journal.records[entity_id]
        if self.settings.twin_idle_evict_s > 0:
            self.evict_idle()
        return self.snapshot

    def snapshot_some(self, limit: int) -> bool:
        """Pickle up to ``limit`` twins the snapshot still waits for; True once none is left."""
        pending = self.snapshot.pending
        for entity_id in list(itertools.islice(pending, limit)):
            self._keep_in_snapshot(entity_id)
        return not pending

    def twins_about_to_change(self) -> list[Twin]:
        """Every cached twin, for a change outside the batch path (a prior swap): the snapshot gets their states first."""
        self.snapshot_some(len(self.snapshot.pending))
        return list(self.twins.values())

    def _keep_in_snapshot(self, entity_id: str) -> None:
        """Pickle a pending twin into the snapshot: its state as of the snapshot, as it has not changed since."""
        snapshot = self.snapshot
        partition = snapshot.pending.pop(entity_id)
        twin = self.twins.get(entity_id)
        if twin is None:  # dropped by a rebalance: that checkpoint writes nothing
            return
        blob = twin.to_bytes()
        self.journal.checkpointed(entity_id)  # the snapshot holds its bytes, then the table
        snapshot.blobs[entity_id] = blob
        snapshot.partitions[entity_id] = partition

    def _checkpointed_bytes(self, entity_id: str) -> bytes | None:
        """The twin's state its journal's records follow: folded bytes, the snapshot's, else the table's (None: new).

        The snapshot's come first: its bytes may not be in the table yet. A twin not in it
        was last checkpointed by an earlier checkpoint, whose writes ended before this one
        began, or was loaded from the table, or is new and in neither.
        """
        blob = self.journal.folded.get(entity_id) or self.snapshot.blobs.get(entity_id)
        return blob if blob is not None else self.load_twin(entity_id)

    def evict_idle(self) -> int:
        """Drop twins idle for ``twin_idle_evict_s`` (by ``clock``) and not dirty; returns how many.

        Why: a fleet of a million entities, most of them quiet at any time, need not stay
        resident. A twin leaves memory only when its state needs no checkpoint (not dirty):
        :meth:`begin_snapshot` evicts once the dirty twins are the snapshot's, pickling
        first an idle twin the snapshot still waits for, and the agent's ``load_twin``
        answers from those bytes until they are in the table, so the twin reloads its
        latest state on its next event.
        """
        horizon = self.clock().timestamp() - self.settings.twin_idle_evict_s
        idle: list[str] = []
        for entity_id, seen in self.touched.items():  # oldest first
            if seen > horizon:
                break
            if entity_id not in self.dirty:
                idle.append(entity_id)
        for entity_id in idle:
            if entity_id in self.snapshot.pending:  # its bytes first: the checkpoint and a reload need them
                self._keep_in_snapshot(entity_id)
            del self.touched[entity_id]
            self.twins.pop(entity_id, None)
            self.partition_of.pop(entity_id, None)
            self.journal.forget(entity_id)
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
        self.snapshot = TwinSnapshot({})  # a checkpoint straddling the rebalance writes nothing
        self.journal.clear()
        self.metrics.twins.set(0)
        return dropped
