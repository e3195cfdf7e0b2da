"""The twin kinds a worker serves (twins.yaml), resolved once at start-up.

Why a separate object: the worker must refuse a bad spec before it consumes anything
(a kind with an unknown learner, a prior that does not load, two label tasks), and the
per-event questions (which kind is this entity, which label task, does it have forecast
or anomaly tasks) must cost a dict lookup, not a walk over the spec. Everything here is
computed in the constructor; :meth:`WorkerKinds.match` is the registry's cached lookup.

>>> kinds = WorkerKinds.load("bundled:cmapss")
>>> spec = kinds.match("fd001-train-001", None)
>>> spec.name, kinds.label_task(spec).target, kinds.new_tasks(spec) is None
('turbofan', 'rul', True)
>>> kinds.match("pump-0", None) is None
True
>>> WorkerKinds.load("none") is None
True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from twinstream.models.base import TwinLearner
from twinstream.models.kind_prior import KindPrior, load_kind_prior
from twinstream.models.kind_twin import KindTwin, TaskPrediction, kind_learner
from twinstream.models.prior import bundled_prior_dir
from twinstream.models.twin import Twin
from twinstream.schemas.prior import MANIFEST_FILE
from twinstream.schemas.telemetry import Telemetry
from twinstream.schemas.twin_spec import KindRegistry, KindSpec, LabelTask, SpecError
from twinstream.streams.metrics import WorkerMetrics, observe_many

BUNDLED_PREFIX = "bundled:"
NO_SPEC = "none"


def bundled_spec_path(name: str) -> Path:
    """A twins.yaml shipped with the package (``twinstream/specs/<name>.yaml``)."""
    path = Path(str(resources.files("twinstream") / "specs" / f"{name}.yaml"))
    if not path.is_file():
        raise SpecError(f"{BUNDLED_PREFIX}{name}: no twins spec of that name is bundled with twinstream")
    return path


def resolve_twins_spec(value: str) -> Path | None:
    """The file a ``twins_spec`` setting names: a path, ``bundled:<name>``, or None for ``none``."""
    if value.strip().lower() == NO_SPEC:
        return None
    if value.startswith(BUNDLED_PREFIX):
        return bundled_spec_path(value[len(BUNDLED_PREFIX):])
    return Path(value)


class WorkerKinds:
    """A validated spec plus what the processor asks per event, precomputed per kind."""

    def __init__(self, registry: KindRegistry, path: Path, settings: Any = None) -> None:
        self.registry = registry
        self.path = path
        self.settings = settings  # the worker's Settings: where ``prior: {registry: ...}`` priors come from
        self.registry_families: dict[str, str] = {}  # kind -> registry family its prior follows
        self._label: dict[str, LabelTask | None] = {}
        self._has_tasks: dict[str, bool] = {}
        self.priors: dict[str, KindPrior] = {}  # kinds whose prior is an artifact of their own history
        self._prior_params: dict[str, dict[str, Any]] = {}
        for kind in registry.spec.kinds:
            labels = [t for t in kind.tasks if isinstance(t, LabelTask)]
            if len(labels) > 1:
                raise SpecError(f"{path}: kind {kind.name!r}: a worker twin serves one label task per kind "
                                f"(got {', '.join(t.target for t in labels)})")
            self._label[kind.name] = labels[0] if labels else None
            self._has_tasks[kind.name] = len(labels) < len(kind.tasks)
            self._load_prior(kind)
            if labels:
                try:  # a learner family or prior that cannot be made stops the worker now, not at the first event
                    kind_learner(kind, self._prior_params.get(kind.name))
                except Exception as exc:  # noqa: BLE001 - any failure here is a configuration error
                    raise SpecError(f"{path}: kind {kind.name!r}: learner {kind.learner.family!r} "
                                    f"with {kind.learner.params}: {type(exc).__name__}: {exc}") from exc

    def _load_prior(self, kind: KindSpec) -> None:
        """Verify and load ``kind``'s ``prior:`` now; a prior that does not load is a :class:`SpecError`.

        An artifact (``artifact:``/``path:``, relative to the spec's folder) is verified with
        :func:`load_kind_prior` against the kind's generic features: its label heads start
        the label task's ``prior-twin`` learner, its forecast priors the forecast tasks.
        ``bundled:`` names a prior shipped with the package (the C-MAPSS one, on its own
        sensor features). ``registry:`` fetches the family's latest verified prior from the
        worker's ``prior_registry_url`` (:class:`~.prior_pull.RegistryPriors`: else the cached
        copy, else no prior, with a warning); the worker's prior pull then follows the family.
        """
        ref = kind.prior
        if ref is None:
            return
        if ref.bundled is not None:
            directory = bundled_prior_dir().parent / ref.bundled
            if not (directory / MANIFEST_FILE).is_file():
                raise SpecError(f"{self.path}: kind {kind.name!r}: prior bundled {ref.bundled!r}: no such prior is bundled "
                                f"(bundled: {', '.join(sorted(p.name for p in directory.parent.iterdir() if p.is_dir()))})")
            self._prior_params[kind.name] = {"prior": str(directory)}
            return
        if ref.registry is not None:
            from twinstream.models.kind_prior import kind_features
            from twinstream.streams.prior_pull import RegistryPriors

            self.registry_families[kind.name] = ref.registry
            fetched = None
            if self.settings is not None:
                fetched = RegistryPriors.from_settings(self.settings).fetch(ref.registry, kind_features(kind).schema(), kind.name)
            if fetched is None:
                self._prior_params[kind.name] = {"prior": None, "metrics": kind.metric_names}  # own features, no prior
                return
            directory = fetched
        elif ref.directory is None:
            return
        else:
            directory = Path(ref.directory).expanduser()
        if not directory.is_absolute():
            directory = self.path.parent / directory
        try:
            prior = load_kind_prior(directory, kind)
        except Exception as exc:  # noqa: BLE001 - a missing, altered or foreign artifact is a configuration error
            raise SpecError(f"{self.path}: kind {kind.name!r}: prior artifact {directory}: {type(exc).__name__}: {exc}") from exc
        self.priors[kind.name] = prior
        if prior.label is not None:
            self._prior_params[kind.name] = {"prior": str(directory.resolve()), "metrics": kind.metric_names}

    @classmethod
    def load(cls, value: str, settings: Any = None) -> WorkerKinds | None:
        """From a ``twins_spec`` setting; None for ``none`` (single-learner mode). Raises :class:`SpecError`.

        ``settings``: the worker's, for kinds whose prior comes from the registry.
        """
        path = resolve_twins_spec(value)
        return None if path is None else cls(KindRegistry.from_file(path), path, settings)

    def match(self, entity_id: str, kind: str | None) -> KindSpec | None:
        return self.registry.match(entity_id, kind)

    def kind(self, name: str) -> KindSpec:
        return self.registry.kind(name)

    def label_task(self, spec: KindSpec) -> LabelTask | None:
        return self._label[spec.name]

    def new_tasks(self, spec: KindSpec) -> KindTwin | None:
        """The forecast/anomaly part of a new twin of ``spec`` (None when the kind has only a label task)."""
        if not self._has_tasks[spec.name]:
            return None
        prior = self.priors.get(spec.name)
        return KindTwin(spec, forecast_priors=prior.forecasts if prior is not None else None, include_label=False)

    def new_twin(self, entity_id: str, spec: KindSpec) -> Twin:
        return Twin(entity_id=entity_id, learner=self._learner(spec) if self._label[spec.name] else None,
                    kind=spec.name, tasks=self.new_tasks(spec))

    def adopt(self, twin: Twin, spec: KindSpec) -> None:
        """A twin checkpointed before it had a kind (or under another spec) takes ``spec``'s missing parts."""
        twin.kind = spec.name
        if twin.tasks is None:
            twin.tasks = self.new_tasks(spec)
        if twin.learner is None and self._label[spec.name] is not None:
            twin.learner = self._learner(spec)

    def _learner(self, spec: KindSpec) -> TwinLearner:
        return kind_learner(spec, self._prior_params.get(spec.name))


