"""What the twin processor consumes and produces, as bytes: records, batch outputs, encoders.

Why a module of its own: the agent, the processor, the benchmarks and the tests all
speak in these terms, while only the processor needs the twins. The encoders build
JSON without a pydantic model instance (about one prediction per event is on the hot
path); unit tests check their output validates as the schema models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from twinstream.models.twin import Twin
from twinstream.schemas.dead_letter import MAX_KEY_BYTES, DeadLetter, RejectReason
from twinstream.schemas.telemetry import Telemetry
from twinstream.streams.validation import MAX_ERROR_CHARS


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, as the processor needs it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class BatchOutput:
    """What one batch produced: messages to publish, by destination."""

    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    gaps: list[tuple[bytes, bytes]] = field(default_factory=list)
    duplicates: int = 0


def encode_prediction(
    telemetry: Telemetry, twin: Twin, target: str, value: float, lower: float, upper: float, synthetic_share: float = 0.0,
    kind: str | None = None,
) -> bytes:
    """JSON of a :class:`~twinstream.schemas.prediction.Prediction`, built without a model instance.

    Hot path: ~1 per event. A unit test checks the output validates as ``Prediction``.
    A label the event carried (measured, not synthetic) goes along as ``measured``.
    With a ``kind`` (a twin of a declared kind) it is the kind's label task, and says so,
    with the learner's domain check when it has one (``PriorTwin.domain_state``), and
    ``flagged`` while the learner is in drift alarm (``PriorTwin.in_alarm``).
    """
    tagged = {} if kind is None else {"kind": kind, "task": "label", "target_seq": telemetry.seq}
    measured = None if telemetry.synthetic else telemetry.targets.get(target)
    if measured is not None:  # the label this event carried: what the inspector draws against the prediction
        tagged["measured"] = measured
    domain = getattr(twin.learner, "domain_state", None)
    if domain is not None:
        tagged["in_domain"], tagged["domain_score"] = domain
        if getattr(twin.learner, "in_alarm", False):  # a drift alarm: the twin says so while it falls back
            tagged["flagged"] = True
    return orjson.dumps(
        {
            **tagged,
            "entity_id": telemetry.entity_id,
            "event_time": telemetry.event_time,
            "seq": telemetry.seq,
            "target": target,
            "value": value,
            "lower": lower,
            "upper": upper,
            "model_version": twin.learner.model_version,
            "prior_version": getattr(twin.learner, "prior_version", None),
            "updates": twin.updates,
            "synthetic": telemetry.synthetic or synthetic_share > 0.0,
            "synthetic_share": synthetic_share,
        }
    )


MAX_DEAD_LETTER_ORIGINAL = 256 * 1024  # base64 of it stays well inside one output record batch (output.py)


def encode_dead_letter(record: Record, reason: RejectReason, error: str, entity_id: str | None) -> bytes:
    """A :class:`DeadLetter`, bounded whatever came in: value cut to 256 KiB, key to 1 KiB, error to 1000 chars."""
    original = record.value or b""
    return DeadLetter(
        original=original[:MAX_DEAD_LETTER_ORIGINAL],
        original_size=len(original) if len(original) > MAX_DEAD_LETTER_ORIGINAL else None,
        key=None if record.key is None else record.key[:MAX_KEY_BYTES],
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        error=error[:MAX_ERROR_CHARS],
        entity_id=None if entity_id is None else entity_id[:128],
    ).model_dump_json().encode()


class BadPrediction(ValueError):
    """The learner returned a prediction that cannot be published (not finite, lower > upper)."""
