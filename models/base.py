"""The contract every twin learner follows (River style: one class, learn/predict one).

A twin's learner sees one entity's stream, one sample at a time. Beyond River's
``learn_one``/``predict_one`` a twin needs: an interval (operators act on ranges, not
points), a byte size (state lives in a changelog-backed table, so size is cost), and
a snapshot that survives pickling into that table. Learners must tolerate missing
features (``None``/NaN) and predict something sensible before any learning.

>>> from twinstream.models.river_linear import RiverLinearTwin
>>> learner = RiverLinearTwin(seed=1)
>>> learner.learn_one({"a": 1.0, "b": None}, 3.0)
>>> isinstance(learner.predict_one({"a": 1.0}), float)
True
>>> restored = TwinLearner.restore(learner.snapshot())
>>> restored.predict_one({"a": 1.0}) == learner.predict_one({"a": 1.0})
True
"""

from __future__ import annotations

import abc
import copy
import math
import pickle
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

Features = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class IntervalPrediction:
    """A point prediction and a (lower, upper) interval around it."""

    value: float
    lower: float
    upper: float


T = TypeVar("T")


def unpickle_as(blob: bytes, cls: type[T], what: str) -> T:
    """Unpickle ``blob`` and check it is a ``cls`` (state read back from our own table)."""
    value = pickle.loads(blob)
    if not isinstance(value, cls):
        raise TypeError(f"{what} holds {type(value).__name__}, not a {cls.__name__}")
    return value


def clean_features(x: Features) -> dict[str, float]:
    """Drop missing values (None, NaN, inf): learners see only what was measured."""
    return {k: float(v) for k, v in x.items() if v is not None and math.isfinite(v)}


def check_weight(w: float) -> float:
    """``w`` as a float if it is a valid sample weight (0 <= w <= 1), else ``ValueError``.

    >>> check_weight(0.5), check_weight(1)
    (0.5, 1.0)
    >>> check_weight(1.5)
    Traceback (most recent call last):
    ...
    ValueError: sample weight must be in [0, 1], got 1.5
    """
    w = float(w)
    if not 0.0 <= w <= 1.0:  # also rejects NaN
        raise ValueError(f"sample weight must be in [0, 1], got {w}")
    return w


Observation = tuple["TwinLearner", Features, Collection[str]]  # (learner, its input, the synthetic input names)


def observe_all(items: Sequence[Observation]) -> list[Features | Exception]:
    """:meth:`TwinLearner.observe_many` over learners of any classes (one event each), results in item order.

    Learners are grouped by class, so each family batches its own events.

    >>> from twinstream.models.river_linear import RiverLinearTwin
    >>> observe_all([(RiverLinearTwin(), {"a": 1.0}, ())])
    [{'a': 1.0}]
    """
    groups: dict[type[TwinLearner], list[int]] = {}
    for i, (learner, _, _) in enumerate(items):
        groups.setdefault(type(learner), []).append(i)
    out: list[Features | Exception] = [{}] * len(items)
    for cls, where in groups.items():
        for i, result in zip(where, cls.observe_many([items[i] for i in where]), strict=True):
            out[i] = result
    return out


