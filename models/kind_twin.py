"""The twin of one entity of a declared kind: every task of the kind, one step per sample.

Why one object per entity for all tasks: the worker keeps one state per entity (one
table entry, one checkpoint), and a kind may ask for a forecast, an anomaly score and a
label prediction from the same sample. ``step`` applies one sample to every task in the
kind's order and returns one prediction per task, each saying which kind and task it
answers and whether its input was within what the model knows (``in_domain``).

>>> from twinstream.schemas.twin_spec import parse_spec, KindRegistry
>>> spec = parse_spec('''
... kinds:
...   - name: pump
...     match: {entity_id: ["pump-*"]}
...     metrics: [{name: flow}]
...     tasks: [{type: forecast, metric: flow, horizon: 2}, {type: anomaly, metric: flow}]
... ''')
>>> factory = TwinFactory(KindRegistry(spec))
>>> twin = factory.new("pump-0")
>>> preds = [twin.step({"flow": float(t % 7)}, t) for t in range(50)][-1]
>>> [(p.kind, p.task, p.target, p.target_seq) for p in preds]
[('pump', 'forecast', 'flow', 51), ('pump', 'anomaly', 'flow', 49)]
>>> factory.new("fan-1") is None
True
>>> factory.new("pump-1", include_label=False).step({"flow": 1.0}, 0)[0].task  # label tasks left to the caller
'forecast'
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twinstream.models.anomaly import ResidualAnomaly
from twinstream.models.base import TwinLearner
from twinstream.models.domain import DomainBounds, OnlineDomain
from twinstream.models.forecast import OnlineForecaster
from twinstream.models.registry import make_learner
from twinstream.models.rls import ForecastPrior
from twinstream.schemas.twin_spec import AnomalyTask, ForecastTask, KindRegistry, KindSpec, LabelTask


@dataclass(frozen=True, slots=True)
class TaskPrediction:
    """One task's answer for one sample (what the worker encodes as a Prediction)."""

    kind: str
    task: str  # "forecast", "label" or "anomaly"
    target: str  # the forecast/anomaly metric, or the label's target name
    target_seq: int  # the sample this is about: seq + horizon for a forecast, seq otherwise
    value: float  # forecast value, label prediction, or anomaly score in [0, 1]
    lower: float | None
    upper: float | None
    in_domain: bool
    domain_score: float
    model_version: str
    prior_version: str | None = None
    flagged: bool | None = None  # anomaly tasks: score >= threshold; label tasks: the learner is in drift alarm

    def prediction_fields(self) -> dict[str, object]:
        """The fields of a published Prediction this answer fills (the worker adds entity, time, seq, counters).

        >>> TaskPrediction("pump", "forecast", "flow", 12, 5.0, 4.0, 6.0, True, 0.0, "rls-forecast-v1").prediction_fields()["task"]
        'forecast'
        """
        return {
            "kind": self.kind, "task": self.task, "target": self.target, "target_seq": self.target_seq,
            "value": self.value, "lower": self.lower, "upper": self.upper, "in_domain": self.in_domain,
            "domain_score": self.domain_score, "model_version": self.model_version, "prior_version": self.prior_version,
            "flagged": self.flagged,
        }


OOD_WIDEN = 1.5  # label tasks: interval half-width factor out of domain


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def kind_learner(kind: KindSpec, prior_params: Mapping[str, Any] | None = None) -> TwinLearner:
    """The label-task learner a kind declares (``learner.family`` with ``learner.params``).

    ``prior_params``: how a ``prior-twin`` learner starts from the kind's own ``prior:``
    (e.g. ``{"prior": DIR, "metrics": [...]}`` for an artifact trained on the kind's
    history, verified by the caller); the kind's explicit ``learner.params`` win over
    them, and other families take no prior.
    """
    params = dict(kind.learner.params)
    if prior_params and kind.learner.family == "prior-twin" and "prior" not in params:
        params.update(prior_params)
    return make_learner(kind.learner.family, **params)


