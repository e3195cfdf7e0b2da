"""TwinProcessor with gaps and synthetic fills, without a broker.

What must hold: a sample with a missing sensor is still applied; gaps are published;
a fill never replaces a measured value; fills are used for missing sensors (at their
own seq when early, carried forward when late) and the prediction's synthetic_share
counts them; twins do not learn from synthetic input unless configured to.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from twinstream.models.twin import Twin
from twinstream.schemas import DeadLetter, Gap, Prediction, RejectReason
from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TELEMETRY = "twinstream.telemetry"
SYNTHETIC = "twinstream.telemetry.synthetic"


def sample(seq: int, a: float | None = 1.0, b: float | None = 2.0, rul: float | None = None, **patch: object) -> bytes:
    body: dict[str, object] = {
        "entity_id": "e1",
        "event_time": (NOW - timedelta(minutes=100 - seq)).isoformat(),
        "seq": seq,
        "metrics": {"a": a if a is None else a + 0.1 * seq, "b": b if b is None else b + 0.05 * (seq % 3)},
    }
    if rul is not None:
        body["targets"] = {"rul": rul}
    body.update(patch)
    return json.dumps(body).encode()


def fill(seq: int, **values: float) -> bytes:
    return json.dumps({
        "entity_id": "e1", "event_time": (NOW - timedelta(minutes=100 - seq)).isoformat(), "seq": seq,
        "metrics": values, "synthetic": True, "generator": "test-v1", "confidence": {k: 0.1 for k in values},
    }).encode()


class Harness:
    """Feeds one record at a time and records what the twin was given to step on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, **settings: object) -> None:
        self.table: dict[str, bytes] = {}
        settings = {"learner": "river-linear", "twins_spec": "none", **settings}  # single-learner mode: "e1" has no kind
        self.processor = TwinProcessor(Settings(**settings), self.table.get, clock=lambda: NOW)
        self.offset = 0
        self.inputs: dict[int, dict[str, float | None]] = {}
        original = Twin.step

        self.synthetic: dict[int, frozenset[str]] = {}
        self.weights: dict[int, float] = {}  # seq -> sample weight of a learned label

        def spy(twin: Twin, seq: int, metrics, target, synthetic=frozenset(), weight=1.0):  # type: ignore[no-untyped-def]
            self.inputs[seq] = dict(metrics)
            self.synthetic[seq] = frozenset(synthetic)
            if target is not None:
                self.weights[seq] = weight
            return original(twin, seq, metrics, target, synthetic, weight=weight)

        monkeypatch.setattr(Twin, "step", spy)

    def feed(self, value: bytes, topic: str = TELEMETRY):
        self.offset += 1
        return self.processor.process([Record(b"e1", value, topic, 0, self.offset)])

    def prediction(self, value: bytes) -> Prediction:
        out = self.feed(value)
        assert len(out.predictions) == 1, out
        return Prediction.model_validate_json(out.predictions[0][1])

    def fill_counts(self) -> dict[str, float]:
        counter = self.processor.metrics.synthetic_fill_values
        return {labels["outcome"]: value for metric in counter.collect() for _, labels, value, *_ in
                [(s.name, s.labels, s.value) for s in metric.samples if s.name.endswith("_total")]}

    @property
    def twin(self) -> Twin:
        return self.processor.twins["e1"]


def warm(h: Harness, n: int = 30) -> None:
    for seq in range(n):
        p = h.prediction(sample(seq))
        assert p.synthetic_share == 0.0 and not p.synthetic


def test_sample_with_missing_sensor_is_applied_and_gap_published(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    out = h.feed(sample(30, b=None))
    assert len(out.predictions) == 1 and not out.dead_letters
    gaps = [Gap.model_validate_json(value) for _, value in out.gaps]
    assert [(g.kind.value, g.sensors, g.first_seq, g.open) for g in gaps] == [("missing_sensor", ["b"], 30, True)]
    assert out.gaps[0][0] == b"e1"
    assert h.inputs[30]["b"] is None  # no fill yet: the features keep b's last state
    # a NaN reading is a missing value too, not a dead letter
    out = h.feed(sample(31).replace(b'"b": 2.05', b'"b": NaN'))
    assert len(out.predictions) == 1 and not out.dead_letters and h.inputs[31]["b"] is None


def test_gap_detection_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch, gap_detection=False)
    warm(h, 10)
    assert not h.feed(sample(10, b=None)).gaps and h.twin.detector is None


