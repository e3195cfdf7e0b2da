"""No input stops the processor: seeded poison through TwinProcessor, and a learner that fails.

Every record must end as a prediction, a dead letter or a counted duplicate; process()
never raises; valid events after the poison (same twins and fresh ones) are predicted;
and a record whose step raises half-way leaves its twin exactly as it was before it.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from poison_messages import Message, canaries, poison_messages

from twinstream.models import registry
from twinstream.models.base import IntervalPrediction
from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import Twin
from twinstream.schemas import DeadLetter, Prediction, RejectReason, Telemetry
from twinstream.settings import Settings
from twinstream.streams.fill_method import FillMethod
from twinstream.streams.filler import GapFiller
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor import Record, TwinProcessor
from twinstream.streams.validation import decode_telemetry

NOW = datetime(2026, 1, 20, tzinfo=UTC)  # after every valid sample's event time (T0 + minutes)
TOPIC = "twinstream.telemetry"


class Run:
    """A processor with an in-memory table, fed in batches, checkpointing now and then."""

    def __init__(self, **settings: Any) -> None:
        self.table: dict[str, bytes] = {}
        self.metrics = WorkerMetrics()
        self.processor = TwinProcessor(Settings(**{"twins_spec": "none", **settings}), lambda e: self.table.get(e), self.metrics,
                                       clock=lambda: NOW)
        self.offset = 0
        self.predictions: list[Prediction] = []
        self.letters: list[DeadLetter] = []
        self.duplicates = 0

    def feed(self, messages: list[Message], batch: int = 97, checkpoint_every: int = 3, topic: str = TOPIC) -> None:
        for number, start in enumerate(range(0, len(messages), batch)):
            records = []
            for message in messages[start:start + batch]:
                records.append(Record(message.key, message.value, topic, 0, self.offset))
                self.offset += 1
            out = self.processor.process(records)
            if topic == TOPIC:  # a fill on the synthetic topic may end in a twin's fill book, with no output
                assert len(out.predictions) + len(out.dead_letters) + out.duplicates == len(records)
            self.predictions += [Prediction.model_validate_json(value) for _, value in out.predictions]
            self.letters += [DeadLetter.model_validate_json(value) for _, value in out.dead_letters]
            self.duplicates += out.duplicates
            for _, value in out.dead_letters:
                assert len(value) < 512 * 1024  # fits one output record batch
            if number % checkpoint_every == 0:
                for items in self.processor.take_dirty().values():
                    self.table.update(items)

    def predicted(self) -> set[tuple[str, int]]:
        return {(p.entity_id, p.seq) for p in self.predictions}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poison_then_canaries(seed: int) -> None:
    messages = list(poison_messages(random.Random(seed), 3000, prefix=f"fz{seed}"))
    run = Run(learner="river-linear")
    run.feed(messages + canaries(f"fz{seed}"))

    assert len(run.predictions) + len(run.letters) + run.duplicates == len(messages) + 100
    predicted = run.predicted()
    assert {(m.entity_id, i // 10) for i, m in enumerate(canaries(f"fz{seed}"))} <= predicted
    shared_valid = [m for m in messages if m.kind == "valid_shared"]
    assert shared_valid and {(m.entity_id, orjson.loads(m.value)["seq"]) for m in shared_valid} <= predicted
    reasons = Counter(letter.reason for letter in run.letters)
    # validation bounds every field: nothing that passes it makes the twin or the encoder raise
    assert RejectReason.TWIN_ERROR not in reasons, [d.error for d in run.letters if d.reason is RejectReason.TWIN_ERROR][:3]
    # The gap detector may raise on a valid sample whose event time goes back behind the
    # entity's last one; it then starts afresh and the sample is still applied (stage "detect").
    assert {labels[0] for labels in run.metrics.twin_errors._metrics} <= {"detect"}
    for letter in run.letters:
        assert letter.error and letter.offset >= 0


def test_poison_on_the_synthetic_topic() -> None:
    """The sidecar's topic is input too: poison there (and fills for the poisoned entities) stops nothing."""
    messages = list(poison_messages(random.Random(5), 1500, prefix="syn"))
    fills = []
    for message in messages[:300]:
        body = {"entity_id": message.entity_id, "event_time": "2026-01-01T00:00:00Z", "seq": 0, "synthetic": True,
                "metrics": {"s2": 501.0}, "generator": "g-v1", "confidence": {"s2": 0.5}}
        fills.append(Message(message.entity_id.encode(), _json(body), message.entity_id, "fill"))
    run = Run(learner="river-linear")
    run.feed(messages + fills, topic="twinstream.telemetry.synthetic")
    run.feed(messages[:200] + canaries("syn"))
    assert {(m.entity_id, i // 10) for i, m in enumerate(canaries("syn"))} <= run.predicted()
    assert RejectReason.TWIN_ERROR not in {letter.reason for letter in run.letters}


def test_bounds_map_to_precise_reasons() -> None:
    def reason(**patch: Any) -> RejectReason:
        body = {"entity_id": "e", "event_time": "2026-01-01T00:00:00Z", "seq": 0, "metrics": {"a": 1.0}, **patch}
        result = decode_telemetry(_json(body), b"e", now=NOW)
        assert not isinstance(result, Telemetry), patch
        return result.reason

    assert reason(seq=2**63) is RejectReason.OUT_OF_RANGE
    assert reason(seq=2**70) is RejectReason.OUT_OF_RANGE
    assert reason(seq=-1) is RejectReason.OUT_OF_RANGE
    assert reason(metrics={"a": 1e300}) is RejectReason.OUT_OF_RANGE
    assert reason(metrics={"a": -(2**80)}) is RejectReason.OUT_OF_RANGE
    assert reason(targets={"rul": 1e16}) is RejectReason.OUT_OF_RANGE
    assert reason(event_time="0001-01-01T00:00:00+05:00") is RejectReason.OUT_OF_RANGE
    assert reason(event_time="2300-01-01T00:00:00Z") is RejectReason.OUT_OF_RANGE
    assert reason(metrics={"a": float("inf")}) is RejectReason.NON_FINITE
    assert reason(entity_id="x" * 129) is RejectReason.INVALID
    assert reason(source="x" * 129) is RejectReason.INVALID
    assert reason(metrics={"m" * 65: 1.0}) is RejectReason.INVALID
    assert reason(targets={f"t{i}": 1.0 for i in range(65)}) is RejectReason.INVALID
    assert reason(metrics={f"m{i}": 1.0 for i in range(1025)}) is RejectReason.INVALID
    ok = decode_telemetry(_json({"entity_id": "e", "event_time": "2026-01-01T00:00:00Z", "seq": 2**63 - 1,
                                 "metrics": {"a": 1e15, "b": -1e15}}), b"e", now=NOW)
    assert isinstance(ok, Telemetry)


def _json(body: dict) -> bytes:
    return json.dumps(body, allow_nan=True).encode()


def test_oversized_dead_letter_is_bounded() -> None:
    run = Run(learner="river-linear")
    huge = _json({"entity_id": "e", "event_time": "2026-01-01T00:00:00Z", "seq": 0, "metrics": {}, "x": "z" * 900_000})
    run.feed([Message(b"k" * 5000, huge, "e", "huge")])
    (letter,) = run.letters
    assert letter.reason is RejectReason.OVERSIZED
    assert letter.original == huge[: len(letter.original)] and letter.original_size == len(huge)
    assert len(letter.original) < len(huge) and letter.key == b"k" * 1024


# --- a learner that fails half-way --------------------------------------------------------------


class FlakyLearner(RiverLinearTwin):
    """River's linear twin, except that a sample with metric ``boom`` changes its state and then raises,
    and one with ``nan_out`` makes it predict NaN."""

    family = "flaky-test"

    def observe_one(self, x, synthetic=()):  # type: ignore[no-untyped-def]
        x = super().observe_one(x, synthetic)
        if x.get("boom") is not None:
            raise RuntimeError("learner blew up half-way")
        return x

    def predict_interval(self, x):  # type: ignore[no-untyped-def]
        if x.get("nan_out") is not None:
            return IntervalPrediction(float("nan"), float("nan"), float("nan"))
        return super().predict_interval(x)


def sample(entity: str, seq: int, **extra: float) -> bytes:
    return _json({"entity_id": entity, "event_time": (datetime(2026, 1, 1, tzinfo=UTC)
                                                       + timedelta(minutes=seq)).isoformat(),
                  "seq": seq, "metrics": {"a": 1.0 + seq, "b": 2.0 * seq, **extra}, "targets": {"rul": 100.0 - seq}})


@pytest.mark.parametrize("poison", [{"boom": 1.0}, {"nan_out": 1.0}])
@pytest.mark.parametrize("checkpoint_before", ["done", "earlier", "begun", "none"])
def test_failed_step_restores_the_twin(monkeypatch: pytest.MonkeyPatch, poison: dict, checkpoint_before: str) -> None:
    """The twin after a failed record predicts exactly like a twin that never saw it.

    ``begun``: a checkpoint's snapshot still waits for the twin when the record comes.
    ``earlier``: a later checkpoint found it unchanged, so its state is only in the table.
    """
    monkeypatch.setitem(registry.LEARNERS, FlakyLearner.family, FlakyLearner)

    def run(with_poison: bool) -> Run:
        r = Run(learner=FlakyLearner.family, gap_detection=False)
        first = [Message(b"e", sample("e", s), "e", "ok") for s in range(5)]
        r.feed(first, batch=2, checkpoint_every=1 if checkpoint_before in ("done", "earlier") else 10**6)
        if checkpoint_before == "earlier":
            assert r.processor.take_dirty() == {}
        if checkpoint_before == "begun":
            assert set(r.processor.begin_snapshot().pending) == {"e"}  # changed since the first batch's checkpoint
        later = [Message(b"e", sample("e", s), "e", "ok") for s in range(6, 12)]
        if with_poison:
            later.insert(0, Message(b"e", sample("e", 5, **poison), "e", "poison"))
        r.feed(later, batch=3, checkpoint_every=10**6)
        return r

    clean, poisoned = run(False), run(True)
    (letter,) = poisoned.letters
    assert letter.reason is RejectReason.TWIN_ERROR and letter.entity_id == "e" and letter.offset == 5
    assert ("blew up" in letter.error) if "boom" in poison else ("predicted value=nan" in letter.error)
    assert [(p.seq, p.value, p.updates) for p in poisoned.predictions] == [(p.seq, p.value, p.updates)
                                                                            for p in clean.predictions]
    assert poisoned.metrics.twin_errors.labels("apply")._value.get() == 1
    # the restored twin is what gets checkpointed
    for items in poisoned.processor.take_dirty().values():
        poisoned.table.update(items)
    for items in clean.processor.take_dirty().values():
        clean.table.update(items)
    a, b = Twin.from_bytes(poisoned.table["e"]), Twin.from_bytes(clean.table["e"])
    assert (a.last_seq, a.updates, a.labelled) == (b.last_seq, b.updates, b.labelled)


def test_an_undo_whose_table_read_fails_sends_the_twin_back_to_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The undo reads the twin's checkpointed bytes from the table; a failing read ends the undo, not the batch."""
    monkeypatch.setitem(registry.LEARNERS, FlakyLearner.family, FlakyLearner)
    r = Run(learner=FlakyLearner.family, gap_detection=False)
    r.feed([Message(b"e", sample("e", s), "e", "ok") for s in range(3)], batch=3, checkpoint_every=1)
    assert r.processor.take_dirty() == {}  # nothing changed since: the twin's bytes are in the table only
    table, failing = r.table, {"on": True}

    def load(entity: str) -> bytes | None:
        if failing["on"]:
            raise OSError("store unavailable")
        return table.get(entity)

    r.processor.load_twin = load
    r.feed([Message(b"e", sample("e", 3, boom=1.0), "e", "poison")], batch=1, checkpoint_every=10**6)
    assert [letter.reason for letter in r.letters] == [RejectReason.TWIN_ERROR]
    assert r.metrics.twin_errors.labels("restore")._value.get() == 1 and "e" not in r.processor.twins
    failing["on"] = False
    r.feed([Message(b"e", sample("e", 4), "e", "ok")], batch=1, checkpoint_every=10**6)
    twin = r.processor.twins["e"]
    assert (twin.last_seq, twin.updates) == (4, 4)  # the checkpointed three, then this one


def test_unreadable_twin_state_is_a_dead_letter_not_a_crash() -> None:
    run = Run(learner="river-linear")
    run.table["e"] = b"not a pickle"
    run.feed([Message(b"e", sample("e", 0), "e", "ok"), Message(b"f", sample("f", 0), "f", "ok")])
    assert [letter.reason for letter in run.letters] == [RejectReason.TWIN_ERROR]
    assert run.predicted() == {("f", 0)}
    assert run.metrics.twin_errors.labels("load")._value.get() == 1


# --- the sidecar's filler reads telemetry too ---------------------------------------------------


def test_filler_survives_whatever_the_schema_accepts() -> None:
    """The sidecar decodes telemetry with the Telemetry model; anything that passes must not break its filler."""
    filler = GapFiller(FillMethod.baseline("test"), window=16, max_missed=5)
    accepted = 0
    for message in poison_messages(random.Random(11), 3000, prefix="sc"):
        if not message.value:
            continue
        try:
            sample_ = Telemetry.model_validate_json(message.value)
        except ValueError:
            continue
        accepted += 1
        filler.on_telemetry(sample_)
    filler.produce()
    assert accepted > 100
