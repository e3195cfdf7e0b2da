"""Twin kinds, declared in one file (``twins.yaml``): what a fleet is made of.

Why a declared kind: the plumbing serves any entity, but a twin must know what it is
looking at: which metrics (and their units and valid ranges), what to predict, with
which learner and from which prior. A kind is to its twins what a DTDL interface is to
Azure digital twins, or a Thing Model to Ditto things: declared once, instantiated per
entity. A bad file is refused as a whole, with the line and the field at fault, so a
worker never starts half-configured.

>>> spec = parse_spec('''
... kinds:
...   - name: pump
...     match: {entity_id: ["pump-*"]}
...     metrics: [{name: flow, unit: m3/h, range: [0, 500]}, {name: pressure}]
...     tasks: [{type: forecast, metric: flow, horizon: 6}]
... ''')
>>> registry = KindRegistry(spec)
>>> registry.match("pump-3").name, registry.match("fan-1") is None
('pump', True)
>>> parse_spec("kinds:\\n  - name: pump\\n    tasks: [{type: forecast, metric: flow, horizon: 0}]\\n")
Traceback (most recent call last):
...
twinstream.schemas.twin_spec.SpecError: <string>:3: kinds[0].tasks[0].horizon: Input should be greater than or equal to 1
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from twinstream.schemas.telemetry import MetricName

KindName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]


class SpecError(ValueError):
    """A twins.yaml that cannot be used; the message names the file, line and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MetricSpec(_Strict):
    """One measured quantity of a kind."""

    name: MetricName
    unit: str | None = Field(default=None, max_length=32)
    range: tuple[float, float] | None = Field(default=None, description="Valid [low, high]; values outside are implausible.")

    @model_validator(mode="after")
    def _ordered(self) -> MetricSpec:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range low {self.range[0]} is above high {self.range[1]}")
        return self


class ForecastTask(_Strict):
    """Forecast ``metric`` ``horizon`` samples ahead; self-supervised (the label is the later sample)."""

    type: Literal["forecast"]
    metric: MetricName
    horizon: int = Field(ge=1, le=10_000)
    coverage: float = Field(default=0.9, gt=0.0, lt=1.0)
    season: int | None = Field(default=None, ge=2, description="Season length in samples; default: detected.")
    max_season: int = Field(default=512, ge=0, le=10_000)

    @property
    def key(self) -> str:
        return f"{self.metric}@{self.horizon}"


class LabelTask(_Strict):
    """Predict a target delivered in telemetry's ``targets`` (e.g. RUL in a historical replay)."""

    type: Literal["label"]
    target: MetricName

    @property
    def key(self) -> str:
        return self.target


class AnomalyTask(_Strict):
    """Score in [0, 1] per event from the forecast residuals of ``metric``; ``threshold`` flags an anomaly."""

    type: Literal["anomaly"]
    metric: MetricName
    horizon: int = Field(default=1, ge=1, le=10_000)
    threshold: float = Field(default=0.99, gt=0.0, lt=1.0)

    @property
    def key(self) -> str:
        return f"{self.metric}!anomaly"


Task = Annotated[ForecastTask | LabelTask | AnomalyTask, Field(discriminator="type")]


class MatchRule(_Strict):
    """Which entities are of this kind: an id glob, or the ``kind`` field a sample carries."""

    entity_id: list[str] = Field(default_factory=list, description="fnmatch globs, e.g. 'pump-*'; '*' is a catch-all.")
    kind: str | None = Field(default=None, description="Samples whose kind field equals this (default: the kind's name).")


class LearnerSpec(_Strict):
    family: str = Field(default="prior-twin", description="Learner family of label tasks (models/registry.py).")
    params: dict[str, Any] = Field(default_factory=dict)


