"""The worker's twin kinds: matching, unknown_kind, tasks beside the label task, the prior's domain."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from twinstream.datasets.cmapss import load_subset
from twinstream.models.prior_twin import PriorTwin
from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import Twin
from twinstream.schemas import RejectReason
from twinstream.schemas.dead_letter import DeadLetter
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.twin_spec import SpecError
from twinstream.settings import Settings
from twinstream.streams.kinds import bundled_spec_path
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
TWO_KINDS = """
kinds:
  - name: turbofan
    match: {entity_id: ["fd00?-*"]}
    tasks: [{type: label, target: rul}]
    learner: {family: prior-twin, params: {prior: bundled}}
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow}, {name: pressure}, {name: temp}]
    tasks:
      - {type: forecast, metric: flow, horizon: 2}
      - {type: anomaly, metric: flow}
"""


def message(entity: str, seq: int, metrics: dict, targets: dict | None = None, **extra: object) -> Record:
    body = {"entity_id": entity, "event_time": (NOW - timedelta(minutes=10_000 - seq)).isoformat(), "seq": seq,
            "metrics": metrics, "targets": targets or {}, **extra}
    return Record(entity.encode(), orjson.dumps(body), "twinstream.telemetry", 0, seq)


def processor(tmp_path: Path | None = None, spec: str | None = None, **settings: object) -> TwinProcessor:
    if spec is not None:
        assert tmp_path is not None
        (tmp_path / "twins.yaml").write_text(spec)
        settings["twins_spec"] = str(tmp_path / "twins.yaml")
    return TwinProcessor(Settings(**settings), {}.get, clock=lambda: NOW)


def pump_flow(seq: int) -> float:
    """A learnable signal: a slow cycle of period 24 plus a level."""
    return 50.0 + 10.0 * math.sin(2 * math.pi * seq / 24)


def test_bundled_spec_is_the_cmapss_example() -> None:
    assert bundled_spec_path("cmapss").read_text() == (ROOT / "examples" / "cmapss" / "twins.yaml").read_text()
    assert Settings().twins_spec == "bundled:cmapss"


def test_default_worker_serves_cmapss_engines_as_turbofans() -> None:
    proc = processor()
    row = load_subset("FD001").train[0]
    out = proc.process([message("fd001-train-001", 0, row.sensors, {"rul": 191.0})])
    assert not out.dead_letters and len(out.predictions) == 1
    p = Prediction.model_validate_json(out.predictions[0][1])
    assert (p.kind, p.task, p.target, p.target_seq, p.in_domain) == ("turbofan", "label", "rul", 0, True)
    assert proc.twins["fd001-train-001"].kind == "turbofan" and proc.twins["fd001-train-001"].tasks is None


def test_entity_of_no_kind_is_a_dead_letter_unknown_kind() -> None:
    proc = processor()
    out = proc.process([message("pump-0", s, {"flow": 1.0}) for s in range(3)])
    assert not out.predictions and len(out.dead_letters) == 3
    letters = [DeadLetter.model_validate_json(v) for _, v in out.dead_letters]
    assert {d.reason for d in letters} == {RejectReason.UNKNOWN_KIND}
    assert "pump-0" in letters[0].error and "cmapss.yaml" in letters[0].error
    assert proc.twins == {}  # nothing was created for it
    assert proc.metrics.dead_letters.labels("unknown_kind")._value.get() == 3


def test_kind_field_takes_precedence_over_the_id() -> None:
    proc = processor()
    row = load_subset("FD001").train[0]
    out = proc.process([message("engine-7", 0, row.sensors, kind="turbofan"),
                        message("fd001-train-002", 0, row.sensors, kind="pump")])
    assert [Prediction.model_validate_json(v).kind for _, v in out.predictions] == ["turbofan"]
    assert [DeadLetter.model_validate_json(v).reason for _, v in out.dead_letters] == [RejectReason.UNKNOWN_KIND]


def test_one_worker_serves_two_kinds_and_forecasts_learn(tmp_path: Path) -> None:
    proc = processor(tmp_path, TWO_KINDS)
    rows = [r for r in load_subset("FD001").train if r.unit == 1][:30]
    records = []
    for seq in range(150):
        if seq < len(rows):
            records.append(message("fd001-train-001", seq, rows[seq].sensors, {"rul": 191.0 - seq}))
        for k in range(3):
            records.append(message(f"pump-{k}", seq, {"flow": pump_flow(seq + 5 * k), "pressure": 3.0, "temp": 40.0}))
    out = proc.process(records)
    assert not out.dead_letters
    preds = [Prediction.model_validate_json(v) for _, v in out.predictions]
    by = {(p.kind, p.task) for p in preds}
    assert by == {("turbofan", "label"), ("pump", "forecast"), ("pump", "anomaly")}
    assert proc.metrics.events_applied._value.get() == 30 + 3 * 150  # events, not predictions
    assert proc.twins["pump-0"].learner is None and proc.twins["pump-0"].updates == 150
    forecasts = [p for p in preds if p.entity_id == "pump-0" and p.task == "forecast"]
    assert [p.target_seq for p in forecasts] == [s + 2 for s in range(150)]
    errors = [abs(p.value - pump_flow(p.target_seq)) for p in forecasts]
    early, late = sum(errors[2:30]) / 28, sum(errors[-30:]) / 30
    assert late < 0.5 * early, (early, late)
    assert forecasts[-1].lower is not None and forecasts[-1].lower <= forecasts[-1].value <= forecasts[-1].upper
    anomalies = [p for p in preds if p.task == "anomaly"]
    assert all(0.0 <= p.value <= 1.0 and p.flagged is not None for p in anomalies)
    # a redelivered pump sample is a duplicate for every task
    again = proc.process([message("pump-0", 149, {"flow": 1.0})])
    assert again.duplicates == 1 and not again.predictions


def test_twin_of_a_kind_survives_its_checkpoint(tmp_path: Path) -> None:
    proc = processor(tmp_path, TWO_KINDS)
    proc.process([message("pump-1", s, {"flow": pump_flow(s)}) for s in range(40)])
    blob = proc.take_dirty()[0][0][1]
    fresh = TwinProcessor(proc.settings, {"pump-1": blob}.get, clock=lambda: NOW)
    a = proc.process([message("pump-1", 40, {"flow": pump_flow(40)})]).predictions
    b = fresh.process([message("pump-1", 40, {"flow": pump_flow(40)})]).predictions
    assert a == b and len(a) == 2


def test_twin_checkpointed_without_a_kind_adopts_its_kind(tmp_path: Path) -> None:
    old = Twin(entity_id="pump-2", learner=RiverLinearTwin())
    object.__delattr__(old, "tasks")  # as pickled before kinds existed
    object.__delattr__(old, "kind")
    proc = TwinProcessor(processor(tmp_path, TWO_KINDS).settings, {"pump-2": old.to_bytes()}.get, clock=lambda: NOW)
    out = proc.process([message("pump-2", 0, {"flow": 1.0})])
    twin = proc.twins["pump-2"]
    assert twin.kind == "pump" and twin.tasks is not None
    assert {Prediction.model_validate_json(v).task for _, v in out.predictions} == {"label", "forecast", "anomaly"}


def test_bad_spec_stops_the_processor_before_anything(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"twins.yaml:5: kinds\[0\].tasks\[0\].horizon"):
        processor(tmp_path, "kinds:\n  - name: pump\n    match: {entity_id: ['pump-*']}\n    tasks:\n"
                            "      - {type: forecast, metric: flow, horizon: 0}\n")
    with pytest.raises(SpecError, match="learner 'no-such-learner'"):
        processor(tmp_path, "kinds:\n  - name: e\n    tasks: [{type: label, target: y}]\n"
                            "    learner: {family: no-such-learner}\n")
    with pytest.raises(SpecError, match="one label task per kind"):
        processor(tmp_path, "kinds:\n  - name: e\n    tasks: [{type: label, target: y}, {type: label, target: z}]\n"
                            "    learner: {family: river-linear}\n")
    with pytest.raises(SpecError, match="cannot read"):
        processor(twins_spec=str(tmp_path / "missing.yaml"))
    with pytest.raises(SpecError, match="no twins spec of that name"):
        processor(twins_spec="bundled:nothing")


def test_no_spec_is_the_single_learner_mode() -> None:
    proc = processor(twins_spec="none", learner="river-linear")
    out = proc.process([message("anything-1", 0, {"a": 1.0}, {"rul": 5.0})])
    p = Prediction.model_validate_json(out.predictions[0][1])
    assert (p.kind, p.task, p.target) == (None, "label", "rul")


def _engine(unit: int, shift: float, labels: bool) -> list[Record]:
    fd = load_subset("FD001")
    rows = [r for r in fd.test if r.unit == unit]
    last = rows[-1].cycle
    return [message(f"fd001-test-{unit:03d}", r.cycle - 1, {k: v * shift for k, v in r.sensors.items()},
                    {"rul": float(fd.test_rul[unit] + last - r.cycle)} if labels else None) for r in rows]


def _fleet_mean_error_scale() -> float:
    """Error scale of a baseline that knows nothing of the engine: MAE of the fleet's mean (capped) RUL."""
    truths = [min(float(v), 125.0) for v in load_subset("FD001").test_rul.values()]
    mean = sum(truths) / len(truths)
    return sum(abs(t - mean) for t in truths) / len(truths)


