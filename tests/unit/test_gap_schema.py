"""The Gap message: validation rules and JSON round trip."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from twinstream.schemas.gaps import Gap, GapKind
from twinstream.schemas.topics import GAPS

BASE = {"entity_id": "pump-1", "start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T00:05:00Z", "samples": 4}


def test_round_trip_and_defaults() -> None:
    g = Gap.model_validate({**BASE, "kind": "missed_samples", "first_seq": 10, "last_seq": 13})
    assert Gap.model_validate_json(g.model_dump_json()) == g
    assert g.kind is GapKind.MISSED_SAMPLES and g.sensors == [] and g.open is False and g.schema_version == 1
    sensor = Gap.model_validate({**BASE, "kind": "flatline", "sensors": ["s2", "s3"], "first_seq": 3, "last_seq": 6, "open": True})
    assert sensor.open and sensor.sensors == ["s2", "s3"]


def test_missed_samples_may_lack_seq_range() -> None:
    assert Gap.model_validate({**BASE, "kind": "missed_samples"}).first_seq is None


@pytest.mark.parametrize(
    "patch",
    [
        {"kind": "missed_samples", "sensors": ["s2"]},
        {"kind": "missed_samples", "open": True},
        {"kind": "missing_sensor", "first_seq": 1, "last_seq": 1},  # no sensor
        {"kind": "missing_sensor", "sensors": ["s2"]},  # no seq range
        {"kind": "flatline", "sensors": ["s2"], "first_seq": 5, "last_seq": 4},
        {"kind": "flatline", "sensors": ["s2"], "first_seq": 5},
        {"kind": "missed_samples", "end_time": "2025-12-31T00:00:00Z"},
        {"kind": "missed_samples", "start_time": "2026-01-01T00:00:00"},  # naive
        {"kind": "missed_samples", "samples": 0},
        {"kind": "dropout"},
        {"kind": "missed_samples", "extra": 1},
    ],
)
def test_rejects(patch: dict) -> None:
    with pytest.raises(ValidationError):
        Gap.model_validate({**BASE, **patch})


def test_gaps_topic_is_keyed_by_entity() -> None:
    assert GAPS.name == "twinstream.gaps" and GAPS.key == "entity_id" and GAPS.value_schema == "Gap"
