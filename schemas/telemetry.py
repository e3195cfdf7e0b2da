"""Telemetry: one measurement event of one entity, the platform's input message.

Why a per-entity sequence number: it is the idempotency key. A twin remembers the
last sequence it applied, so a message redelivered after a crash is recognised and
skipped instead of being learned twice (exactly-once effect without broker
transactions).

>>> t = Telemetry(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=3,
...               metrics={"s2": 641.8, "s3": None}, source="replay")
>>> t.synthetic, t.metrics["s3"] is None
(False, True)

A NaN reading is a missing value, not a broken message: it is read as null, so the
rest of the sample is still used (the gap detector reports the missing sensor).
Infinity is still rejected.

>>> Telemetry(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=4,
...           metrics={"s2": float("nan")}).metrics
{'s2': None}

Synthetic samples (written by the sidecar, ``twinstream sidecar``) carry only the
filled sensors, the generator that made them and a per-value standard deviation:

>>> f = Telemetry(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=4, metrics={"s3": 1590.2},
...               synthetic=True, generator="kalman-llt-v1", confidence={"s3": 2.5})
>>> Telemetry.model_validate_json(f.model_dump_json()) == f
True
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"),
]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class Telemetry(BaseModel):
    """A measured (or, with ``synthetic=True``, generated) sample of one entity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: EntityId = Field(description="Kafka key; one twin per entity id.")
    event_time: AwareDatetime = Field(description="When the sample was taken (timezone-aware).")
    seq: int = Field(ge=0, description="Per-entity sequence number, increasing by one per sample.")
    metrics: dict[MetricName, float | None] = Field(
        description="Sensor values; null marks a missing value (NaN is read as null). Infinity is rejected."
    )
    targets: dict[MetricName, float] = Field(
        default_factory=dict,
        description="Labels known at ingest time (e.g. RUL in a historical replay); usually empty.",
    )
    source: str = Field(default="unknown", max_length=128, description="Connector that produced the sample.")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Bumped on breaking changes.")
    synthetic: bool = Field(default=False, description="True when generated, never measured.")
    generator: str | None = Field(
        default=None, max_length=128,
        description="Synthetic samples: name and version of the generator (or baseline) that made them.",
    )
    confidence: dict[MetricName, float] = Field(
        default_factory=dict,
        description="Synthetic samples: standard deviation of each filled value (same units as the value).",
    )

    @field_validator("metrics")
    @classmethod
    def _nan_is_missing(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        if any(v is not None and v != v for v in values.values()):
            values = {name: (None if v is not None and v != v else v) for name, v in values.items()}
        return cls._finite(values)

    @field_validator("targets")
    @classmethod
    def _finite(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        for name, value in values.items():
            if value is not None and not math.isfinite(value):
                raise ValueError(f"value of {name!r} is not finite ({value!r}); send null for a missing value")
        return values

    @model_validator(mode="after")
    def _check_synthetic(self) -> "Telemetry":
        if self.confidence:
            if not self.synthetic:
                raise ValueError("confidence is for synthetic samples only")
            for name, std in self.confidence.items():
                if name not in self.metrics:
                    raise ValueError(f"confidence for {name!r}, which is not among the metrics")
                if not (math.isfinite(std) and std >= 0.0):
                    raise ValueError(f"confidence of {name!r} must be a finite standard deviation >= 0")
        if self.generator is not None and not self.synthetic:
            raise ValueError("generator is set only on synthetic samples")
        return self

    @property
    def event_time_ns(self) -> int:
        """Event time in nanoseconds since the epoch (InfluxDB's precision)."""
        return datetime_to_ns(self.event_time)


def datetime_to_ns(moment: datetime) -> int:
    """Exact integer nanoseconds of an aware datetime (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
