"""The default RUL twin: fleet prior + the entity's own online part, in a few KB.

Why this split: one engine has too little data to learn a degradation model alone, but
the fleet has plenty. So each event goes through
1. the fleet prior's estimate from the event alone (prior head: age, current readings);
2. the entity's personal state, learned online from its own stream
   (:class:`~.features.RulFeatures`: smoothed sensors, deviation from its own first
   cycles, trend), turned into a correction of that estimate by the prior's twin head;
3. optionally a shared online fleet model (:mod:`.fleet`) that learns from labels the
   fleet releases (without a prior it is the whole predictor);
4. a personal online correction (River linear model on the residual) that learns from
   the entity's own labels, when it gets any.
Intervals are split-conformal from the prior's calibration until the twin has its own
residuals (then an online quantile of them). A Page-Hinkley detector on the base
prediction flags changes in the degradation course; ``drift_alarms`` exposes them.

Knowing when it does not know: each event's features are checked against the ranges of
the prior's training features (``domain`` in its manifest, :class:`~.domain.DomainBounds`);
the domain score is the share of them outside. The twin then leans on what it knows itself,
progressively:

- above ``mask_outside_above`` (default 0: any feature outside) the prior hears only the
  features within its ranges; the others are missing, and its nets impute their training
  means (an engine whose temperatures moved where the fleet never went is judged on its
  other sensors and its own trends);
- above the manifest's ``max_outside`` the event is out of the prior's domain
  (``domain_state``): the interval widens, linearly with the score, up to the whole range;
- above ``abandon_prior_above`` the prior is not used at all: the twin answers from its
  own latest label carried forward (mid-range without one), interval [0, cap], so such an
  entity never gets a confident near-failure prediction;
- in fallback, once the twin has its own labels, its answer weighs the prior's estimate
  against its own (the latest label carried forward) by their recent squared errors on
  those labels.

A drift alarm (Page-Hinkley on the base estimate, ``drift_alarms``) puts the twin in alarm
(``in_alarm``, published as ``flagged``): it answers in fallback, with a widened interval,
until its inputs are back in the prior's domain. The thresholds were chosen by
engine-level cross-validation on FD001's training engines (benchmarks/fallback_cv.py).

>>> learner = PriorTwin()
>>> x = learner.observe_one({"s2": 642.0, "s3": 1590.0})
>>> p = learner.predict_interval(x)
>>> 0.0 <= p.lower <= p.value <= p.upper and p.value <= 125.0
True
>>> restored = PriorTwin.restore(learner.snapshot())
>>> restored.predict_one(x) == learner.predict_one(x)
True
>>> learner.state_bytes() < 8192
True
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from typing import Any

from river import drift, linear_model, optim, stats

from twinstream.models.active_priors import active_prior, clear_active_priors, set_active_prior  # noqa: F401 (re-exported)
from twinstream.models.base import Features, IntervalPrediction, Observation, TwinLearner, check_weight
from twinstream.models.features import RulFeatures
from twinstream.models.generic_features import GenericFeatures
from twinstream.models.prior_attachment import PriorAttachment, hot_swap  # noqa: F401 (hot_swap re-exported)
from twinstream.models.prior_fallback import (  # noqa: F401 (the thresholds are re-exported)
    ABANDON_PRIOR_ABOVE,
    EVIDENCE_ALPHA,
    FALLBACK_MARGIN,
    FALLBACK_PERSIST,
    MASK_OUTSIDE_ABOVE,
    MIN_EVIDENCE,
    OOD_WIDEN,
    DomainFallback,
)
from twinstream.models.prior_twin_batch import observe_prior_twins

BASE_KEY = "base_rul"
MIN_OWN_RESIDUALS = 20


class PriorTwin(DomainFallback, PriorAttachment, TwinLearner):
    """Prior + personal RUL learner.

    Parameters: ``prior`` ("bundled", an artifact directory, or None for no prior),
    ``fleet`` (name of a shared online fleet model, or None), ``personal`` (use the
    twin's personal state and learn a residual from own labels; False = prior head
    alone), ``coverage`` (interval target), ``lr`` (personal SGD
    rate), ``cap`` (largest RUL predicted; the prior's cap when it has one), feature
    parameters (must match the prior's manifest), ``seed``, ``abandon_prior_above`` (share of
    features outside the prior's training ranges above which the prior is not used; 1:
    never), ``mask_outside_above`` (share above which features outside those ranges are
    not shown to the prior; 1: never), ``fallback_margin`` (those two decisions count a feature
    as outside only beyond its range widened by this share of its width), ``fallback_persist``
    (they act only once the score has been beyond their threshold on that many consecutive
    events: a lone excursion, or a gap fill's, is noise; a sustained one is not), ``alarm_fallback`` (a drift alarm puts the twin in
    fallback), ``metrics`` (a declared kind's metrics: generic features over them instead
    of C-MAPSS's sensor features, for a prior trained on the kind's own history).

    Sample weight ``w`` in :meth:`learn_one`: the personal own-label model's SGD step is
    scaled by ``w`` (River's ``LinearRegression.learn_one(x, y, w)``, with the gradient
    clip scaled by ``w`` too, so a clipped step is also scaled by ``w``). The residual
    quantile behind the interval cannot be weighted: it learns only from full-weight
    samples (``w = 1``), and the switch from the prior's calibration to it counts only
    those. ``w = 0``: nothing is learned. The feature state (``observe_one``) and the
    shared prior and fleet model take no labels here, so ``w`` does not touch them.
    """

    family = "prior-twin"
    version = "1"

    def __init__(
        self,
        prior: str | None = "bundled",
        fleet: str | None = None,
        personal: bool = True,
        coverage: float = 0.9,
        lr: float = 0.02,
        cap: float = 125.0,
        fast_span: int = 15,
        slow_span: int = 60,
        baseline_n: int = 20,
        seed: int = 0,
        abandon_prior_above: float = ABANDON_PRIOR_ABOVE,
        metrics: Sequence[str] | None = None,
        mask_outside_above: float = MASK_OUTSIDE_ABOVE,
        alarm_fallback: bool = True,
        fallback_margin: float = FALLBACK_MARGIN,
        fallback_persist: int = FALLBACK_PERSIST,
    ) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError("coverage must be in (0, 1)")
        if not 0.0 <= abandon_prior_above <= 1.0:
            raise ValueError("abandon_prior_above must be in [0, 1] (1: never)")
        if not 0.0 <= mask_outside_above <= 1.0:
            raise ValueError("mask_outside_above must be in [0, 1] (1: never)")
        if not 0.0 <= fallback_margin:
            raise ValueError("fallback_margin must be >= 0")
        self.fallback_margin = fallback_margin
        if fallback_persist < 1:
            raise ValueError("fallback_persist must be >= 1")
        self.fallback_persist = fallback_persist
        self._runs = [0, 0]  # consecutive events beyond mask_outside_above, beyond abandon_prior_above
        self.abandon_prior_above = abandon_prior_above
        self.mask_outside_above = mask_outside_above
        self.alarm_fallback = alarm_fallback
        self._fallback = False  # this event: the prior hears only features within its ranges
        self._alarm = False  # a drift alarm, until the twin's inputs are back in the prior's domain
        self._evidence: list[float] = [0.0, 0.0, 0.0]  # labels seen, EW squared error of the prior's value, of the own estimate
        self._in_domain = True
        self._far = False  # beyond abandon_prior_above: the prior is not used
        self._domain_score = 0.0
        self._last_label: tuple[float, float] | None = None  # (label, age) of the latest full-weight label
        self.prior = None if prior in (None, "", "none") else str(prior)
        self.fleet = fleet
        self.personal = personal
        self.coverage = coverage
        self.lr = lr
        self.cap = cap
        self.fast_span, self.slow_span, self.baseline_n = fast_span, slow_span, baseline_n
        self.seed = seed
        self.metrics = list(metrics) if metrics else None
        self._fx = self._new_features()
        self._names = self._feature_names()
        self._own = linear_model.LinearRegression(optimizer=optim.SGD(lr), intercept_lr=lr, clip_gradient=50.0)
        self._abs_residual = stats.Quantile(coverage)
        self._labels = 0  # labels learned (any weight > 0)
        self._n_full = 0  # of which full weight: they feed the residual quantile
        self._drift = drift.PageHinkley(min_instances=30, threshold=40.0)
        self.drift_alarms = 0
        self.last_drift_age: int | None = None
        self._attach()

    def _new_features(self) -> RulFeatures | GenericFeatures:
        """C-MAPSS's sensor features, or a declared kind's generic features over ``metrics``."""
        if self.metrics:
            return GenericFeatures(self.metrics, fast_span=self.fast_span, slow_span=self.slow_span, baseline_n=self.baseline_n)
        return RulFeatures(fast_span=self.fast_span, slow_span=self.slow_span, baseline_n=self.baseline_n)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A twin pickled by an older version gets the defaults it was made without (it behaves as it did)."""
        state.setdefault("abandon_prior_above", 0.3)  # a twin pickled before the domain check
        state.setdefault("_in_domain", True)
        state.setdefault("_far", False)
        state.setdefault("_domain_score", 0.0)
        state.setdefault("_last_label", None)
        state.setdefault("mask_outside_above", 1.0)  # a twin pickled before masking: as it was
        state.setdefault("_fallback", False)
        state.setdefault("_alarm", False)
        state.setdefault("_evidence", [0.0, 0.0, 0.0])
        state.setdefault("alarm_fallback", False)
        state.setdefault("metrics", None)
        state.setdefault("fallback_margin", 0.0)  # a twin pickled before the margin: as it was
        state.setdefault("fallback_persist", 1)  # a twin pickled before persistence: as it was
        state.setdefault("_runs", [0, 0])
        super().__setstate__(state)

    def params(self) -> dict[str, Any]:
        return {
            "prior": self.prior,
            "fleet": self.fleet,
            "personal": self.personal,
            "coverage": self.coverage,
            "lr": self.lr,
            "cap": self.cap,
            "fast_span": self.fast_span,
            "slow_span": self.slow_span,
            "baseline_n": self.baseline_n,
            "seed": self.seed,
            "abandon_prior_above": self.abandon_prior_above,
            "metrics": self.metrics,
            "mask_outside_above": self.mask_outside_above,
            "fallback_margin": self.fallback_margin,
            "fallback_persist": self.fallback_persist,
            "alarm_fallback": self.alarm_fallback,
        }

    # -- the contract -------------------------------------------------------------------
    def base_from_vector(self, vector: list[float], x: Features | None = None) -> float:
        """The estimate before own-label corrections.

        With a prior: its prior head (one event alone), corrected by its twin head from
        this twin's personal state when ``personal``. Then the online fleet model, if any.
        """
        if self._prior is not None:
            base = self._prior.predict_pair(vector)[1] if self.personal else self._prior.predict_vector(vector)
        else:
            base = self.cap
        if self._fleet is not None:
            base = self._fleet.predict_one(x if x is not None else dict(zip(self._names, vector)), base)
        return base

    def observe_one(self, x: Features, synthetic: Collection[str] = ()) -> Features:
        vector, heard = self._observe_vector(x, synthetic)
        features: dict[str, float | None] = dict(zip(self._names, vector))
        return self._observe_base(features, self.base_from_vector(heard, features))

    @classmethod
    def observe_many(cls, items: Sequence[Observation]) -> list[Features | Exception]:
        """:meth:`observe_one` for a wave of twins with the prior evaluated once over the wave (:mod:`.prior_twin_batch`)."""
        return observe_prior_twins(items)

    def _observe_vector(self, x: Features, synthetic: Collection[str]) -> tuple[list[float], list[float]]:
        """:meth:`observe_one` up to the prior: feature state and domain check; (feature vector, what the prior hears)."""
        vector = self._fx.update_vector(x, synthetic)  # synthetic fills stay out of the personal baseline
        self._fallback = False
        if self._domain is not None and self._fallback_domain is not None:
            score = self._domain.score(vector)
            self._judge(score, score if self._fallback_domain is self._domain else self._fallback_domain.score(vector))
        # In fallback the prior hears only what lies within its experience: a feature outside its
        # training ranges is missing, and its nets impute the training mean for it.
        heard = self._fallback_domain.mask(vector) if self._fallback and self._fallback_domain is not None else vector
        return vector, heard

    def _observe_base(self, features: dict[str, float | None], base: float) -> Features:
        """:meth:`observe_one` from the base estimate on: the drift detector sees it; the features carry it."""
        features[BASE_KEY] = base
        self._drift.update(base)
        if self._drift.drift_detected:
            self.drift_alarms += 1
            self.last_drift_age = self._fx.n
            self._alarm = self.alarm_fallback and self._domain is not None  # acts from this event's answer on
            self._fallback = self._fallback or self._alarm
        return features

    def _base(self, x: Features) -> float:
        base = x.get(BASE_KEY)
        if base is not None and math.isfinite(base):
            return float(base)
        vector = [float(v) if v is not None else math.nan for v in (x.get(n) for n in self._names)]
        return self.base_from_vector(vector)

    def _own_input(self, x: Features, base: float) -> dict[str, float]:
        age = x.get("age")
        age = float(age) if age is not None and math.isfinite(age) else 0.0
        return {"base": base / self.cap, "age": min(age, 400.0) / self.cap}

    def predict_one(self, x: Features) -> float:
        return self._predict(x, None)

    def _predict(self, x: Features, with_prior: float | None) -> float:
        """:meth:`predict_one`; ``with_prior``: :meth:`_with_prior` of ``x``, if already computed."""
        if self._far:
            return self._own_estimate(x)
        value = self._with_prior(x) if with_prior is None else with_prior
        w = self._prior_weight()
        if w < 1.0:  # out of the prior's ranges its own labels say the prior is off here: lean on them
            value = w * value + (1.0 - w) * self._own_estimate(x)
        return value

    def _with_prior(self, x: Features) -> float:
        base = self._base(x)
        value = base
        if self.personal and self._labels:
            correction = float(self._own.predict_one(self._own_input(x, base)))
            if math.isfinite(correction):
                value = base + correction
        return min(max(value, 0.0), self.cap)

    def predict_interval(self, x: Features) -> IntervalPrediction:
        return self._interval(self.predict_one(x))

    def predict_and_learn(self, x: Features, y: float | None, w: float = 1.0) -> IntervalPrediction:
        """The prior's answer with the personal correction is computed once for predicting and learning."""
        if not self.steps_as(PriorTwin):
            return super().predict_and_learn(x, y, w)
        with_prior = None if self._far and y is None else self._with_prior(x)
        prediction = self._interval(self._predict(x, with_prior))
        if y is not None:
            self._learn(x, y, w, with_prior)
        return prediction

    def _interval(self, value: float) -> IntervalPrediction:
        if self._far:  # nothing here is calibrated for inputs like these: the whole range
            return IntervalPrediction(value=value, lower=0.0, upper=self.cap)
        half = math.nan
        if self._full_labels >= MIN_OWN_RESIDUALS:
            half = self._abs_residual.get() or math.nan
        elif self._prior is not None:
            half = self._prior.halfwidth(value, "twin" if self.personal else "prior")
        if not math.isfinite(half):
            half = self.cap / 2.0  # nothing calibrated yet: say so with a wide interval
        if not self._in_domain or self._alarm:
            half = self._widened(half)
        return IntervalPrediction(value=value, lower=max(0.0, value - half), upper=value + half)

    def release(self, history: Sequence[tuple[Features, float]]) -> int:
        """Labels of an entity's past events became known (e.g. it failed): teach the fleet model.

        The raw events are replayed through a fresh feature state with this twin's
        parameters (the same code as :meth:`observe_one`), in order, once. Returns the
        number of samples learned (0 without a fleet model).
        """
        if self._fleet is None:
            return 0
        fx = (
            self._new_features()
            if self.metrics
            else RulFeatures(sensors=self._fx.sensors, fast_span=self.fast_span, slow_span=self.slow_span, baseline_n=self.baseline_n)
        )  # type: ignore[union-attr]
        fleet, self._fleet = self._fleet, None  # the base the fleet model corrects excludes itself
        try:
            for metrics, y in history:
                vector = fx.update_vector(metrics)
                fleet.learn_one(dict(zip(self._names, vector)), y, self.base_from_vector(vector))
        finally:
            self._fleet = fleet
        return len(history)

    @property
    def _full_labels(self) -> int:
        """Full-weight labels learned (the residual quantile's); a snapshot from before weights: all of them."""
        return getattr(self, "_n_full", self._labels)

    def learn_one(self, x: Features, y: float, w: float = 1.0) -> None:
        self._learn(x, y, w, None)

    def _learn(self, x: Features, y: float, w: float, with_prior: float | None) -> None:
        """:meth:`learn_one`; ``with_prior``: :meth:`_with_prior` of ``x`` before this label, if already computed."""
        w = check_weight(w)
        if y is None or not math.isfinite(y) or w == 0.0:
            return
        target = min(float(y), self.cap)
        base = self._base(x)
        if w == 1.0:
            if with_prior is None:
                with_prior = self._with_prior(x)
            self._weigh_evidence(x, target, with_prior)
            self._abs_residual.update(abs(target - with_prior))
            self._n_full = self._full_labels + 1
            age = x.get("age")
            if age is not None and math.isfinite(age):
                self._last_label = (target, float(age))
        if self.personal:
            own, clip = self._own, self._own.clip_gradient
            own.clip_gradient = clip * w  # River clips the weighted gradient: clip at w * clip = weight the clipped one
            try:
                own.learn_one(self._own_input(x, base), target - base, w=w)
            finally:
                own.clip_gradient = clip
        self._labels += 1