class KindTwin:
    """Per-entity state for every task of one kind (picklable; what the twins table stores)."""

    def __init__(
        self,
        kind: KindSpec,
        label_learner: Callable[[], TwinLearner] | None = None,
        forecast_priors: Mapping[str, ForecastPrior] | None = None,
        label_domain: DomainBounds | None = None,
        include_label: bool = True,
    ) -> None:
        """``include_label=False`` leaves label tasks to the caller (the worker's existing RUL path)."""
        self.kind = kind.name
        self.tasks: list[tuple[object, object]] = []
        metrics = kind.metric_names
        for task in kind.tasks:
            if isinstance(task, LabelTask) and not include_label:
                continue
            if isinstance(task, ForecastTask):
                prior = (forecast_priors or {}).get(task.key)
                model: object = OnlineForecaster(task.horizon, coverage=task.coverage, season=task.season,
                                                 max_season=task.max_season, prior=prior)
            elif isinstance(task, AnomalyTask):
                model = ResidualAnomaly(task.horizon, task.threshold, max_season=0)
            elif isinstance(task, LabelTask):
                if label_learner is None:
                    raise ValueError(f"kind {kind.name!r} has a label task but no learner factory was given")
                model = (label_learner(), label_domain or OnlineDomain(metrics or ["_"]))
            else:  # pragma: no cover - the spec's union is closed
                raise TypeError(type(task).__name__)
            self.tasks.append((task, model))
        self.metrics = metrics
        self.ranges = {m.name: m.range for m in kind.metrics if m.range is not None}

    def plausible(self, metrics: Mapping[str, float | None]) -> Mapping[str, float | None]:
        """``metrics`` with values outside their declared valid range read as missing (a gap, never learned).

        >>> from twinstream.schemas.twin_spec import parse_spec
        >>> kind = parse_spec("kinds: [{name: p, metrics: [{name: t, range: [0, 100]}],"
        ...                   " tasks: [{type: forecast, metric: t, horizon: 1}]}]").kinds[0]
        >>> KindTwin(kind).plausible({"t": 250.0, "x": 3.0})
        {'t': None, 'x': 3.0}
        """
        if not self.ranges:
            return metrics
        out = dict(metrics)
        for name, (low, high) in self.ranges.items():
            v = out.get(name)
            if v is not None and not low <= v <= high:
                out[name] = None
        return out

    def step(self, metrics: Mapping[str, float | None], seq: int, targets: Mapping[str, float] | None = None) -> list[TaskPrediction]:
        """Apply one sample to every task (predict, then learn) and return their predictions.

        Values outside a metric's declared valid range are gaps (:meth:`plausible`).
        """
        metrics = self.plausible(metrics)
        out: list[TaskPrediction] = []
        for task, model in self.tasks:
            if isinstance(task, ForecastTask):
                assert isinstance(model, OnlineForecaster)
                f = model.step(seq, metrics.get(task.metric))
                out.append(TaskPrediction(self.kind, "forecast", task.metric, f.target_seq, f.value, _finite_or_none(f.lower),
                                          _finite_or_none(f.upper), f.in_domain, f.domain_score, model.model_version,
                                          model.prior.version if model.prior is not None else None))
            elif isinstance(task, AnomalyTask):
                assert isinstance(model, ResidualAnomaly)
                score, flagged = model.step(seq, metrics.get(task.metric))
                last = model.last
                in_domain, dscore = (last.in_domain, last.domain_score) if last is not None else (False, 1.0)
                out.append(TaskPrediction(self.kind, "anomaly", task.metric, seq, score, 0.0, 1.0, in_domain, dscore,
                                          f"residual-anomaly-{model.forecaster.model_version}", None, flagged))
            else:
                assert isinstance(task, LabelTask)
                learner, domain = model  # type: ignore[misc]
                x = learner.observe_one(metrics)
                if isinstance(domain, DomainBounds):  # a prior's ranges: over its features (or raw metrics) by name
                    in_domain, dscore = domain.check_named({**metrics, **x})
                else:  # the twin's own history of raw metrics
                    vector = [float("nan") if (v := metrics.get(m)) is None else float(v) for m in self.metrics]
                    in_domain, dscore = domain.check(vector)
                    domain.observe(vector)
                interval = learner.predict_interval(x)
                label = (targets or {}).get(task.target)
                if label is not None:
                    learner.learn_one(x, label)
                lower, upper = interval.lower, interval.upper
                if not in_domain:  # the model has not seen inputs like these: say so with a wider interval
                    lower = interval.value - OOD_WIDEN * (interval.value - lower)
                    upper = interval.value + OOD_WIDEN * (upper - interval.value)
                alarm = True if getattr(learner, "in_alarm", False) else None  # a drift alarm: flagged while it falls back
                out.append(TaskPrediction(self.kind, "label", task.target, seq, interval.value, lower, upper,
                                          in_domain, dscore, learner.model_version, getattr(learner, "prior_version", None), alarm))
        return out


class TwinFactory:
    """New per-entity twins for whatever kind an entity is (None: no kind matches, ``unknown_kind``)."""

    def __init__(
        self,
        registry: KindRegistry,
        label_learner: Callable[[KindSpec], TwinLearner] | None = kind_learner,
        forecast_priors: Mapping[str, Mapping[str, ForecastPrior]] | None = None,
        label_domains: Mapping[str, DomainBounds] | None = None,
    ) -> None:
        """``forecast_priors[kind][task key]`` and ``label_domains[kind]`` come from the kinds' prior manifests."""
        self.registry = registry
        self.label_learner = label_learner
        self.forecast_priors = forecast_priors or {}
        self.label_domains = label_domains or {}

    def new(self, entity_id: str, kind: str | None = None, include_label: bool = True) -> KindTwin | None:
        """The twin of a new entity, or None when no kind matches (``include_label``: see :class:`KindTwin`)."""
        spec = self.registry.match(entity_id, kind)
        if spec is None:
            return None
        make = (lambda: self.label_learner(spec)) if self.label_learner is not None else None  # type: ignore[misc]
        return KindTwin(spec, make, self.forecast_priors.get(spec.name), self.label_domains.get(spec.name), include_label)
