"""Conformance suite: every twin learner in the registry keeps the TwinLearner contract.

Parametrized from ``LEARNERS`` (plus variants of constructor parameters), so a learner
added to the registry is covered without editing this file; a concrete TwinLearner
subclass missing from the registry fails ``test_every_learner_is_registered``.
The input stream is real C-MAPSS FD001 data (engine by engine, labelled with RUL),
driven exactly as :class:`~twinstream.models.twin.Twin` drives a learner.
"""

from __future__ import annotations

import importlib
import math
import pickle
import pkgutil
from collections.abc import Iterator
from typing import Any

import pytest

import twinstream.models
from twinstream.datasets.cmapss import load_subset
from twinstream.models.base import IntervalPrediction, TwinLearner
from twinstream.models.registry import DEFAULT_LEARNER, DEFAULT_PARAMS, LEARNERS, make_learner
from twinstream.models.twin import Twin

# Extra constructor variants worth checking beyond each family's defaults.
VARIANTS: dict[str, list[dict[str, Any]]] = {"prior-twin": [{"prior": None}]}
CASES = [(name, {}) for name in sorted(LEARNERS)] + [(n, p) for n, ps in sorted(VARIANTS.items()) for p in ps]
IDS = [f"{name}{'-' + '-'.join(f'{k}={v}' for k, v in p.items()) if p else ''}" for name, p in CASES]


@pytest.fixture(scope="module")
def stream() -> list[tuple[dict[str, float], float]]:
    """FD001 training rows in engine order with their RUL (about 20k samples)."""
    fd = load_subset("FD001")
    return [(dict(r.sensors), float(fd.train_rul_at(r))) for r in sorted(fd.train, key=lambda r: (r.unit, r.cycle))]


def run(learner: TwinLearner, samples: list[tuple[dict[str, float], float]], learn: bool = True) -> list[float]:
    """Drive a learner like Twin.step does: observe, predict (interval), learn."""
    out = []
    for metrics, y in samples:
        x = learner.observe_one(metrics)
        p = learner.predict_interval(x)
        out.append(p.value)
        if learn:
            learner.learn_one(x, y)
    return out


def run_weighted(learner: TwinLearner, samples: list[tuple[dict[str, float], float]], w: float | None) -> list[float]:
    """Like :func:`run`, learning each label with sample weight ``w`` (None: the default, no ``w`` passed)."""
    out = []
    for metrics, y in samples:
        x = learner.observe_one(metrics)
        out.append(learner.predict_interval(x).value)
        if w is None:
            learner.learn_one(x, y)
        else:
            learner.learn_one(x, y, w=w)
    out.append(learner.predict_interval(learner.observe_one(samples[0][0])).value)
    return out


