"""Which worker owns an entity, and reading the twins this worker owns.

An entity's telemetry, twin and predictions share one partition number (the keyed
topics have the same partition count and Kafka's murmur2 placement). Faust's group
leader spreads, with every assignment, the map from each member's canonical URL to
the changelog partitions it holds as active; the worker sets its canonical URL to the
API's advertised URL, so that map tells where to send a request for any entity.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

from twinstream.models.twin import Twin
from twinstream.streams.output import partition_for

if TYPE_CHECKING:
    from twinstream.streams.ingest import IngestAgent

_ROUND_ROBIN = itertools.count()  # unused: entity keys are never None


class TwinDirectory:
    """The worker's view of ownership and of its own twins (cache first, then the table)."""

    def __init__(self, agent: IngestAgent, self_url: str) -> None:
        self.agent = agent
        self.app = agent.app
        self.partitions = agent.settings.partitions
        self.self_url = self_url.rstrip("/")
        self.telemetry_topic = agent.telemetry.get_topic_name()
        self.changelog_topic = agent.table.changelog_topic.get_topic_name()

    def partition(self, entity_id: str) -> int:
        return partition_for(entity_id.encode(), self.partitions, _ROUND_ROBIN)

    def owned_partitions(self) -> set[int]:
        """Input partitions assigned to this worker right now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            return set()
        return {tp.partition for tp in assignment if tp.topic == self.telemetry_topic}

    def ready(self) -> bool:
        """Partitions assigned and their twins recovered (the agent is not rebalancing)."""
        return not self.agent.rebalancing and bool(self.owned_partitions())

    def owner_url(self, entity_id: str) -> str | None:
        """The advertised API URL of the worker that holds the entity's partition, if the group knows one."""
        partition = self.partition(entity_id)
        for url, topics in self.app.assignor.changelog_distribution.items():
            if partition in topics.get(self.changelog_topic, ()):
                return str(url).rstrip("/")
        return None

    def peer_urls(self) -> list[str]:
        """The other workers' advertised API URLs (members of the last assignment)."""
        urls = {str(url).rstrip("/") for url in self.app.assignor.changelog_distribution}
        urls.discard(self.self_url)
        return sorted(urls)

    def is_local(self, entity_id: str) -> bool:
        return self.partition(entity_id) in self.owned_partitions()

    def twin(self, entity_id: str) -> tuple[Twin, int] | None:
        """The twin (the live cached one if loaded, else its last checkpoint) and its checkpointed size in bytes."""
        blob = self._read(entity_id)
        cached = self.agent.processor.twins.get(entity_id)
        if cached is not None:
            return cached, len(blob) if blob is not None else 0
        if blob is None:
            return None
        return Twin.from_bytes(blob), len(blob)

    def entity_ids(self) -> Iterator[str]:
        """Every entity of the partitions this worker owns: checkpointed and cached (not yet checkpointed)."""
        owned = self.owned_partitions()
        seen: set[str] = set()
        seen.update(self.agent.processor.twins)  # the cache holds only twins of owned partitions
        data = self.agent.table.data
        db_for_partition = getattr(data, "_db_for_partition", None)
        if db_for_partition is not None:  # RocksDB: one database per partition
            for partition in owned:
                for key in db_for_partition(partition).keys():
                    if _is_entity_key(key):
                        seen.add(key.decode())
        else:
            for key in list(data.keys()):
                if _is_entity_key(key):
                    seen.add(key.decode())
        yield from sorted(seen)

    def _read(self, entity_id: str) -> bytes | None:
        """The checkpointed twin: in its murmur2 partition first, then the other owned ones.

        Why the others: the twin lives in the partition its telemetry was written to, and
        a producer with another partitioner (librdkafka's default is CRC32) places keys
        differently from Kafka's murmur2.
        """
        key = entity_id.encode()
        db_for_partition = getattr(self.agent.table.data, "_db_for_partition", None)
        if db_for_partition is None:
            return self.agent.table.data.get(key)
        first = self.partition(entity_id)
        for partition in [first, *sorted(self.owned_partitions() - {first})]:
            blob = db_for_partition(partition).get(key)
            if blob is not None:
                return blob
        return None

def _is_entity_key(key: object) -> bool:
    """Entity ids start with a letter or digit; checkpoint markers and Faust's offset key with ``_``."""
    return isinstance(key, bytes) and bool(key) and key[:1] != b"_"
