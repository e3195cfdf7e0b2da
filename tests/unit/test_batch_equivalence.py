"""Batched twin steps give what one event at a time gives, for every registered learner.

The worker applies a batch in waves (at most one event per entity per wave) and lets
each learner family batch its stateless work over a wave (``TwinLearner.observe_many``).
Here a processor fed one record at a time and one fed batches of the same records, on
real FD001 sensor rows, must publish the same predictions (per entity, to float
tolerance), dead letters and gaps, and end with the same twin state. The input mixes
what changes a twin's course: several events of one entity in one batch, labels on
some events only, skipped sequence numbers, a late event, a redelivery and synthetic
samples (learned with a weight).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict, deque
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from twinstream.datasets.cmapss import load_subset
from twinstream.models.features import RulFeatures
from twinstream.models.prior import bundled_prior_dir, load_prior
from twinstream.models.registry import LEARNERS
from twinstream.models.twin import Step, Twin
from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
TOPIC = "twinstream.telemetry"
UNITS = 6
CYCLES = 45

# (learner, its parameters, twins spec): every registered family alone, a variant without
# a prior, and the default kinds spec (C-MAPSS turbofans: label task plus the kind's tasks).
CASES: list[tuple[str, dict[str, Any], str]] = [(name, {}, "none") for name in sorted(LEARNERS)]
CASES += [("prior-twin", {"prior": None}, "none"), ("prior-twin", {"fallback_margin": 0.1}, "none"), ("prior-twin", {}, "bundled:cmapss")]
IDS = [f"{name}{''.join(f'-{k}={v}' for k, v in params.items())}-{spec.split(':')[-1]}" for name, params, spec in CASES]


@pytest.fixture(scope="module")
def events() -> list[tuple[str, bytes]]:
    """(entity, JSON) of FD001 rows of a few engines, interleaved at random but in order per engine."""
    fd = load_subset("FD001")
    rows: dict[int, list[Any]] = defaultdict(list)
    for row in sorted(fd.train, key=lambda r: (r.unit, r.cycle)):
        if row.unit <= UNITS and row.cycle <= CYCLES:
            rows[row.unit].append(row)
    per_entity: dict[str, list[bytes]] = {}
    for unit, unit_rows in rows.items():
        entity = f"engine-{unit}"
        out = []
        for row in unit_rows:
            seq = row.cycle - 1
            if unit == 2 and seq == 10:
                continue  # a skipped sequence number: a gap ...
            body: dict[str, Any] = {
                "entity_id": entity,
                "kind": "turbofan",
                "event_time": (NOW - timedelta(minutes=1000 - row.cycle)).isoformat(),
                "seq": seq,
                "metrics": dict(row.sensors),
            }
            if seq % 3 != 1:
                body["targets"] = {"rul": float(fd.train_rul_at(row))}
            if seq % 7 == 5:
                body["synthetic"] = True
            if unit == 3 and seq == 20:
                body["metrics"] = {k: (None if i % 4 == 0 else v) for i, (k, v) in enumerate(row.sensors.items())}
            out.append(json.dumps(body).encode())
        if unit == 2:  # ... whose event comes late, and a redelivery
            late = json.loads(out[14])
            late["seq"] = 10
            out.insert(16, json.dumps(late).encode())
            out.insert(20, out[19])
        per_entity[entity] = out
    rng = random.Random(5)
    order: list[tuple[str, bytes]] = []
    cursors = {entity: 0 for entity in per_entity}
    while cursors:
        entity = rng.choice(sorted(cursors))
        order.append((entity, per_entity[entity][cursors[entity]]))
        cursors[entity] += 1
        if cursors[entity] == len(per_entity[entity]):
            del cursors[entity]
    return order


def run(settings: Settings, events: list[tuple[str, bytes]], batch: int) -> tuple[TwinProcessor, dict[str, list[Any]]]:
    """Outputs per entity and topic (each topic keeps an entity's order, across topics there is none)."""
    processor = TwinProcessor(settings, lambda _: None, clock=lambda: NOW)
    outputs: dict[str, list[Any]] = defaultdict(list)
    records = [Record(entity.encode(), value, TOPIC, 0, i) for i, (entity, value) in enumerate(events)]
    for start in range(0, len(records), batch):
        out = processor.process(records[start : start + batch])
        for key, value in out.predictions:
            outputs[f"{key.decode()} prediction"].append(json.loads(value))
        for key, value in out.gaps:
            outputs[f"{key.decode()} gap"].append(json.loads(value))
        for key, value in out.dead_letters:
            letter = json.loads(value)
            outputs[f"{(key or b'').decode()} dead_letter"].append((letter["reason"], letter["offset"]))
    return processor, outputs


def assert_close(a: Any, b: Any, where: str = "", seen: set[int] | None = None) -> None:
    """Equal, with floats (also inside numpy arrays and objects' attributes) to a relative 1e-9."""
    seen = set() if seen is None else seen
    if isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), f"{where}: {a} != {b}"
    elif isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_close(a[k], b[k], f"{where}.{k}", seen)
    elif isinstance(a, list | tuple | deque):
        assert type(a) is type(b) and len(a) == len(b), f"{where}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close(x, y, f"{where}[{i}]", seen)
    elif type(a).__module__.startswith(("river.utils", "river._river_rust.vectordict")) and hasattr(
        a, "keys"
    ):  # e.g. a linear model's weights
        assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
        assert_close({k: a[k] for k in a.keys()}, {k: b[k] for k in b.keys()}, where, seen)
    elif type(a).__module__.startswith("river.stats") and hasattr(a, "get"):  # state held in Rust: compare its value
        assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
        assert_close(a.get(), b.get(), f"{where}.get()", seen)
    elif hasattr(a, "__dict__") or hasattr(a, "__slots__"):
        assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
        if id(a) in seen:
            return
        seen.add(id(a))
        names = set(getattr(a, "__dict__", {})) | {s for cls in type(a).__mro__ for s in getattr(cls, "__slots__", ())}
        for name in sorted(names):
            if hasattr(a, name) and not callable(getattr(a, name)):
                assert_close(getattr(a, name), getattr(b, name), f"{where}.{name}", seen)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize(("learner", "params", "spec"), CASES, ids=IDS)
