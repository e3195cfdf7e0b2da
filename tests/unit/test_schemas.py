"""Schemas: validation rules, JSON round trips, exported JSON Schemas in sync."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from twinstream.schemas import DeadLetter, Prediction, RejectReason, Telemetry, topic_catalog
from twinstream.schemas.export import JSON_DIR, render_schemas
from twinstream.schemas.telemetry import datetime_to_ns

GOOD = {"entity_id": "pump-1", "event_time": "2026-01-01T00:00:00Z", "seq": 0, "metrics": {"p": 1.0}}


def test_telemetry_round_trip() -> None:
    t = Telemetry.model_validate(GOOD)
    assert Telemetry.model_validate_json(t.model_dump_json()) == t
    assert t.synthetic is False and t.schema_version == 1


@pytest.mark.parametrize(
    "patch",
    [
        {"entity_id": ""},
        {"entity_id": "has space"},
        {"seq": -1},
        {"event_time": "2026-01-01T00:00:00"},  # naive time is ambiguous
        {"metrics": {"p": math.inf}},
        {"targets": {"rul": math.nan}},
        {"confidence": {"p": 0.1}},  # confidence only on synthetic samples
        {"synthetic": True, "confidence": {"q": 0.1}},  # ... and only for its metrics
        {"synthetic": True, "confidence": {"p": -1.0}},
        {"generator": "kalman-llt-v1"},  # a measured sample names no generator
        {"schema_version": 2},
        {"unexpected": 1},
    ],
)
def test_telemetry_rejects(patch: dict) -> None:
    with pytest.raises(ValidationError):
        Telemetry.model_validate({**GOOD, **patch})


def test_missing_metric_is_null_not_nan() -> None:
    assert Telemetry.model_validate({**GOOD, "metrics": {"p": None}}).metrics == {"p": None}


def test_nan_reading_is_read_as_missing() -> None:
    """A NaN sensor value no longer drops the sample: it is a missing value."""
    raw = b'{"entity_id": "pump-1", "event_time": "2026-01-01T00:00:00Z", "seq": 0, "metrics": {"p": NaN, "q": 2.0}}'
    assert Telemetry.model_validate_json(raw).metrics == {"p": None, "q": 2.0}


def test_old_messages_get_back_compatible_defaults() -> None:
    """Messages written before the synthetic fields existed still validate, as measured input."""
    t = Telemetry.model_validate_json(json.dumps(GOOD))
    assert (t.synthetic, t.generator, t.confidence) == (False, None, {})
    old_prediction = {"entity_id": "e", "event_time": GOOD["event_time"], "seq": 0, "target": "rul", "value": 1.0,
                      "model_version": "m", "synthetic": False}
    p = Prediction.model_validate_json(json.dumps(old_prediction))
    assert p.synthetic_share == 0.0 and p.synthetic is False


def test_synthetic_fill_round_trip() -> None:
    fill = Telemetry.model_validate({**GOOD, "metrics": {"p": 1.5}, "synthetic": True, "generator": "g-v1",
                                     "confidence": {"p": 0.2}})
    assert Telemetry.model_validate_json(fill.model_dump_json()) == fill


@pytest.mark.parametrize("share, synthetic", [(-0.1, True), (1.5, True), (0.5, False)])
def test_prediction_synthetic_share_bounds(share: float, synthetic: bool) -> None:
    with pytest.raises(ValidationError):
        Prediction(entity_id="e", event_time=GOOD["event_time"], seq=0, target="rul", value=1.0, model_version="m",
                   synthetic=synthetic, synthetic_share=share)


def test_event_time_ns_is_exact() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    assert datetime_to_ns(moment) == int(moment.timestamp()) * 1_000_000_000 + 678_901_000


def test_prediction_interval_order() -> None:
    with pytest.raises(ValidationError):
        Prediction(entity_id="e", event_time=GOOD["event_time"], seq=0, target="rul", value=1.0,
                   lower=5.0, upper=2.0, model_version="m")


def test_dead_letter_keeps_bytes() -> None:
    raw = bytes(range(256))
    dl = DeadLetter(original=raw, topic="t.x", partition=0, offset=1, reason=RejectReason.BAD_JSON, error="e")
    assert DeadLetter.model_validate_json(dl.model_dump_json()).original == raw


def test_catalog_names_and_keys() -> None:
    specs = topic_catalog(partitions=6, namespace="plant")
    assert [s.name for s in specs] == ["plant.telemetry", "plant.predictions", "plant.telemetry.dlq", "plant.gaps",
                                       "plant.telemetry.synthetic", "plant.predictions.dlq"]
    assert {s.partitions for s in specs} == {6}
    assert all(s.key == "entity_id" for s in specs)
    dlq = specs[2]
    assert dlq.config["cleanup.policy"] == "delete" and int(dlq.config["retention.ms"]) > int(specs[0].config["retention.ms"])


def test_bad_namespace() -> None:
    with pytest.raises(ValueError):
        topic_catalog(partitions=1, namespace="Bad-Name")


def test_exported_json_schemas_match_models() -> None:
    for name, text in render_schemas().items():
        on_disk = (JSON_DIR / name).read_text()
        assert json.loads(on_disk) == json.loads(text), f"{name} is stale: run python -m twinstream.schemas.export"
