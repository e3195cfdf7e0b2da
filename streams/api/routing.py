"""Which worker owns an entity, and the twins this worker holds, as the API process sees them.

An entity's telemetry, twin and predictions share one partition number (the keyed
topics have the same partition count and Kafka's murmur2 placement). Faust's group
leader spreads, with every assignment, the map from each member's canonical URL to
the changelog partitions it holds as active; the worker sets its canonical URL to the
API's advertised URL, so that map tells where to send a request for any entity.

The API runs in a process of its own (:mod:`twinstream.streams.api.server` says why), so
it does not read the worker's twins: the worker publishes what the API needs
(:mod:`twinstream.streams.api.publisher`) and :class:`TwinDirectory` keeps the latest of
it. Updates arrive on a reader thread and replace whole values (one dict item, one
:class:`Ownership`), so the event loop never sees half of one.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from twinstream.models.twin import Twin
from twinstream.streams.api.summary import twin_state
from twinstream.streams.output import partition_for

_ROUND_ROBIN = itertools.count()  # unused: entity keys are never None


@dataclass(frozen=True)
class Ownership:
    """The worker's group state: recovering or not, its input partitions, every member's changelog partitions."""

    rebalancing: bool = True
    owned: frozenset[int] = frozenset()
    distribution: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # advertised URL -> partitions
    loaded: bool = False  # every owned partition's checkpointed twins have been published


class TwinDirectory:
    """The latest ownership and twin states the worker published; what the HTTP handlers read."""

    def __init__(self, self_url: str, partitions: int) -> None:
        self.self_url = self_url.rstrip("/")
        self.partitions = partitions
        self.ownership = Ownership()
        # entity id -> (partition, state document, or checkpoint bytes not yet read)
        self.entries: dict[str, tuple[int, dict[str, Any] | bytes]] = {}

    # --- updates (the reader thread) ---------------------------------------------------
    def set_ownership(self, ownership: Ownership) -> None:
        """A new group state; twins of partitions no longer owned are forgotten."""
        if ownership.owned != self.ownership.owned:
            for entity_id, (partition, _) in list(self.entries.items()):
                if partition not in ownership.owned:
                    self.entries.pop(entity_id, None)
        self.ownership = ownership

    def put(self, entity_id: str, partition: int, state: dict[str, Any] | bytes) -> None:
        """A twin's state document, or its checkpoint bytes (read on first request)."""
        self.entries[entity_id] = (partition, state)

    # --- reads (the event loop) ----------------------------------------------------------
    @property
    def rebalancing(self) -> bool:
        return self.ownership.rebalancing

    @property
    def loading(self) -> bool:
        """Partitions are owned but not all their checkpointed twins are published yet."""
        return not self.ownership.loaded

    def partition(self, entity_id: str) -> int:
        return partition_for(entity_id.encode(), self.partitions, _ROUND_ROBIN)

    def owned_partitions(self) -> set[int]:
        """Input partitions assigned to this worker."""
        return set(self.ownership.owned)

    def ready(self) -> bool:
        """Partitions assigned, their twins recovered and published."""
        ownership = self.ownership
        return not ownership.rebalancing and ownership.loaded and bool(ownership.owned)

    def owner_url(self, entity_id: str) -> str | None:
        """The advertised API URL of the worker that holds the entity's partition, if the group knows one."""
        partition = self.partition(entity_id)
        for url, partitions in self.ownership.distribution.items():
            if partition in partitions:
                return url
        return None

    def peer_urls(self) -> list[str]:
        """The other workers' advertised API URLs (members of the last assignment)."""
        return sorted(url for url in self.ownership.distribution if url != self.self_url)

    def is_local(self, entity_id: str) -> bool:
        return self.partition(entity_id) in self.ownership.owned

    def state(self, entity_id: str) -> dict[str, Any] | None:
        """The twin's state document, None if this worker holds no such twin."""
        entry = self.entries.get(entity_id)
        if entry is None:
            return None
        partition, state = entry
        if isinstance(state, bytes):  # a checkpoint: read it once, here rather than in the worker
            state = twin_state(Twin.from_bytes(state), len(state))
            if self.entries.get(entity_id) is entry:  # not replaced meanwhile by a newer state
                self.entries[entity_id] = (partition, state)
        return state

    def entity_ids(self) -> Iterator[str]:
        """Every twin this worker holds, by id."""
        yield from sorted(self.entries)