@pytest.mark.parametrize("labels", [False, True])
def test_engine_shifted_out_of_the_fleet_is_not_predicted_confidently(labels: bool) -> None:
    proc = processor()
    shifted = [Prediction.model_validate_json(v) for _, v in proc.process(_engine(31, 1.3, labels)).predictions]
    usual = [Prediction.model_validate_json(v) for _, v in proc.process(_engine(32, 1.0, labels)).predictions]
    assert all(p.in_domain for p in usual[-10:])
    scale = _fleet_mean_error_scale()
    for p in shifted[25:]:  # once its smoothing means have left the fleet's range
        assert p.in_domain is False and p.domain_score > 0.3
        assert p.upper - p.lower >= 2 * scale, (p, scale)
        assert p.upper >= 60.0  # never a confident near-failure answer
    if labels:  # it leans on its own labels: the last label carried forward
        assert abs(shifted[-1].value - (shifted[-2].value - 1.0)) < 1e-6


def test_prior_twin_domain_check_keeps_fd001_predictions() -> None:
    """Where every feature lies in the fleet's range (and no drift alarm is on) the check changes no value."""
    with_check, without = PriorTwin(), PriorTwin()
    without._domain = None  # the learner as it was before the check
    compared = 0
    for r in [r for r in load_subset("FD001").test if r.unit == 3]:
        a, b = with_check.observe_one(dict(r.sensors)), without.observe_one(dict(r.sensors))
        if with_check.domain_state == (True, 0.0) and not with_check.in_alarm:
            assert with_check.predict_one(a) == without.predict_one(b)
            compared += 1
    assert compared > 50


def test_points_of_one_event_are_keyed_by_task_and_target(tmp_path: Path) -> None:
    """A forecast and an anomaly score of one metric at one event are two InfluxDB series, not one point."""
    from twinstream.connectors.influx import to_line

    proc = processor(tmp_path, TWO_KINDS)
    out = proc.process([message("pump-0", s, {"flow": pump_flow(s)}) for s in range(3)])
    lines = [to_line(Prediction.model_validate_json(v)) for _, v in out.predictions[-2:]]
    series = {line.split(" ")[0] for line in lines}
    assert len(series) == 2 and {"task=forecast" in s for s in series} == {True, False}
    assert all(",kind=pump," in s for s in series) and "target_seq=4i" in lines[0]