def test_late_fill_is_carried_forward_and_counted_in_the_share(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(sample(30, b=None))
    out = h.feed(fill(30, b=7.5), topic=SYNTHETIC)
    assert not out.predictions and not out.dead_letters  # a fill is input, not an event
    p = h.prediction(sample(31, b=None))
    assert h.inputs[31]["b"] == 7.5 and h.inputs[31]["a"] == pytest.approx(1.0 + 3.1)
    assert p.synthetic and p.synthetic_share == pytest.approx(1 / 2)  # 1 filled of 2 values
    # the sensor is measured again: its measured value is used, nothing is carried any more
    p = h.prediction(sample(32))
    assert h.inputs[32]["b"] == pytest.approx(2.1) and p.synthetic_share == 0.0
    h.feed(sample(33, b=None))
    assert h.inputs[33]["b"] is None


def test_early_fill_is_used_at_its_own_seq(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(fill(30, b=6.25), topic=SYNTHETIC)  # arrives before the measured sample 30
    p = h.prediction(sample(30, b=None))
    assert h.inputs[30]["b"] == 6.25 and p.synthetic_share == pytest.approx(0.5)
    assert h.fill_counts().get("early") == 1


def test_fill_never_overwrites_a_measured_value(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(sample(30, b=None))
    # seq 29 was fully measured; at seq 30 only b was missing, a was measured
    h.feed(fill(29, a=-50.0, b=-50.0), topic=SYNTHETIC)
    h.feed(fill(30, a=-60.0, b=8.0), topic=SYNTHETIC)
    counts = h.fill_counts()
    assert counts.get("refused_measured") == 3 and counts.get("accepted") == 1
    h.feed(sample(31, b=None))
    assert h.inputs[31]["a"] == pytest.approx(1.0 + 3.1) and h.inputs[31]["b"] == 8.0
    # an early fill for a value the sample then measures is refused too
    h.feed(fill(32, b=-70.0), topic=SYNTHETIC)
    p = h.prediction(sample(32))
    assert h.inputs[32]["b"] == pytest.approx(2.1) and p.synthetic_share == 0.0
    assert h.fill_counts().get("refused_measured") == 4
    assert all(v is None or v > -1 for inputs in h.inputs.values() for v in inputs.values())


def test_duplicate_fill_keeps_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(sample(30, b=None))
    h.feed(fill(30, b=8.0), topic=SYNTHETIC)
    h.feed(fill(30, b=9.0), topic=SYNTHETIC)  # redelivered by a restarted sidecar, other value
    h.feed(sample(31, b=None))
    assert h.inputs[31]["b"] == 8.0 and h.fill_counts().get("duplicate") == 1


def test_fill_for_a_missed_sample_is_absorbed_once_without_a_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    out = h.feed(sample(33))  # 30..32 never arrived
    assert [Gap.model_validate_json(v).kind.value for _, v in out.gaps] == ["missed_samples"]
    updates = h.twin.updates
    out = h.feed(fill(31, a=1.0, b=2.0), topic=SYNTHETIC)
    assert not out.predictions and not out.dead_letters
    assert h.twin.updates == updates + 1 and h.fill_counts().get("absorbed_missed") == 2
    h.feed(fill(31, a=5.0, b=6.0), topic=SYNTHETIC)  # redelivered: not absorbed twice
    assert h.twin.updates == updates + 1 and h.fill_counts().get("duplicate") == 2
    out = h.feed(sample(31))  # the measured sample still arrives: reported late, as without the fill
    assert DeadLetter.model_validate_json(out.dead_letters[0][1]).reason is RejectReason.OUT_OF_ORDER


def test_filled_sensors_are_named_synthetic_to_the_twin(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(sample(30, b=None))
    h.feed(fill(30, b=8.0), topic=SYNTHETIC)
    h.feed(sample(31, b=None))
    assert h.synthetic[30] == frozenset() and h.synthetic[31] == {"b"}


def test_measured_message_on_the_synthetic_topic_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    out = h.feed(sample(0), topic=SYNTHETIC)
    assert not out.predictions
    assert DeadLetter.model_validate_json(out.dead_letters[0][1]).reason is RejectReason.INVALID


def learn_through_fills(h: Harness) -> float:
    """30 measured labelled samples, then 4 labelled samples whose input holds a fill; the prediction of a probe after them."""
    for seq in range(30):
        h.feed(sample(seq, rul=200.0 - seq))
    assert h.twin.labelled == 30
    h.feed(sample(30, b=None, rul=170.0))  # missing, no fill: measured input only, learned
    h.feed(fill(30, b=8.0), topic=SYNTHETIC)
    for seq in range(31, 35):  # 4 labelled events whose input holds a fill
        p = h.prediction(sample(seq, b=None, rul=100.0))  # labels far off the trend: learning them shows
        assert p.synthetic_share > 0
    return h.prediction(sample(35)).value  # measured, unlabelled


@pytest.mark.parametrize("learn, weight, expected", [(False, 1.0, 0), (True, 1.0, 4), (True, 0.5, 4)])
def test_learning_from_synthetic_input_is_off_by_default(
    monkeypatch: pytest.MonkeyPatch, learn: bool, weight: float, expected: int
) -> None:
    h = Harness(monkeypatch, learn_from_synthetic=learn, synthetic_learn_weight=weight)
    learn_through_fills(h)
    assert h.twin.labelled - 30 - 1 == expected
    assert h.weights[30] == 1.0  # measured input: full weight
    assert [h.weights.get(seq) for seq in range(31, 35)] == ([weight] * 4 if learn else [None] * 4)


def test_synthetic_learn_weight_scales_the_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """Weight 0.5 learns every labelled synthetic-input event, less than weight 1, more than not learning."""
    probes = {}
    for name, settings in {"off": {}, "w=1": {"synthetic_learn_weight": 1.0}, "w=0.5": {"synthetic_learn_weight": 0.5}}.items():
        with monkeypatch.context() as m:
            probes[name] = learn_through_fills(Harness(m, learn_from_synthetic=name != "off", **settings))
    assert len(set(probes.values())) == 3, probes
    # the labels (100) lie below the trend (~165): learning them pulls the prediction down, w=1 furthest
    assert probes["w=1"] < probes["w=0.5"] < probes["off"], probes


def test_twin_state_with_detector_and_fills_survives_a_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness(monkeypatch)
    warm(h)
    h.feed(sample(30, b=None))
    h.feed(fill(30, b=8.0), topic=SYNTHETIC)
    for items in h.processor.take_dirty().values():
        h.table.update(items)
    h.processor.drop_all()  # as after a restart: the twin comes back from the table
    restored = Twin.from_bytes(h.table["e1"])
    assert restored.detector is not None and restored.detector.last_seq == 30
    h.feed(sample(31, b=None))
    assert h.inputs[31]["b"] == 8.0
    assert not h.feed(sample(31, b=None)).predictions  # duplicate after restore: skipped


def test_fill_book_from_a_checkpoint_with_a_removed_field_loads() -> None:
    import pickle

    from twinstream.models.fills import FillBook

    book = FillBook(known={"a", "b"}, refused_early=2)
    book.latest["a"] = (3, 1.5)
    assert pickle.loads(pickle.dumps(book)) == book
    _, values = book.__getstate__()
    old = FillBook.__new__(FillBook)
    old.__setstate__((None, {**values, "learn_credit": 0.75}))  # what an older checkpoint holds
    assert old == book and not hasattr(old, "learn_credit")
