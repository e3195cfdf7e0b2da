"""TwinProcessor without a broker: every input ends as a prediction, a dead letter or a
documented skip, and twins apply each sequence number once."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from twinstream.models.twin import Twin
from twinstream.schemas import DeadLetter, Prediction, RejectReason
from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def telemetry(entity: str = "e1", seq: int = 0, **patch: object) -> bytes:
    body = {
        "entity_id": entity,
        "event_time": (NOW - timedelta(minutes=1)).isoformat(),
        "seq": seq,
        "metrics": {"a": 1.0 + seq, "b": 2.0},
        "targets": {"rul": 100.0 - seq},
    }
    body.update(patch)
    return json.dumps(body).encode()


class Harness:
    def __init__(self, **settings: object) -> None:
        self.table: dict[str, bytes] = {}
        # the single-learner mode: these tests' entities ("e1") are of no declared kind
        self.processor = TwinProcessor(Settings(**{"twins_spec": "none", **settings}), self.table.get, clock=lambda: NOW)
        self.offset = 0

    def feed(self, value: bytes | None, key: bytes | None = b"e1"):
        self.offset += 1
        return self.processor.process([Record(key, value, "twinstream.telemetry", 0, self.offset)])

    def checkpoint(self) -> None:
        for items in self.processor.take_dirty().values():
            self.table.update(items)


def reason_of(output) -> RejectReason:
    assert len(output.dead_letters) == 1 and not output.predictions
    return DeadLetter.model_validate_json(output.dead_letters[0][1]).reason


BAD_INPUTS = {
    "bad_json": (b'{"entity_id": "e1", ', b"e1", RejectReason.BAD_JSON),
    "not_utf8": (b"\xff\xfe\x00", b"e1", RejectReason.BAD_JSON),
    "not_an_object": (b"[1, 2, 3]", b"e1", RejectReason.NOT_AN_OBJECT),
    "wrong_types": (telemetry().replace(b"\"seq\": 0", b"\"seq\": \"three\""), b"e1", RejectReason.INVALID),
    # a NaN *reading* is a missing value (the sample is applied, see test_synthetic_processing.py);
    # a NaN label is still rejected
    "nan_target": (telemetry().replace(b'"rul": 100.0', b'"rul": NaN'), b"e1", RejectReason.NON_FINITE),
    "inf": (telemetry().replace(b'"a": 1.0', b'"a": Infinity'), b"e1", RejectReason.NON_FINITE),
    "missing_entity": (json.dumps({"event_time": NOW.isoformat(), "seq": 0, "metrics": {}}).encode(), b"e1", RejectReason.INVALID),
    "oversized": (telemetry(source="x" * 70_000), b"e1", RejectReason.OVERSIZED),
    "schema_version": (telemetry(schema_version=2), b"e1", RejectReason.SCHEMA_VERSION),
    "empty": (b"", b"e1", RejectReason.EMPTY),
    "none_value": (None, b"e1", RejectReason.EMPTY),
    "future": (telemetry(event_time=(NOW + timedelta(hours=2)).isoformat()), b"e1", RejectReason.FUTURE_TIMESTAMP),
    "key_mismatch": (telemetry(), b"e2", RejectReason.KEY_MISMATCH),
    "no_key": (telemetry(), None, RejectReason.KEY_MISMATCH),
    "too_many_metrics": (telemetry(metrics={f"m{i}": 1.0 for i in range(300)}), b"e1", RejectReason.INVALID),
}


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_input_goes_to_dlq_with_reason(kind: str) -> None:
    value, key, expected = BAD_INPUTS[kind]
    harness = Harness()
    output = harness.feed(value, key)
    assert reason_of(output) is expected
    letter = DeadLetter.model_validate_json(output.dead_letters[0][1])
    assert letter.original == (value or b"") and letter.offset == harness.offset and letter.error
    # the processor keeps working after the bad input
    assert len(harness.feed(telemetry(seq=0)).predictions) == 1


def test_prediction_payload_validates_as_prediction() -> None:
    output = Harness().feed(telemetry(seq=0))
    key, payload = output.predictions[0]
    prediction = Prediction.model_validate_json(payload)
    assert key == b"e1" and prediction.entity_id == "e1" and prediction.seq == 0 and prediction.updates == 1
    assert prediction.lower <= prediction.value <= prediction.upper


def test_duplicate_is_skipped_not_reapplied() -> None:
    harness = Harness()
    harness.feed(telemetry(seq=0))
    harness.feed(telemetry(seq=1))
    output = harness.feed(telemetry(seq=1))
    assert output.duplicates == 1 and not output.predictions and not output.dead_letters
    assert harness.processor.twins["e1"].updates == 2


def test_duplicate_marks_twin_for_the_next_checkpoint() -> None:
    """Local state can be ahead of the changelog after a crash; a duplicate must get the
    twin re-written before it is acknowledged, or a later recovery from the changelog
    alone would lose the update (found by the crash test)."""
    harness = Harness()
    harness.feed(telemetry(seq=0))
    harness.checkpoint()
    assert not harness.processor.dirty
    harness.feed(telemetry(seq=0))
    assert "e1" in harness.processor.take_dirty().get(0, [("", b"")])[0]


def test_late_event_for_a_gap_is_reported() -> None:
    harness = Harness()
    for seq in (0, 1, 3):
        harness.feed(telemetry(seq=seq))
    assert reason_of(harness.feed(telemetry(seq=2))) is RejectReason.OUT_OF_ORDER
    # reported once; a second copy of seq 2 is then a plain duplicate
    assert harness.feed(telemetry(seq=2)).duplicates == 1
    twin = harness.processor.twins["e1"]
    assert (twin.updates, twin.last_seq, twin.gaps) == (3, 3, 1)


def test_redelivery_after_crash_never_double_applies() -> None:
    """Simulate: checkpoint after seq 0..4, crash after applying 5..9 in memory, redelivery of 0..9."""
    harness = Harness()
    for seq in range(5):
        harness.feed(telemetry(seq=seq))
    harness.checkpoint()
    for seq in range(5, 10):
        harness.feed(telemetry(seq=seq))
    harness.processor.drop_all()  # the crash: in-memory twins are gone, the table survives
    predictions = sum(len(harness.feed(telemetry(seq=seq)).predictions) for seq in range(10))
    assert predictions == 5  # 0..4 skipped (in the checkpoint), 5..9 re-applied once
    twin = harness.processor.twins["e1"]
    assert (twin.updates, twin.last_seq) == (10, 9)


def test_checkpoint_bytes_restore_twin() -> None:
    harness = Harness()
    for seq in range(20):
        harness.feed(telemetry(seq=seq))
    harness.checkpoint()
    restored = Twin.from_bytes(harness.table["e1"])
    live = harness.processor.twins["e1"]
    x = {"a": 3.0, "b": 2.0}
    assert restored.updates == live.updates == 20
    assert restored.learner.predict_one(x) == live.learner.predict_one(x)


def test_twin_error_goes_to_dlq(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = Harness()
    harness.feed(telemetry(seq=0))

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("learner exploded")

    monkeypatch.setattr(harness.processor.twins["e1"].learner, "learn_one", boom)
    assert reason_of(harness.feed(telemetry(seq=1))) is RejectReason.TWIN_ERROR
    assert harness.processor.twins["e1"].last_seq == 0


def test_prediction_json_is_orjson_compatible() -> None:
    output = Harness().feed(telemetry(seq=0))
    assert orjson.loads(output.predictions[0][1])["target"] == "rul"
