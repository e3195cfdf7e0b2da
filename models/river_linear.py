"""A small River learner: scaled linear regression with a conformal-style interval.

Why this as the spine's default: it is fast (~30 µs for predict+learn), tiny (~2 KB
pickled) and bounded in memory, which matters with one learner per entity.
The interval half-width is an online quantile of absolute residuals seen so far
(split-conformal in spirit, without holding residuals in memory).

>>> learner = RiverLinearTwin(seed=0)
>>> for i in range(200):
...     learner.learn_one({"x": float(i % 10)}, 2.0 * (i % 10) + 1.0)
>>> round(learner.predict_one({"x": 4.0}))
9
>>> p = learner.predict_interval({"x": 4.0})
>>> p.lower <= p.value <= p.upper
True

A sample weight scales the regression's step; ``w=0`` changes nothing:

>>> before = learner.predict_one({"x": 4.0})
>>> learner.learn_one({"x": 4.0}, 30.0, w=0.0)
>>> learner.predict_one({"x": 4.0}) == before
True
>>> learner.learn_one({"x": 4.0}, 30.0, w=0.5)
>>> before < learner.predict_one({"x": 4.0})
True
"""

from __future__ import annotations

import math
from typing import Any

from river import linear_model, optim, preprocessing, stats

from twinstream.models.base import Features, IntervalPrediction, TwinLearner, check_weight, clean_features


class RiverLinearTwin(TwinLearner):
    """``StandardScaler | LinearRegression`` with an online residual-quantile interval.

    Parameters: ``lr`` (SGD learning rate), ``coverage`` (target interval coverage),
    ``default`` (cold-start prediction and intercept initialisation), ``clip_min`` (lower
    bound of predictions, e.g. 0 for remaining useful life), ``seed``.

    Sample weight ``w`` in :meth:`learn_one`: the regression's SGD step (weights and
    intercept) is scaled by ``w`` (River's ``LinearRegression.learn_one(x, y, w)``).
    The residual quantile behind the interval cannot be weighted: it learns only from
    full-weight samples (``w = 1``), so down-weighted (synthetic) samples stay out of the
    interval's calibration. The scaler's running means/variances are updated by every
    learned sample (``w > 0``), unweighted: they normalise the very input the step is
    taken on, and updating them first keeps that input bounded (a down-weighted sample
    with an unusual fill, standardised by statistics that never saw it, can make SGD
    diverge). ``w = 0``: nothing is learned.
    """

    family = "river-linear"
    version = "1"

    def __init__(
        self,
        lr: float = 0.01,
        coverage: float = 0.9,
        default: float = 0.0,
        clip_min: float | None = None,
        seed: int = 0,
    ) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError("coverage must be in (0, 1)")
        self.lr = lr
        self.coverage = coverage
        self.default = default
        self.clip_min = clip_min
        self.seed = seed
        self._model = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_init=default, intercept_lr=lr
        )
        self._abs_residual = stats.Quantile(coverage)
        self._n = 0  # samples learned (any weight > 0)
        self._n_full = 0  # of which full weight: they feed the residual quantile

    def params(self) -> dict[str, Any]:
        return {"lr": self.lr, "coverage": self.coverage, "default": self.default, "clip_min": self.clip_min, "seed": self.seed}

    def _steps(self) -> tuple[preprocessing.StandardScaler, linear_model.LinearRegression]:
        """The pipeline's two steps, called directly on the hot path.

        Why: River's ``Pipeline`` plans and routes keyword arguments per call, about a fifth
        of this learner's step. Calling the steps as the pipeline does (the scaler learns,
        then transforms; the regression learns from the transformed input) is the same
        arithmetic in the same order, so predictions and state are identical; the pipeline
        stays the pickled state.
        """
        scaler, regression = self._model.steps.values()
        return scaler, regression

    def _predict_raw(self, x: dict[str, float]) -> float:
        if self._n == 0 or not x:
            return self.default
        scaler, regression = self._steps()
        value = float(regression.predict_one(scaler.transform_one(x)))
        if not math.isfinite(value):
            return self.default
        return value

    def _clip(self, value: float) -> float:
        return max(self.clip_min, value) if self.clip_min is not None else value

    def predict_one(self, x: Features) -> float:
        return self._clip(self._predict_raw(clean_features(x)))

    def predict_interval(self, x: Features) -> IntervalPrediction:
        return self._interval(self.predict_one(x))

    def _interval(self, value: float) -> IntervalPrediction:
        half = self._abs_residual.get() if self._full_weight >= 10 else None
        if half is None or not math.isfinite(half):
            half = abs(value) + 1.0  # nothing learned yet: say so with a wide interval
        return IntervalPrediction(value=value, lower=self._clip(value - half), upper=value + half)

    def predict_and_learn(self, x: Features, y: float | None, w: float = 1.0) -> IntervalPrediction:
        """One cleaning of ``x`` and one pass through the model: the residual learned is the prediction's own."""
        if not self.steps_as(RiverLinearTwin):
            return super().predict_and_learn(x, y, w)
        features = clean_features(x)
        raw = self._predict_raw(features)
        prediction = self._interval(self._clip(raw))
        if y is not None:
            self._learn(features, y, w, raw)
        return prediction

    @property
    def _full_weight(self) -> int:
        """Full-weight samples learned (the residual quantile's); a snapshot from before weights: all of them."""
        return getattr(self, "_n_full", self._n)

    def learn_one(self, x: Features, y: float, w: float = 1.0) -> None:
        self._learn(clean_features(x), y, w, None)

    def _learn(self, features: dict[str, float], y: float, w: float, raw: float | None) -> None:
        """:meth:`learn_one` on cleaned features; ``raw``: the model's prediction for them, if already made."""
        w = check_weight(w)
        if y is None or not math.isfinite(y) or w == 0.0 or not features:
            return
        if w == 1.0:
            if self._n > 0:
                self._abs_residual.update(abs(y - (self._predict_raw(features) if raw is None else raw)))
            self._n_full = self._full_weight + 1
        scaler, regression = self._steps()  # as the pipeline's learn_one: w goes to the regression only
        scaler.learn_one(features)
        regression.learn_one(scaler.transform_one(features), y, w=w)
        self._n += 1
