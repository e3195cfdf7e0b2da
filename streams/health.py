"""Pipeline-health gauges refreshed on a timer: consumer lag, twins per kind, priors in use, checkpoint age.

Why a timer: gauges set only when records arrive freeze exactly when something is
wrong (a stalled consumer shows its last, small lag forever). The lag is what
kafka_exporter reports, per partition this worker owns: the partition's high
watermark minus the group's committed offset, both asked of the broker.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from twinstream.kafka_security import client_options

if TYPE_CHECKING:
    from twinstream.streams.ingest import IngestAgent

log = logging.getLogger(__name__)

NO_KIND = "none"
IN_DOMAIN_WINDOW = 1000


class HealthProbe:
    """Refreshes the health gauges of :class:`~twinstream.streams.metrics.WorkerMetrics` from the agent and the broker."""

    def __init__(self, agent: IngestAgent) -> None:
        self.agent = agent
        self.metrics = agent.metrics
        self.group = agent.settings.app_id
        self.bootstrap = agent.settings.broker_servers
        self.admin: AIOKafkaAdminClient | None = None
        self.offsets: AIOKafkaConsumer | None = None
        self.kinds_seen: set[str] = set()
        self.priors_seen: set[tuple[str, str]] = set()
        self.lag_seen: set[tuple[str, str, str]] = set()
        self.domain: dict[str, deque[bool]] = {}
        self.domain_lock = threading.Lock()  # on_prediction runs on the API's thread

    def on_prediction(self, partition: int, prediction: dict[str, Any]) -> None:
        """Feed hook: remember the in-domain flags of predictions of partitions this worker owns."""
        flag = prediction.get("in_domain")
        if flag is None or partition not in self._owned():
            return
        with self.domain_lock:
            window = self.domain.setdefault(prediction.get("kind") or NO_KIND, deque(maxlen=IN_DOMAIN_WINDOW))
            window.append(bool(flag))

    async def refresh(self) -> None:
        self._twins()
        self._checkpoint_age()
        with self.domain_lock:
            shares = {kind: sum(window) / len(window) for kind, window in self.domain.items() if window}
        for kind, share in shares.items():
            self.metrics.in_domain_share.labels(kind).set(share)
        try:
            await self._lag()
        except Exception as exc:  # the broker is away: keep the last values, say so once per refresh
            log.warning("lag probe: could not read offsets of group=%s (%s: %s)", self.group, type(exc).__name__, exc)

    async def stop(self) -> None:
        for client in (self.admin, self.offsets):
            if client is not None:
                await client.close() if isinstance(client, AIOKafkaAdminClient) else await client.stop()

    def _owned(self) -> set[int]:
        try:
            return {tp.partition for tp in self.agent.app.consumer.assignment() if tp.topic in self.agent.input_topics}
        except Exception:
            return set()

    def _twins(self) -> None:
        kinds: Counter[str] = Counter()
        priors: Counter[tuple[str, str]] = Counter()
        for twin in list(self.agent.processor.twins.values()):
            kind = twin.kind or NO_KIND
            kinds[kind] += 1
            version = getattr(twin.learner, "prior_version", None) if twin.learner is not None else None
            if version is not None:
                priors[(kind, str(version))] += 1
        for kind in self.kinds_seen | set(kinds):
            self.metrics.twins_by_kind.labels(kind).set(kinds.get(kind, 0))
        self.kinds_seen |= set(kinds)
        for key in self.priors_seen - set(priors):
            self.metrics.prior_info.remove(*key)
        for key, count in priors.items():
            self.metrics.prior_info.labels(*key).set(count)
        self.priors_seen = set(priors)

    def _checkpoint_age(self) -> None:
        waiting = bool(self.agent.pending.events)
        self.metrics.checkpoint_age.set(time.monotonic() - self.agent.last_checkpoint if waiting else 0.0)

    async def _lag(self) -> None:
        if self.admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, client_id=f"{self.group}-lag-probe",
                                        **client_options(self.agent.settings))
            await admin.start()
            self.admin = admin
        if self.offsets is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        client_id=f"{self.group}-lag-probe", **client_options(self.agent.settings))
            await consumer.start()
            self.offsets = consumer
        owned = self._owned()
        tps = [TopicPartition(topic, p) for topic in sorted(self.agent.input_topics) for p in sorted(owned)]
        labels: set[tuple[str, str, str]] = set()
        if tps:
            ends = await self.offsets.end_offsets(tps)
            committed = await self.admin.list_consumer_group_offsets(self.group, partitions=tps)
            for tp in tps:
                meta = committed.get(tp)
                position = meta.offset if meta is not None and meta.offset >= 0 else 0
                key = (self.group, tp.topic, str(tp.partition))
                self.metrics.consumergroup_lag.labels(*key).set(max(0, ends.get(tp, 0) - position))
                labels.add(key)
        for key in self.lag_seen - labels:  # partitions this worker no longer owns
            self.metrics.consumergroup_lag.remove(*key)
        self.lag_seen = labels
