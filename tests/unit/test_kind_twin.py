"""Twins of declared kinds: unknown entities, pumps that forecast and learn online, label tasks out of domain."""

from __future__ import annotations

import math
import pickle

import numpy as np

from twinstream.models.domain import DomainBounds
from twinstream.models.kind_twin import TwinFactory
from twinstream.models.river_linear import RiverLinearTwin
from twinstream.schemas.twin_spec import KindRegistry, parse_spec

ENGINES_ONLY = """
kinds:
  - name: turbofan
    match: {entity_id: ["fd001-*"]}
    metrics: [{name: s2}, {name: s3}]
    tasks: [{type: label, target: rul}]
    learner: {family: river-linear}
"""
PUMPS = ENGINES_ONLY + """
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: pressure, unit: bar}, {name: temp, unit: degC}]
    tasks:
      - {type: forecast, metric: flow, horizon: 3}
      - {type: anomaly, metric: temp}
"""


def pump_sample(pump: int, seq: int, rng: np.random.Generator) -> dict[str, float]:
    return {"flow": 50.0 + 10.0 * math.sin(2 * math.pi * seq / 24 + pump) + rng.normal(0, 0.5),
            "pressure": 3.0 + rng.normal(0, 0.05), "temp": 40.0 + rng.normal(0, 0.3)}


def test_pumps_without_a_pump_kind_have_no_twin() -> None:
    factory = TwinFactory(KindRegistry(parse_spec(ENGINES_ONLY)))
    assert all(factory.new(f"pump-{i}") is None for i in range(3))  # -> unknown_kind dead letters
    assert factory.new("fd001-train-001") is not None


def test_pump_twins_forecast_and_learn_online() -> None:
    factory = TwinFactory(KindRegistry(parse_spec(PUMPS)))
    rng = np.random.default_rng(0)
    twins = {i: factory.new(f"pump-{i}") for i in range(3)}
    preds, flows = {}, {}
    for seq in range(150):  # 150 samples per pump, as a plant client would send them
        for i, twin in twins.items():
            sample = pump_sample(i, seq, rng)
            flows[(i, seq)] = sample["flow"]
            preds[(i, seq)] = twin.step(sample, seq)
    first = preds[(0, 149)]
    assert [(p.kind, p.task, p.target) for p in first] == [("pump", "forecast", "flow"), ("pump", "anomaly", "temp")]
    forecast = first[0]
    assert forecast.target_seq == 152 and forecast.lower <= forecast.value <= forecast.upper
    assert 0.0 <= first[1].value <= 1.0
    inner = twins[0].tasks[0][1]
    assert inner.labels == 150 - 3 - 3  # self-supervised labels from the later samples
    late = range(100, 150)  # after a few dozen self-supervised labels each twin beats "no change"
    for i in twins:
        twin_err = np.mean([abs(preds[(i, s - 3)][0].value - flows[(i, s)]) for s in late])
        last_err = np.mean([abs(flows[(i, s - 3)] - flows[(i, s)]) for s in late])
        assert twin_err < 0.8 * last_err


def test_label_task_out_of_domain_says_so_and_widens() -> None:
    bounds = DomainBounds.fit(np.random.default_rng(0).normal([640.0, 1590.0], [0.5, 5.0], size=(2000, 2)), ["s2", "s3"])
    factory = TwinFactory(KindRegistry(parse_spec(ENGINES_ONLY)), lambda kind: RiverLinearTwin(), label_domains={"turbofan": bounds})
    normal, shifted = factory.new("fd001-train-001"), factory.new("fd001-train-002")
    for seq in range(60):
        a = normal.step({"s2": 640.0, "s3": 1590.0}, seq, {"rul": 100.0 - seq})[0]
        b = shifted.step({"s2": 700.0, "s3": 1400.0}, seq, {"rul": 100.0 - seq})[0]
    assert a.in_domain and a.domain_score == 0.0
    assert not b.in_domain and b.domain_score == 1.0
    assert (b.upper - b.lower) >= 1.5 * (a.upper - a.lower) - 1e-9


def test_kind_twin_pickles() -> None:
    factory = TwinFactory(KindRegistry(parse_spec(PUMPS)))
    twin = factory.new("pump-1")
    rng = np.random.default_rng(2)
    for seq in range(80):
        twin.step(pump_sample(1, seq, rng), seq)
    copy = pickle.loads(pickle.dumps(twin))
    sample = pump_sample(1, 80, rng)
    assert copy.step(sample, 80) == twin.step(sample, 80)


def test_values_outside_the_declared_range_are_gaps() -> None:
    spec = parse_spec("kinds:\n  - name: probe\n    match: {entity_id: ['*']}\n    metrics: [{name: t, range: [0, 100]}]\n"
                      "    tasks: [{type: forecast, metric: t, horizon: 1}]\n")
    twin = TwinFactory(KindRegistry(spec)).new("probe-1")
    for seq in range(100):
        twin.step({"t": 50.0 + (seq % 5)}, seq)
    labels = twin.tasks[0][1].labels
    pred = twin.step({"t": 1e6}, 100)[0]  # a broken sensor, not a temperature
    assert twin.tasks[0][1].labels == labels  # not learned as a label
    assert 40.0 < pred.value < 60.0  # the forecast still comes from the plausible past


def test_a_prior_domain_over_feature_names_is_checked_on_the_learner_features() -> None:
    from twinstream.models.features import RulFeatures

    names = RulFeatures(sensors=("s2", "s3")).schema().names
    rows = np.random.default_rng(0).normal(size=(500, len(names)))
    rows[:, 0] = np.arange(500.0)  # age
    bounds = DomainBounds.fit(rows, names)
    spec = parse_spec(ENGINES_ONLY.replace("{family: river-linear}", "{family: prior-twin, params: {prior: null}}"))
    factory = TwinFactory(KindRegistry(spec), label_domains={"turbofan": bounds})
    twin = factory.new("fd001-train-003")
    pred = twin.step({"s2": 0.1, "s3": -0.2}, 0, {"rul": 100.0})[0]
    assert pred.in_domain
    pred = twin.step({"s2": 50.0, "s3": -0.2}, 1, {"rul": 99.0})[0]
    assert not pred.in_domain and pred.domain_score > 0.0
