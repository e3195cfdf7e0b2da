"""The topic catalog as code: every topic the platform uses, in one place.

Names are dot-separated (``twinstream.<stream>[.<variant>]``); every keyed topic is
keyed by entity id, so all events of one entity land in one partition, in order,
and are handled by the worker that owns that entity's twin. The catalog is applied
idempotently at start-up (:mod:`twinstream.streams.topic_admin`).

>>> [t.name for t in topic_catalog(partitions=4)]  # doctest: +NORMALIZE_WHITESPACE
['twinstream.telemetry', 'twinstream.predictions', 'twinstream.telemetry.dlq', 'twinstream.gaps',
 'twinstream.telemetry.synthetic', 'twinstream.predictions.dlq']
>>> TELEMETRY.name, TELEMETRY.key
('twinstream.telemetry', 'entity_id')
>>> TELEMETRY.in_namespace("plant7").name
'plant7.telemetry'
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DAY_MS = 24 * 3600 * 1000
DEFAULT_NAMESPACE = "twinstream"
NAMESPACE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class TopicSpec(BaseModel):
    """One topic: its name, key, value schema, partitions and retention."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
    value_schema: str = Field(description="Name of the pydantic model of the value.")
    key: Literal["entity_id"] = "entity_id"
    partitions: int = Field(default=4, ge=1)
    replication: int = Field(default=1, ge=1)
    retention_ms: int = Field(default=7 * DAY_MS, ge=-1, description="-1 keeps forever.")
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    description: str = ""

    def with_partitions(self, partitions: int) -> TopicSpec:
        return self.model_copy(update={"partitions": partitions})

    def in_namespace(self, namespace: str) -> TopicSpec:
        """The same topic under another leading name (several deployments on one cluster)."""
        if not NAMESPACE_PATTERN.match(namespace):
            raise ValueError(f"topic namespace {namespace!r} must match {NAMESPACE_PATTERN.pattern}")
        _, rest = self.name.split(".", 1)
        return self.model_copy(update={"name": f"{namespace}.{rest}"})

    @property
    def config(self) -> dict[str, str]:
        """Kafka topic configs for CreateTopics."""
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


TELEMETRY = TopicSpec(
    name="twinstream.telemetry",
    value_schema="Telemetry",
    description="Measured telemetry from connectors, keyed by entity id.",
)
PREDICTIONS = TopicSpec(
    name="twinstream.predictions",
    value_schema="Prediction",
    description="One prediction per processed telemetry event; idempotent on (entity_id, seq).",
)
TELEMETRY_DLQ = TopicSpec(
    name="twinstream.telemetry.dlq",
    value_schema="DeadLetter",
    retention_ms=30 * DAY_MS,
    description="Telemetry the worker could not use, with the reason and the original bytes.",
)
GAPS = TopicSpec(
    name="twinstream.gaps",
    value_schema="Gap",
    description="Gaps found in an entity's telemetry (missed samples, missing or flat-lined sensors).",
)
SYNTHETIC = TopicSpec(
    name="twinstream.telemetry.synthetic",
    value_schema="Telemetry",
    description=(
        "Synthetic samples (synthetic=true) that fill gaps, written by the sidecar; keyed by entity id. "
        "A sample carries only the filled sensors, for the (entity, seq) of the gap."
    ),
)
PREDICTIONS_DLQ = TopicSpec(
    name="twinstream.predictions.dlq",
    value_schema="DeadLetter",
    retention_ms=30 * DAY_MS,
    description=(
        "Predictions the InfluxDB sink could not write: refused by InfluxDB for good after bounded tries "
        "(reason sink_rejected), or not a Prediction; original bytes and coordinates, to fix and replay."
    ),
)


def topic_catalog(partitions: int, namespace: str = DEFAULT_NAMESPACE) -> list[TopicSpec]:
    """All platform topics, with keyed topics set to ``partitions`` partitions."""
    return [
        spec.with_partitions(partitions).in_namespace(namespace)
        for spec in (TELEMETRY, PREDICTIONS, TELEMETRY_DLQ, GAPS, SYNTHETIC, PREDICTIONS_DLQ)
    ]
