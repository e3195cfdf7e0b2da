"""The river-linear learner calls its pipeline's steps directly: the same numbers as River's Pipeline."""

from __future__ import annotations

import math
import random

from river import linear_model, optim, preprocessing, stats

from twinstream.models.base import clean_features
from twinstream.models.river_linear import RiverLinearTwin


def _reference(lr: float, default: float):
    """The learner's model driven through River's own ``Pipeline`` calls."""
    return preprocessing.StandardScaler() | linear_model.LinearRegression(
        optimizer=optim.SGD(lr), intercept_init=default, intercept_lr=lr)


def _samples(n: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        x = {f"s{k}": rng.gauss(10.0 * k, 1.0 + k) for k in range(6)}
        if i % 7 == 3:
            x["s2"] = None  # a missing sensor
        if i % 11 == 5:
            x["s4"] = math.nan
        if i > 40:
            x["late"] = rng.random()  # a feature that appears mid-stream
        y = None if i % 5 == 4 else 3.0 * (x["s1"] or 0.0) - 0.5 * i
        w = 0.5 if i % 9 == 2 else 0.0 if i % 13 == 6 else 1.0
        yield x, y, w


def test_predictions_and_state_equal_rivers_pipeline() -> None:
    lr, default = 0.01, 100.0
    learner = RiverLinearTwin(lr=lr, default=default)
    reference = _reference(lr, default)
    residual = stats.Quantile(0.9)
    learned = 0
    for x, y, w in _samples(400, seed=3):
        features = clean_features(x)
        expected = float(reference.predict_one(features)) if learned else default
        got = learner.predict_and_learn(x, y, w=w)
        assert got.value == expected
        if y is not None and w > 0.0:
            if w == 1.0 and learned:
                residual.update(abs(y - expected))
            reference.learn_one(features, y, w=w)
            learned += 1
    scaler, regression = learner._model.steps.values()
    ref_scaler, ref_regression = reference.steps.values()
    assert dict(scaler.means) == dict(ref_scaler.means)
    assert dict(scaler.vars) == dict(ref_scaler.vars)
    assert dict(regression.weights) == dict(ref_regression.weights)
    assert regression.intercept == ref_regression.intercept
    assert learner._abs_residual.get() == residual.get()
