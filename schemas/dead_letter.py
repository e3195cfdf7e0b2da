"""DeadLetter: an input message the platform could not use, kept with the reason.

Nothing is dropped silently: a message that fails validation is wrapped with its
original bytes and its coordinates (topic, partition, offset) so it can be
inspected, fixed and replayed.

>>> d = DeadLetter(original=b"not json", topic="twinstream.telemetry", partition=0,
...                offset=41, reason="bad_json", error="unexpected character")
>>> DeadLetter.model_validate_json(d.model_dump_json()).original
b'not json'
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_KEY_BYTES = 1024
MAX_ERROR_CHARS = 4000


class RejectReason(StrEnum):
    """Why a message went to a dead-letter topic (a closed set, to count on).

    The telemetry DLQ uses every reason but ``sink_rejected``; the InfluxDB sink's DLQ
    (``<ns>.predictions.dlq``) uses ``sink_rejected``, ``bad_json`` and ``invalid``.
    docs/architecture.md explains each.
    """

    EMPTY = "empty"
    OVERSIZED = "oversized"
    BAD_JSON = "bad_json"
    NOT_AN_OBJECT = "not_an_object"
    SCHEMA_VERSION = "schema_version"
    INVALID = "invalid"
    NON_FINITE = "non_finite"
    OUT_OF_RANGE = "out_of_range"
    KEY_MISMATCH = "key_mismatch"
    FUTURE_TIMESTAMP = "future_timestamp"
    OUT_OF_ORDER = "out_of_order"
    TWIN_ERROR = "twin_error"
    UNKNOWN_KIND = "unknown_kind"
    SINK_REJECTED = "sink_rejected"


class DeadLetter(BaseModel):
    """A rejected message with its original bytes and the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    original: bytes = Field(
        description="The message value as received (base64 in JSON); only its first bytes when original_size is set."
    )
    original_size: int | None = Field(
        default=None, ge=0,
        description="Size in bytes of the whole message value when original holds only its first bytes "
        "(a value over the payload limit); None when original is the whole value.",
    )
    key: bytes | None = Field(
        default=None, description=f"The message key as received (its first {MAX_KEY_BYTES} bytes if longer)."
    )
    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    reason: RejectReason
    error: str = Field(max_length=MAX_ERROR_CHARS, description="Human-readable detail.")
    entity_id: str | None = Field(default=None, description="Entity id, when it could be read.")
    time: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC), description="When it was rejected.")
