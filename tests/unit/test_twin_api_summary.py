"""The twin API's pure parts: the summary of a twin, field selection, ETags, RQL filters, keyset cursors."""

from __future__ import annotations

import pytest

from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import Twin
from twinstream.streams.api.summary import (
    compile_filter,
    decode_cursor,
    encode_cursor,
    etag,
    select_fields,
    twin_summary,
)


def a_twin() -> Twin:
    twin = Twin(entity_id="engine-7", learner=RiverLinearTwin(), kind="turbofan")
    for seq in (0, 1, 4):
        twin.step(seq, {"s1": 1.0 + seq}, target=100.0 - seq)
    return twin


def test_summary_joins_twin_state_and_last_predictions() -> None:
    last = {
        "label:rul": {
            "seq": 4,
            "event_time": "2026-01-01T00:00:04Z",
            "task": "label",
            "target": "rul",
            "value": 90.0,
            "lower": 80.0,
            "upper": 99.0,
            "in_domain": True,
            "synthetic_share": 0.25,
        }
    }
    doc = twin_summary(a_twin(), 1234, last)
    assert doc["entity_id"] == "engine-7" and doc["kind"] == "turbofan"
    assert (doc["last_seq"], doc["updates"], doc["labelled"]) == (4, 3, 3)
    assert doc["gaps"] == {"skipped": 2, "awaiting": 2, "absorbed": 0, "detector": False}
    assert doc["event_time"] == "2026-01-01T00:00:04Z" and doc["synthetic_share"] == 0.25
    assert doc["predictions"]["label:rul"]["lower"] == 80.0 and doc["predictions"]["label:rul"]["in_domain"] is True
    assert doc["state_bytes"] == 1234
    assert twin_summary(a_twin(), 0, {})["event_time"] is None


def test_fields_and_etag() -> None:
    doc = twin_summary(a_twin(), 10, {})
    assert select_fields(doc, "kind, last_seq,nope") == {"kind": "turbofan", "last_seq": 4}
    assert select_fields(doc, None) is doc
    assert etag(doc) == etag(dict(doc)) and etag(doc) != etag(doc | {"updates": 4})
    assert etag(doc).startswith('"') and etag(doc).endswith('"')


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('eq(kind,"pump")', True),
        ("ne(kind,pump)", False),
        ("and(ge(updates,12),lt(updates,13))", True),
        ("or(gt(updates,100),not(exists(prior_version)))", True),
        ("eq(predictions.forecast:flow.in_domain,false)", True),
        ("eq(predictions/forecast:flow/in_domain,true)", False),
        ("gt(prior_version,1)", False),  # comparisons with a missing value are false
        ('eq(entity_id,"pump-7")', True),
    ],
)
def test_rql_filters(expression: str, expected: bool) -> None:
    doc = {
        "entity_id": "pump-7",
        "kind": "pump",
        "updates": 12,
        "prior_version": None,
        "predictions": {"forecast:flow": {"in_domain": False}},
    }
    assert compile_filter(expression)(doc) is expected


@pytest.mark.parametrize("bad", ["eq(kind", "in(kind,a)", "eq(kind,a))", "and()", 'eq(kind,"a', "eq kind"])
def test_rql_syntax_errors_are_value_errors(bad: str) -> None:
    with pytest.raises(ValueError):
        compile_filter(bad)


def test_cursor_round_trip_and_garbage() -> None:
    for entity in ("a", "pump-7", "site:a.b_c-9"):
        assert decode_cursor(encode_cursor(entity)) == entity
    with pytest.raises(ValueError):
        decode_cursor("%%%")