def encode_task_prediction(telemetry: Telemetry, twin: Twin, p: TaskPrediction, synthetic_share: float) -> bytes:
    """JSON of a forecast or anomaly :class:`~twinstream.schemas.prediction.Prediction` (a test validates it).

    A forecast carries the metric's measured value at this seq (``measured``), to set
    against the forecast made for this seq ``horizon`` samples earlier.
    """
    measured = telemetry.metrics.get(p.target) if p.task == "forecast" and not telemetry.synthetic else None
    return orjson.dumps(
        {
            "entity_id": telemetry.entity_id,
            "event_time": telemetry.event_time,
            "seq": telemetry.seq,
            **p.prediction_fields(),
            **({} if measured is None else {"measured": measured}),
            "updates": twin.updates,
            "synthetic": telemetry.synthetic or synthetic_share > 0.0,
            "synthetic_share": synthetic_share,
        }
    )


class TargetCounts:
    """Predictions and label errors of one batch, per target, for the Prometheus counters.

    Why per batch: a labelled child lookup takes a lock; once per target and batch keeps
    the per-event cost what it was with one target. ``withdraw`` forgets the
    predictions of a record that failed (they are not published).
    """

    __slots__ = ("metrics", "order", "errors")

    def __init__(self, metrics: WorkerMetrics) -> None:
        self.metrics = metrics
        self.order: list[str] = []  # target of each prediction, in output order
        self.errors: dict[str, list[float]] = {}  # label errors per target, observed at publish

    def predicted(self, target: str) -> None:
        self.order.append(target)

    def withdraw(self, mark: int) -> None:
        del self.order[mark:]

    def error(self, target: str, value: float) -> None:
        values = self.errors.get(target)
        if values is None:
            values = self.errors[target] = []
        values.append(value)

    def publish(self) -> None:
        for target, values in self.errors.items():
            observe_many(self.metrics.abs_error.labels(target), values)
        if not self.order:
            return
        first = self.order[0]
        if self.order.count(first) == len(self.order):  # the common case: one target
            self.metrics.predictions.labels(first).inc(len(self.order))
            return
        totals: dict[str, int] = {}
        for target in self.order:
            totals[target] = totals.get(target, 0) + 1
        for target, n in totals.items():
            self.metrics.predictions.labels(target).inc(n)
