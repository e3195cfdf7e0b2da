"""Gap: a hole in one entity's telemetry, as found by the gap detector.

Three kinds: ``missed_samples`` (samples that never arrived: a jump in the per-entity
sequence number, or a silence much longer than the entity's learned cadence),
``missing_sensor`` (samples arrived but a sensor was null, NaN or absent) and
``flatline`` (a sensor that used to vary repeats one value: a dead sensor still
reporting). A gap names the entity, the sensors (empty for missed samples), the
sequence range and the time range it covers.

Ranges: for ``missed_samples`` the sequence range is the missing sequence numbers
(``None`` when the source kept counting, i.e. only the clock shows the silence) and the
time range is the event times of the samples on either side of the hole. For sensor
gaps both ranges are those of the first and last affected sample, inclusive. A sensor
gap is reported when it opens (``open=True``, ``last_seq`` = the sample that showed it)
and again, with the same ``first_seq`` and ``open=False``, when the sensor recovers.

>>> g = Gap(entity_id="engine-7", kind="missing_sensor", sensors=["s3"], first_seq=40, last_seq=40,
...         start_time="2026-01-01T00:40:00Z", end_time="2026-01-01T00:40:00Z", samples=1, open=True,
...         detected_at="2026-01-01T00:40:01Z")
>>> Gap.model_validate_json(g.model_dump_json()) == g
True
>>> Gap(entity_id="engine-7", kind="missed_samples", sensors=["s3"], samples=1,
...     start_time="2026-01-01T00:00:00Z", end_time="2026-01-01T00:01:00Z")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Gap
...
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from twinstream.schemas.telemetry import EntityId, MetricName

GAP_SCHEMA_VERSION = 1


class GapKind(StrEnum):
    """What is missing."""

    MISSED_SAMPLES = "missed_samples"
    MISSING_SENSOR = "missing_sensor"
    FLATLINE = "flatline"


class Gap(BaseModel):
    """One gap of one entity (keyed by entity id on the gaps topic)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entity_id: EntityId = Field(description="Kafka key; the entity whose telemetry has the gap.")
    kind: GapKind
    sensors: list[MetricName] = Field(default_factory=list, description="Affected sensors; empty for missed samples.")
    first_seq: int | None = Field(default=None, ge=0, description="First affected (or missing) sequence number.")
    last_seq: int | None = Field(default=None, ge=0, description="Last affected (or missing) sequence number, inclusive.")
    start_time: AwareDatetime = Field(description="Start of the time range (see the module doc for each kind).")
    end_time: AwareDatetime = Field(description="End of the time range.")
    samples: int = Field(ge=1, description="Samples missing (missed_samples) or affected so far (sensor gaps).")
    open: bool = Field(default=False, description="True while a sensor gap continues; a closing message follows.")
    detected_at: AwareDatetime = Field(
        default_factory=lambda: datetime.now(UTC), description="Wall-clock time of detection."
    )
    detector: str = Field(default="unknown", max_length=128, description="Detector name and version.")
    schema_version: Literal[1] = GAP_SCHEMA_VERSION

    @model_validator(mode="after")
    def _check(self) -> Gap:
        if (self.first_seq is None) != (self.last_seq is None):
            raise ValueError("first_seq and last_seq are given together or not at all")
        if self.first_seq is not None and self.last_seq is not None and self.last_seq < self.first_seq:
            raise ValueError("last_seq is before first_seq")
        if self.end_time < self.start_time:
            raise ValueError("end_time is before start_time")
        if self.kind is GapKind.MISSED_SAMPLES:
            if self.sensors:
                raise ValueError("a missed_samples gap names no sensors (the whole sample is missing)")
            if self.open:
                raise ValueError("a missed_samples gap is known only when it has ended, so it is never open")
        else:
            if not self.sensors:
                raise ValueError(f"a {self.kind.value} gap names at least one sensor")
            if self.first_seq is None:
                raise ValueError(f"a {self.kind.value} gap has the sequence range of the affected samples")
        return self
