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

Every field is bounded, so whatever validates can be encoded (JSON, int64 in Kafka
clients and InfluxDB) and learned from: ``seq`` is a non-negative 64-bit integer,
values are finite with magnitude at most ``MAX_ABS_VALUE`` (beyond 1e15 a float64 no
longer holds every integer, and squares of larger values overflow learners), event
times lie in [``MIN_EVENT_TIME``, ``MAX_EVENT_TIME``) (InfluxDB's nanosecond
timestamps end in 2262), and names and counts have maxima. An out-of-range value
raises with "out of range" in its message (the worker's reason ``out_of_range``).

>>> from pydantic import ValidationError
>>> def first_error(**fields):
...     try:
...         Telemetry(**{"entity_id": "e", "event_time": "2026-01-01T00:00:00Z", "seq": 0, "metrics": {}, **fields})
...     except ValidationError as exc:
...         return exc.errors()[0]["msg"]
>>> first_error(seq=2**70)
'Input should be less than or equal to 9223372036854775807'
>>> first_error(metrics={"s2": 1e300})
"Value error, value of 's2' is out of range (1e+300; |value| <= 1e+15)"

Synthetic samples (written by the sidecar, ``twinstream sidecar``) carry only the
filled sensors, the generator that made them and a per-value standard deviation:

>>> f = Telemetry(entity_id="engine-7", event_time="2026-01-01T00:00:00Z", seq=4, metrics={"s3": 1590.2},
...               synthetic=True, generator="kalman-llt-v1", confidence={"s3": 2.5})
>>> Telemetry.model_validate_json(f.model_dump_json()) == f
True
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MAX_SEQ = 2**63 - 1  # a signed 64-bit integer: Kafka clients, orjson and InfluxDB's integer fields
MAX_ABS_VALUE = 1e15  # metrics, targets, confidences
MIN_EVENT_TIME = _EPOCH
MAX_EVENT_TIME = datetime(2200, 1, 1, tzinfo=UTC)  # InfluxDB's int64 nanoseconds end in 2262
MAX_METRICS = 1024  # hard limit of the schema; the worker's own (TWINSTREAM_MAX_METRICS) is lower
MAX_TARGETS = 64
MAX_NAME_CHARS = 128  # entity id, source, generator

EntityId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_NAME_CHARS, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:\-]*$"),
]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
KindField = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class FillChoice(BaseModel):
    """How the sidecar chose the filler of one sensor of a synthetic sample, and how it did.

    The sidecar hides pieces of the entity's own recent measured values of that sensor
    (pseudo-gaps shaped like the real one), fills them with each candidate and keeps the
    best; ``validation_mae`` is the chosen filler's error there, in the sensor's units
    (None when the window had no room for a pseudo-gap and the default filler was used).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str = Field(max_length=MAX_NAME_CHARS, description="Filler used: kalman, generator, linear or last_value.")
    validation_mae: float | None = Field(
        default=None, ge=0.0, le=MAX_ABS_VALUE, description="Its mean absolute error on the pseudo-gaps (sensor units).")
    validation_cells: int = Field(default=0, ge=0, description="Measured values hidden and scored to choose it.")
    step_like: bool = Field(default=False, description="The sensor looked step-like or flat: only fillers that do not overshoot.")


class Telemetry(BaseModel):
    """A measured (or, with ``synthetic=True``, generated) sample of one entity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: EntityId = Field(description="Kafka key; one twin per entity id.")
    event_time: AwareDatetime = Field(description="When the sample was taken (timezone-aware).")
    seq: int = Field(ge=0, le=MAX_SEQ, description="Per-entity sequence number, increasing by one per sample.")
    metrics: dict[MetricName, float | None] = Field(
        max_length=MAX_METRICS,
        description="Sensor values; null marks a missing value (NaN is read as null). Infinity is rejected; "
        f"|value| <= {MAX_ABS_VALUE:g}.",
    )
    targets: dict[MetricName, float] = Field(
        default_factory=dict, max_length=MAX_TARGETS,
        description=f"Labels known at ingest time (e.g. RUL in a historical replay); usually empty. |value| <= {MAX_ABS_VALUE:g}.",
    )
    source: str = Field(default="unknown", max_length=MAX_NAME_CHARS, description="Connector that produced the sample.")
    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Bumped on breaking changes.")
    synthetic: bool = Field(default=False, description="True when generated, never measured.")
    generator: str | None = Field(
        default=None, max_length=MAX_NAME_CHARS,
        description="Synthetic samples: name and version of the generator (or baseline) that made them.",
    )
    confidence: dict[MetricName, float] = Field(
        default_factory=dict,
        description="Synthetic samples: standard deviation of each filled value (same units as the value).",
    )
    fill: dict[MetricName, FillChoice] = Field(
        default_factory=dict,
        description="Synthetic samples: per filled sensor, the filler the sidecar chose for it and its measured error "
        "on the entity's own recent data; empty when the sidecar does not choose per sensor.",
    )
    kind: KindField | None = Field(
        default=None,
        description="Twin kind of the entity (a kind's match.kind or name in the worker's twins.yaml); "
        "None: the kind is found from the entity id.",
    )

    @field_validator("metrics")
    @classmethod
    def _nan_is_missing(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        low, high = -MAX_ABS_VALUE, MAX_ABS_VALUE
        for v in values.values():  # hot path: one pass, one comparison per value (NaN fails it)
            if v is not None and not low <= v <= high:
                break
        else:
            return values
        values = {name: (None if v is not None and v != v else v) for name, v in values.items()}
        return cls._finite(values)

    @field_validator("targets")
    @classmethod
    def _finite(cls, values: dict[str, float | None]) -> dict[str, float | None]:
        low, high = -MAX_ABS_VALUE, MAX_ABS_VALUE
        for name, value in values.items():
            if value is None or low <= value <= high:  # one comparison per value on the hot path (NaN fails it)
                continue
            if not math.isfinite(value):
                raise ValueError(f"value of {name!r} is not finite ({value!r}); send null for a missing value")
            raise ValueError(f"value of {name!r} is out of range ({value:g}; |value| <= {MAX_ABS_VALUE:g})")
        return values

    @field_validator("event_time")
    @classmethod
    def _in_range(cls, moment: datetime) -> datetime:
        if not MIN_EVENT_TIME <= moment < MAX_EVENT_TIME:
            raise ValueError(f"event_time {moment.isoformat()} is out of range "
                             f"[{MIN_EVENT_TIME.isoformat()}, {MAX_EVENT_TIME.isoformat()})")
        return moment

    @model_validator(mode="after")
    def _check_synthetic(self) -> Telemetry:
        if self.confidence:
            if not self.synthetic:
                raise ValueError("confidence is for synthetic samples only")
            for name, std in self.confidence.items():
                if name not in self.metrics:
                    raise ValueError(f"confidence for {name!r}, which is not among the metrics")
                if not (math.isfinite(std) and std >= 0.0):
                    raise ValueError(f"confidence of {name!r} must be a finite standard deviation >= 0")
                if std > MAX_ABS_VALUE:
                    raise ValueError(f"confidence of {name!r} is out of range ({std:g}; <= {MAX_ABS_VALUE:g})")
        if self.generator is not None and not self.synthetic:
            raise ValueError("generator is set only on synthetic samples")
        if self.fill:
            if not self.synthetic:
                raise ValueError("fill is for synthetic samples only")
            for name in self.fill:
                if name not in self.metrics:
                    raise ValueError(f"fill for {name!r}, which is not among the metrics")
        return self

    @property
    def event_time_ns(self) -> int:
        """Event time in nanoseconds since the epoch (InfluxDB's precision)."""
        return datetime_to_ns(self.event_time)


def datetime_to_ns(moment: datetime) -> int:
    """Exact integer nanoseconds of an aware datetime (no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
