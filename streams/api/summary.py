"""What the API says about a twin, and how clients select, filter and page it (pure code).

The summary joins two sources: the twin's own state (sequence, counters, prior,
drift and gap state, size) and the last prediction it published per task (value,
interval, in-domain flag, synthetic share), because a twin does not keep its
predictions. Filters are a small subset of RQL, as in Eclipse Ditto's search:

>>> doc = {"entity_id": "pump-7", "kind": "pump", "updates": 12, "prior_version": None}
>>> compile_filter('and(eq(kind,"pump"),gt(updates,10))')(doc)
True
>>> compile_filter("or(lt(updates,3),exists(prior_version))")(doc)
False
>>> select_fields(doc, "entity_id,updates")
{'entity_id': 'pump-7', 'updates': 12}
>>> decode_cursor(encode_cursor("pump-7"))
'pump-7'
"""

from __future__ import annotations

import base64
import hashlib
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from twinstream.models.twin import Twin

MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50

Document = dict[str, Any]


def prediction_view(prediction: Mapping[str, Any]) -> Document:
    """The part of a published prediction the summary and the stream show."""
    keys = (
        "seq",
        "event_time",
        "task",
        "target",
        "target_seq",
        "value",
        "lower",
        "upper",
        "measured",
        "in_domain",
        "domain_score",
        "flagged",
        "synthetic_share",
        "prior_version",
        "model_version",
        "updates",
    )
    return {key: prediction.get(key) for key in keys}


def task_key(prediction: Mapping[str, Any]) -> str:
    """One slot per task and target: ``label:rul``, ``forecast:flow``, ``anomaly:flow``."""
    return f"{prediction.get('task') or 'label'}:{prediction.get('target')}"


def twin_state(twin: Twin, state_bytes: int) -> Document:
    """What the twin itself knows: the summary without its published predictions.

    Computed in the worker (it reads the live twin), joined with the predictions in the
    API process (:func:`join_summary`).
    """
    learner = twin.learner
    tasks = twin.tasks
    prior_version = getattr(learner, "prior_version", None) if learner is not None else None
    if prior_version is None and tasks is not None:
        prior_version = getattr(tasks, "prior_version", None)
    return {
        "entity_id": twin.entity_id,
        "kind": twin.kind,
        "last_seq": twin.last_seq,
        "updates": twin.updates,
        "labelled": twin.labelled,
        "learner": type(learner).__name__ if learner is not None else None,
        "prior_version": prior_version,
        "drift": {
            "alarms": getattr(learner, "drift_alarms", None),
            "last_alarm_age": getattr(learner, "last_drift_age", None),
        },
        "gaps": {
            "skipped": twin.gaps,
            "awaiting": len(twin.missing),
            "absorbed": len(twin.absorbed),
            "detector": twin.detector is not None,
        },
        "state_bytes": state_bytes,
    }


def join_summary(state: Mapping[str, Any], last: Mapping[str, Mapping[str, Any]]) -> Document:
    """The summary of one twin: its state and its last prediction per task key (``last``)."""
    latest = max(last.values(), key=lambda p: p.get("seq", -1), default=None)
    return {
        **state,
        "event_time": latest.get("event_time") if latest else None,
        "predictions": {key: prediction_view(p) for key, p in sorted(last.items())},
        "synthetic_share": latest.get("synthetic_share") if latest else None,
    }


def twin_summary(twin: Twin, state_bytes: int, last: Mapping[str, Mapping[str, Any]]) -> Document:
    """The summary of one twin; ``last`` holds its last prediction per task key."""
    return join_summary(twin_state(twin, state_bytes), last)


def select_fields(doc: Document, fields: str | None) -> Document:
    """Keep the comma-separated top-level fields (``fields=entity_id,kind``); None keeps all."""
    if not fields:
        return doc
    wanted = [name.strip() for name in fields.split(",") if name.strip()]
    return {name: doc[name] for name in wanted if name in doc}


def etag(doc: Document) -> str:
    """A strong validator of the representation: the same JSON gives the same tag."""
    return '"' + hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32] + '"'


def encode_cursor(last_entity_id: str) -> str:
    """Keyset cursor: entities are listed by id, a page continues after the last id."""
    return base64.urlsafe_b64encode(last_entity_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return base64.b64decode(padded.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(f"invalid cursor {cursor!r}") from exc


# --- RQL subset ---------------------------------------------------------------------------
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<punct>[(),])|(?P<word>[^\s(),"]+))')


def _tokens(text: str) -> list[str]:
    out, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"filter: cannot read {text[pos:]!r}")
            break
        out.append(match.group("str") or match.group("punct") or match.group("word"))
        pos = match.end()
    return out


def _literal(token: str) -> Any:
    if token.startswith('"'):
        return orjson.loads(token)
    if token in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[token]
    try:
        return int(token)
    except ValueError:
        try:
            return float(token)
        except ValueError:
            return token


def _field(doc: Mapping[str, Any], path: str) -> Any:
    """Dotted paths reach into objects: ``predictions.label:rul.in_domain``."""
    value: Any = doc
    for part in path.split("/") if "/" in path else path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def compile_filter(text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate from an RQL expression: eq ne gt ge lt le (field,value), exists(field), and/or/not(...).

    Fields are top-level names or ``/``- or ``.``-separated paths. Raises ValueError on bad syntax.
    """
    if not text:
        return lambda doc: True
    tokens = _tokens(text)
    pos = 0

    def expect(token: str) -> None:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != token:
            raise ValueError(f"filter: expected {token!r} at token {pos}")
        pos += 1

    def parse() -> Callable[[Mapping[str, Any]], bool]:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("filter: unexpected end")
        name = tokens[pos]
        pos += 1
        expect("(")
        if name in ("and", "or"):
            parts = [parse()]
            while pos < len(tokens) and tokens[pos] == ",":
                pos += 1
                parts.append(parse())
            expect(")")
            combine = all if name == "and" else any
            return lambda doc: combine(part(doc) for part in parts)
        if name == "not":
            inner = parse()
            expect(")")
            return lambda doc: not inner(doc)
        if pos >= len(tokens):
            raise ValueError("filter: unexpected end")
        field = tokens[pos]
        pos += 1
        if name == "exists":
            expect(")")
            return lambda doc: _field(doc, field) is not None
        if name not in _COMPARE:
            raise ValueError(f"filter: unknown operator {name!r}")
        expect(",")
        if pos >= len(tokens):
            raise ValueError("filter: unexpected end")
        value = _literal(tokens[pos])
        pos += 1
        expect(")")
        compare = _COMPARE[name]

        def check(doc: Mapping[str, Any]) -> bool:
            actual = _field(doc, field)
            if name not in ("eq", "ne") and (actual is None or value is None):
                return False
            try:
                return bool(compare(actual, value))
            except TypeError:
                return False

        return check

    predicate = parse()
    if pos != len(tokens):
        raise ValueError(f"filter: unexpected {tokens[pos]!r}")
    return predicate
