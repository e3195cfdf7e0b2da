"""Create the topic catalog on a broker, idempotently, at start-up.

Why not rely on auto-creation: auto-created topics get the broker's defaults
(partitions, retention), and keyed twins need a known partition count that never
silently changes.
"""

from __future__ import annotations

import logging

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from twinstream.kafka_security import client_options
from twinstream.schemas.topics import TopicSpec, topic_catalog
from twinstream.settings import Settings

log = logging.getLogger(__name__)


class TopicMismatchError(RuntimeError):
    """An existing topic has another partition count than the catalog asks for."""


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing catalog topics; return ``{name: "created" | "exists"}``.

    Raises :class:`TopicMismatchError` when an existing topic's partition count
    differs from the catalog (re-keying twins silently would move entities).
    """
    specs = specs if specs is not None else topic_catalog(settings.partitions, settings.topic_namespace)
    admin = KafkaAdminClient(
        bootstrap_servers=settings.broker_servers,
        client_id=f"{settings.app_id}-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **client_options(settings),
    )
    try:
        existing = set(admin.list_topics())
        status: dict[str, str] = {}
        missing = [spec for spec in specs if spec.name not in existing]
        for spec in missing:
            try:
                admin.create_topics(
                    [NewTopic(spec.name, spec.partitions, spec.replication, topic_configs=spec.config)],
                    timeout_ms=int(timeout_s * 1000),
                )
                status[spec.name] = "created"
                log.info("created topic %s partitions=%d", spec.name, spec.partitions)
            except TopicAlreadyExistsError:  # created concurrently by another process
                status[spec.name] = "exists"
        present = [spec for spec in specs if spec.name not in status]
        if present:
            described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([s.name for s in present])}
            for spec in present:
                status[spec.name] = "exists"
                found = described.get(spec.name)
                if found is not None and found != spec.partitions:
                    raise TopicMismatchError(
                        f"topic {spec.name} has {found} partitions, the catalog wants {spec.partitions}; "
                        "set TWINSTREAM_PARTITIONS to match or use another TWINSTREAM_TOPIC_NAMESPACE"
                    )
        return status
    finally:
        admin.close()