class TwinLearner(abc.ABC):
    """Base class of per-entity online learners.

    Subclasses set ``family`` and ``version`` (recorded on every prediction) and
    implement :meth:`learn_one`, :meth:`predict_one` and :meth:`predict_interval`.
    """

    family: ClassVar[str] = "abstract"
    version: ClassVar[str] = "0"

    def observe_one(self, x: Features, synthetic: Collection[str] = ()) -> Features:
        """Called exactly once per applied event, before predict/learn; returns the features to use.

        Stateful feature extraction (smoothing, the entity's own baseline, trends) updates
        here, so that predicting and learning on the same event see the same features.
        ``synthetic`` names the inputs of ``x`` that are generated gap fills, not
        measurements (a learner may keep them out of per-entity estimates).
        The default passes ``x`` through.
        """
        return x

    @classmethod
    def observe_many(cls, items: Sequence[Observation]) -> list[Features | Exception]:
        """:meth:`observe_one` for several learners of this class, one event each; results in order.

        Why: stateless work given the features (e.g. a fleet prior's network) is far
        cheaper as one array operation over many events than as many calls with batch
        size 1. The worker applies a batch of events in waves with at most one event per
        entity, so the learners of one call are distinct and their order is free; what
        must stay sequential (each learner's own feature state) stays per learner.
        The result for each item is exactly what ``learner.observe_one(x, synthetic)``
        returns (to float tolerance), or the exception it raised: one learner's failure
        leaves the others' results standing. The default loops over :meth:`observe_one`.
        """
        out: list[Features | Exception] = []
        for learner, x, synthetic in items:
            try:
                out.append(learner.observe_one(x, synthetic))
            except Exception as exc:  # noqa: BLE001 - reported per item, see the docstring
                out.append(exc)
        return out

    @abc.abstractmethod
    def learn_one(self, x: Features, y: float, w: float = 1.0) -> None:
        """Update the learner with one labelled sample of weight ``w``.

        ``w`` scales this sample's influence on what the learner fits (River's sample
        weight: the gradient step of an SGD model is scaled by ``w``). ``w = 1`` is an
        ordinary sample (the default); ``0 < w < 1`` down-weights it, e.g. a labelled
        event whose input holds synthetic gap fills (``synthetic_learn_weight``);
        ``w = 0`` learns nothing and leaves the learner unchanged. Running statistics
        that cannot be weighted either learn only from full-weight samples (``w = 1``;
        e.g. the residual quantile behind the interval) or from every learned sample
        unweighted (e.g. a feature scaler); each learner documents which. A ``w``
        outside [0, 1] raises ``ValueError`` (use :func:`check_weight`).
        """

    @abc.abstractmethod
    def predict_one(self, x: Features) -> float:
        """Point prediction for ``x`` (finite, also before any learning)."""

    @abc.abstractmethod
    def predict_interval(self, x: Features) -> IntervalPrediction:
        """Point prediction with an interval."""

    def predict_and_learn(self, x: Features, y: float | None, w: float = 1.0) -> IntervalPrediction:
        """:meth:`predict_interval` on ``x``, then :meth:`learn_one` from ``y`` (none when ``y`` is None).

        Why one call: the prequential step predicts and then learns on the same input, and
        learning usually needs the prediction it has just made (e.g. the residual behind the
        interval). A learner that overrides this shares that work between the two halves;
        its result and state must stay exactly those of the two calls (the conformance
        suite checks every registered learner), and it should apply only while
        :meth:`steps_as` holds, so that a subclass overriding one of the two calls is not
        bypassed. The default makes the two calls.
        """
        prediction = self.predict_interval(x)
        if y is not None:
            self.learn_one(x, y, w=w)
        return prediction

    def steps_as(self, owner: type[TwinLearner]) -> bool:
        """Whether this learner predicts and learns with ``owner``'s own methods.

        Why: an override of :meth:`predict_and_learn` written for ``owner`` would skip a
        subclass's own ``predict_one``, ``predict_interval`` or ``learn_one``, or one set
        on the instance.

        >>> from twinstream.models.river_linear import RiverLinearTwin
        >>> class Louder(RiverLinearTwin):
        ...     def predict_one(self, x): return 2 * super().predict_one(x)
        >>> RiverLinearTwin().steps_as(RiverLinearTwin), Louder().steps_as(RiverLinearTwin)
        (True, False)
        """
        cls = type(self)
        if not (cls.predict_interval is owner.predict_interval and cls.predict_one is owner.predict_one
                and cls.learn_one is owner.learn_one):
            return False
        own = getattr(self, "__dict__", None)  # a method replaced on the instance (e.g. patched in a test)
        return not own or not ("predict_interval" in own or "predict_one" in own or "learn_one" in own)

    @property
    def model_version(self) -> str:
        return f"{self.family}-v{self.version}"

    def params(self) -> dict[str, Any]:
        """Constructor parameters, for :meth:`clone` (override when they differ from attributes)."""
        return {}

    def clone(self) -> TwinLearner:
        """A fresh, untrained learner with the same parameters."""
        return type(self)(**copy.deepcopy(self.params()))

    def snapshot(self) -> bytes:
        """The learner's full state as bytes (what the twin table stores)."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def restore(blob: bytes) -> TwinLearner:
        return unpickle_as(blob, TwinLearner, "snapshot")

    def state_bytes(self) -> int:
        """Size of the snapshot in bytes (the twin's memory and changelog cost)."""
        return len(self.snapshot())