def cycle(samples: list[tuple[dict[str, float], float]], n: int) -> Iterator[tuple[dict[str, float], float]]:
    for i in range(n):
        yield samples[i % len(samples)]


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_pickle_round_trip_gives_identical_predictions(name: str, params: dict[str, Any], stream: list) -> None:
    learner = make_learner(name, **params)
    run(learner, stream[:300])
    restored = TwinLearner.restore(learner.snapshot())
    via_pickle = pickle.loads(pickle.dumps(learner))
    nxt = stream[300:400]
    expected = run(learner, nxt)
    assert run(restored, nxt) == expected
    assert run(via_pickle, nxt) == expected


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_state_stays_bounded_over_10k_updates(name: str, params: dict[str, Any], stream: list) -> None:
    learner = make_learner(name, **params)
    samples = list(cycle(stream, 10_000))
    run(learner, samples[:1_000])
    after_1k = learner.state_bytes()
    run(learner, samples[1_000:])
    after_10k = learner.state_bytes()
    assert after_10k <= after_1k * 1.1 + 256, f"state grew from {after_1k} to {after_10k} bytes"
    assert after_10k < 64 * 1024


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_deterministic_under_a_seed(name: str, params: dict[str, Any], stream: list) -> None:
    a = make_learner(name, seed=7, **params)
    b = make_learner(name, seed=7, **params)
    assert run(a, stream[:500]) == run(b, stream[:500])
    assert a.snapshot() == b.snapshot()


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_cold_start_prediction_is_finite(name: str, params: dict[str, Any], stream: list) -> None:
    for x in ({}, stream[0][0]):
        learner = make_learner(name, **params)
        p = learner.predict_interval(learner.observe_one(x))
        assert all(math.isfinite(v) for v in (p.value, p.lower, p.upper))
        assert p.lower <= p.value <= p.upper
        assert math.isfinite(make_learner(name, **params).predict_one(x))


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_tolerates_missing_none_nan_and_inf(name: str, params: dict[str, Any], stream: list) -> None:
    learner = make_learner(name, **params)
    run(learner, stream[:50])
    full = stream[50][0]
    first, second, third = list(full)[:3]
    broken = [
        {k: v for k, v in full.items() if k != first},
        {**full, first: None},
        {**full, second: math.nan},
        {**full, third: math.inf, "unknown_sensor": 1.0},
        {},
    ]
    for metrics in broken:
        x = learner.observe_one(metrics)
        p = learner.predict_interval(x)
        assert all(math.isfinite(v) for v in (p.value, p.lower, p.upper)), metrics
        learner.learn_one(x, 100.0)
        learner.learn_one(x, math.nan)  # a missing label is ignored, not learned
    assert math.isfinite(learner.predict_one(learner.observe_one(full)))


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_sample_weight(name: str, params: dict[str, Any], stream: list) -> None:
    """w=0 learns nothing, w=1 is the default, w=0.5 learns (differently from both); w outside [0, 1] raises."""
    trained = make_learner(name, **params)
    run(trained, stream[:300])
    blob = trained.snapshot()
    nxt = stream[300:400]

    def weighted(w: float | None) -> tuple[list[float], TwinLearner]:
        learner = TwinLearner.restore(blob)
        return run_weighted(learner, nxt, w), learner

    unlearned = TwinLearner.restore(blob)
    not_learning = run(unlearned, nxt, learn=False) + [unlearned.predict_interval(unlearned.observe_one(nxt[0][0])).value]
    zero, _ = weighted(0.0)
    assert zero == not_learning
    default, by_default = weighted(None)
    one, by_one = weighted(1.0)
    assert one == default and by_one.snapshot() == by_default.snapshot()
    half, _ = weighted(0.5)
    assert half != default and half != not_learning
    learner = TwinLearner.restore(blob)
    x = learner.observe_one(nxt[0][0])
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError):
            learner.learn_one(x, 100.0, w=bad)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_predict_and_learn_equals_predict_then_learn(name: str, params: dict[str, Any], stream: list) -> None:
    """The one-call prequential step gives the two calls' predictions and leaves the same state.

    The input mixes ordinary samples, samples far outside the training data (a prior's
    fallback paths), missing labels and weights 1, 0.5 and 0.
    """
    far = [({k: v * 3.0 for k, v in m.items()}, y) for m, y in stream[400:460]]
    samples = stream[:400] + far + stream[460:560]
    weights = (1.0, 1.0, 0.5, 1.0, 0.0, 1.0, None)  # None: an unlabelled event
    one_call, two_calls = make_learner(name, **params), make_learner(name, **params)
    for i, (metrics, y) in enumerate(samples):
        w = weights[i % len(weights)]
        label = None if w is None else y
        x = one_call.observe_one(metrics)
        got = one_call.predict_and_learn(x, label, w=1.0 if w is None else w)
        x = two_calls.observe_one(metrics)
        expected = two_calls.predict_interval(x)
        if label is not None:
            two_calls.learn_one(x, label, w=w)
        assert got == expected, f"sample {i}"
    assert one_call.snapshot() == two_calls.snapshot()


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_predict_and_learn_keeps_a_subclass_own_methods(name: str, params: dict[str, Any], stream: list) -> None:
    """A subclass that changes predicting or learning is not bypassed by its parent's one-call step."""
    family = LEARNERS[name]

    class Shifted(family):  # type: ignore[misc, valid-type]
        learned = 0

        def predict_interval(self, x: Any) -> IntervalPrediction:
            p = super().predict_interval(x)
            return IntervalPrediction(p.value + 1.0, p.lower + 1.0, p.upper + 1.0)

        def learn_one(self, x: Any, y: float, w: float = 1.0) -> None:
            self.learned += 1
            super().learn_one(x, y, w=w)

    shifted, plain = Shifted(**params), make_learner(name, **params)
    for metrics, y in stream[:50]:
        got = shifted.predict_and_learn(shifted.observe_one(metrics), y)
        assert got.value == plain.predict_and_learn(plain.observe_one(metrics), y).value + 1.0
    assert shifted.learned == 50


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_clone_is_fresh_with_same_params(name: str, params: dict[str, Any], stream: list) -> None:
    learner = make_learner(name, **params)
    run(learner, stream[:100])
    clone = learner.clone()
    assert type(clone) is type(learner) and clone.params() == learner.params()
    assert run(clone, stream[:100]) == run(make_learner(name, **params), stream[:100])


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_twin_table_round_trip(name: str, params: dict[str, Any], stream: list) -> None:
    twin = Twin(entity_id="engine-1", learner=make_learner(name, **params))
    for seq, (metrics, y) in enumerate(stream[:50]):
        twin.step(seq, metrics, target=y)
    copy = Twin.from_bytes(twin.to_bytes())
    assert copy.step(50, stream[50][0], None) == twin.step(50, stream[50][0], None)


def test_default_learner_fits_the_state_budget(stream: list) -> None:
    learner = make_learner(DEFAULT_LEARNER, **DEFAULT_PARAMS)
    run(learner, list(cycle(stream, 2_000)))
    assert learner.state_bytes() <= 8 * 1024


def test_every_learner_is_registered() -> None:
    for info in pkgutil.iter_modules(twinstream.models.__path__, prefix="twinstream.models."):
        importlib.import_module(info.name)

    def concrete(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            if not getattr(sub, "__abstractmethods__", None) and sub.__module__.startswith("twinstream."):
                yield sub
            yield from concrete(sub)

    unregistered = {c.__name__ for c in concrete(TwinLearner)} - {c.__name__ for c in LEARNERS.values()}
    assert not unregistered, f"TwinLearner subclasses missing from the registry: {unregistered}"