class PriorRef(_Strict):
    """Where a kind's prior comes from: exactly one of a bundled name, an artifact directory, a registry family.

    ``artifact`` and ``path`` are the same thing (the directory ``prior train --out`` wrote);
    a relative directory is read from the folder of the twins.yaml that names it.
    """

    bundled: str | None = None
    path: str | None = None
    artifact: str | None = None
    registry: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PriorRef:
        given = [k for k in ("bundled", "path", "artifact", "registry") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of bundled, artifact (or path), registry (got {', '.join(given) or 'none'})")
        return self

    @property
    def directory(self) -> str | None:
        """The artifact directory, whichever of ``artifact`` / ``path`` named it."""
        return self.artifact if self.artifact is not None else self.path


class KindSpec(_Strict):
    """One kind of entity: how to recognise it, what it measures, what its twins predict."""

    name: KindName
    match: MatchRule = Field(default_factory=MatchRule)
    metrics: list[MetricSpec] = Field(default_factory=list)
    tasks: list[Task] = Field(min_length=1)
    learner: LearnerSpec = Field(default_factory=LearnerSpec)
    prior: PriorRef | None = None

    @model_validator(mode="after")
    def _consistent(self) -> KindSpec:
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError(f"metric declared twice: {sorted({n for n in names if names.count(n) > 1})}")
        keys = [t.key for t in self.tasks]
        if len(set(keys)) != len(keys):
            raise ValueError(f"task declared twice: {sorted({k for k in keys if keys.count(k) > 1})}")
        for task in self.tasks:
            metric = getattr(task, "metric", None)
            if metric is not None and names and metric not in names:
                raise ValueError(f"task {task.type} names metric {metric!r}, which is not among the kind's metrics")
        return self

    @property
    def metric_names(self) -> list[str]:
        return [m.name for m in self.metrics]


class TwinSpec(_Strict):
    """The whole file: kinds in priority order (the first whose rule matches wins)."""

    version: Literal[1] = 1
    kinds: list[KindSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> TwinSpec:
        names = [k.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise ValueError(f"kind declared twice: {sorted({n for n in names if names.count(n) > 1})}")
        fields = [k.match.kind or k.name for k in self.kinds]
        if len(set(fields)) != len(fields):
            raise ValueError(f"two kinds answer to the same kind field: {sorted({f for f in fields if fields.count(f) > 1})}")
        return self


def _line_of(node: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (or of its deepest existing parent)."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == part), None)
            if found is None:
                break
            node = found
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("forecast", "label", "anomaly", "function-after[_ordered(), MetricSpec]"):
            continue  # the discriminated union's branch name is not a field of the file
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def parse_spec(text: str, source: str = "<string>") -> TwinSpec:
    """Validate a twins.yaml text; a problem raises :class:`SpecError` naming line and field."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise SpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    try:
        return TwinSpec.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in ("forecast", "label", "anomaly")))
        line = _line_of(node, loc)
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise SpecError(f"{source}:{line if line is not None else '?'}: {_field_path(loc)}: {err['msg']}{more}") from None


def load_spec(path: str | Path) -> TwinSpec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_spec(text, str(path))


class KindRegistry:
    """Finds the kind of an entity; answers are cached per (entity id, kind field).

    A sample that carries a ``kind`` field is matched by it only (a kind whose
    ``match.kind``, or name, equals it); otherwise the kinds' entity-id globs are tried
    in file order. None means no kind matches: the sample goes to the dead-letter topic
    as ``unknown_kind``.
    """

    def __init__(self, spec: TwinSpec) -> None:
        self.spec = spec
        self._by_field = {(k.match.kind or k.name): k for k in spec.kinds}
        self._cache: dict[tuple[str, str | None], KindSpec | None] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> KindRegistry:
        return cls(load_spec(path))

    def kind(self, name: str) -> KindSpec:
        for k in self.spec.kinds:
            if k.name == name:
                return k
        raise KeyError(name)

    def match(self, entity_id: str, kind: str | None = None) -> KindSpec | None:
        key = (entity_id, kind)
        try:
            return self._cache[key]
        except KeyError:
            pass
        if kind is not None:
            found = self._by_field.get(kind)
        else:
            found = next((k for k in self.spec.kinds if any(fnmatch.fnmatchcase(entity_id, g) for g in k.match.entity_id)), None)
        if len(self._cache) > 100_000:
            self._cache.clear()  # bounded: a worker may see very many entity ids over its life
        self._cache[key] = found
        return found