def test_batched_equals_one_at_a_time(events: list[tuple[str, bytes]], learner: str, params: dict[str, Any], spec: str) -> None:
    settings = Settings(learner=learner, learner_params=params, twins_spec=spec, learn_from_synthetic=True, synthetic_learn_weight=0.5)
    single, expected = run(settings, events, batch=1)
    batched, got = run(settings, events, batch=64)
    assert sum(len(v) for v in expected.values()) >= len(events)
    assert expected["engine-2 dead_letter"] == [("out_of_order", 51)]  # the late event
    assert expected["engine-2 gap"] and expected["engine-3 gap"]  # the skipped seq, the missing sensors
    assert_close(dict(got), dict(expected), "outputs")
    assert single.twins.keys() == batched.twins.keys()
    for entity, twin in single.twins.items():
        assert_close(batched.twins[entity], twin, entity)


@pytest.mark.parametrize("learner", sorted(LEARNERS))
def test_step_many_equals_step_across_families(learner: str) -> None:
    """One wave holding twins of every family: each gets what its own ``step`` gives."""
    fd = load_subset("FD001")
    rows = sorted((r for r in fd.train if r.unit <= 3), key=lambda r: (r.cycle, r.unit))
    families = sorted(LEARNERS)

    def fleet() -> list[Twin]:
        return [Twin(f"u{u}-{name}", LEARNERS[name]()) for u in (1, 2, 3) for name in [learner, *families]]

    one, many = fleet(), fleet()
    for cycle in range(1, 40):
        wave = [r for r in rows if r.cycle == cycle]
        steps_one = [(twin, r) for twin, r in zip(one, [r for r in wave for _ in range(1 + len(families))])]
        steps_many = [(twin, r) for twin, r in zip(many, [r for r in wave for _ in range(1 + len(families))])]
        expected = [t.step(r.cycle, dict(r.sensors), float(fd.train_rul_at(r)) if cycle % 2 else None) for t, r in steps_one]
        got = Twin.step_many([Step(t, r.cycle, dict(r.sensors), float(fd.train_rul_at(r)) if cycle % 2 else None) for t, r in steps_many])
        assert_close(got, expected, f"cycle {cycle}")
    assert_close(many, one, "twins")


def test_prior_pairs_equal_pair_row_by_row() -> None:
    """The fleet prior over a matrix of feature vectors (missing values too) is its one-vector answer per row."""
    prior = load_prior(bundled_prior_dir(), RulFeatures().schema())
    fx = RulFeatures()
    fd = load_subset("FD001")
    vectors = [fx.update_vector(dict(r.sensors)) for r in sorted(fd.train, key=lambda r: (r.unit, r.cycle))[:200]]
    for k, vector in enumerate(vectors[::7]):
        vector[1 + k % (len(vector) - 1)] = math.nan
    a, b = prior.predict_pairs(vectors)
    expected = np.array([prior.predict_pair(v) for v in vectors])
    np.testing.assert_allclose(a, expected[:, 0], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(b, expected[:, 1], rtol=1e-12, atol=1e-9)
    assert len(set(np.round(b, 3))) > 50  # varied inputs, not one answer


KINDS = """
kinds:
  - name: turbofan
    match: {entity_id: ["engine-*"]}
    tasks: [{type: label, target: rul}]
    learner: {family: prior-twin, params: {prior: bundled}}
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow}, {name: pressure}]
    tasks:
      - {type: forecast, metric: flow, horizon: 2}
      - {type: anomaly, metric: flow}
"""


def test_batched_equals_one_at_a_time_with_task_only_kinds(events: list[tuple[str, bytes]], tmp_path: Any) -> None:
    """Engines (label task) and pumps (forecast and anomaly tasks, no learner) in the same batches."""
    pumps = []
    for seq in range(60):
        for p in range(3):
            flow = 50.0 + 10.0 * math.sin(2 * math.pi * (seq + 5 * p) / 24) + (30.0 if seq == 40 and p == 1 else 0.0)
            body = {
                "entity_id": f"pump-{p}",
                "event_time": (NOW - timedelta(minutes=1000 - seq)).isoformat(),
                "seq": seq,
                "metrics": {"flow": flow, "pressure": 3.0 + 0.01 * seq},
            }
            pumps.append((f"pump-{p}", json.dumps(body).encode()))
    rng = random.Random(9)
    mixed, a, b = [], list(events), pumps
    while a or b:  # interleaved, each stream in its order
        source = a if a and (not b or rng.random() < len(a) / (len(a) + len(b))) else b
        mixed.append(source.pop(0))
    (tmp_path / "twins.yaml").write_text(KINDS)
    settings = Settings(twins_spec=str(tmp_path / "twins.yaml"))
    single, expected = run(settings, mixed, batch=1)
    batched, got = run(settings, mixed, batch=50)
    assert len(expected["pump-1 prediction"]) == 120 and expected["engine-1 prediction"]
    assert_close(dict(got), dict(expected), "outputs")
    for entity, twin in single.twins.items():
        assert_close(batched.twins[entity], twin, entity)
