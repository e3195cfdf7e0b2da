"""A twin: one entity's learner plus the bookkeeping that makes updates idempotent.

Why sequence numbers live here and not in the broker: the embedded broker (and many
production setups) cannot run Kafka transactions, yet a crash must never make a twin
learn an event twice. A twin remembers the last sequence number it applied; anything
at or below it is a duplicate (a redelivery) and is skipped. Sequence numbers a source
skipped are remembered (boundedly), so an event that arrives late for such a gap is
recognised as late, not as a duplicate, and can be reported instead of vanishing.

>>> from twinstream.models.river_linear import RiverLinearTwin
>>> twin = Twin(entity_id="engine-1", learner=RiverLinearTwin())
>>> twin.classify(0), twin.step(0, {"s1": 1.0}, target=5.0).value
(<SeqStatus.NEW: 'new'>, 0.0)
>>> twin.classify(0), twin.updates
(<SeqStatus.DUPLICATE: 'duplicate'>, 1)
>>> _ = twin.step(3, {"s1": 1.2}, target=None)      # seq 1 and 2 never arrived
>>> twin.classify(2), twin.classify(4)
(<SeqStatus.LATE: 'late'>, <SeqStatus.NEW: 'new'>)
"""

from __future__ import annotations

import pickle
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from twinstream.models.base import Features, IntervalPrediction, Observation, TwinLearner, observe_all, unpickle_as
from twinstream.models.fills import FillBook
from twinstream.models.gaps import GapDetector
from twinstream.models.kind_twin import KindTwin

MAX_REMEMBERED_GAPS = 64
AGE_FEATURE = "age"


class SeqStatus(StrEnum):
    """How an incoming sequence number relates to what the twin has applied."""

    NEW = "new"
    DUPLICATE = "duplicate"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Step:
    """One event for :meth:`Twin.step_many`: the arguments of :meth:`Twin.step`, with its twin."""

    twin: Twin
    seq: int
    metrics: Features
    target: float | None = None
    synthetic: Collection[str] = ()
    weight: float = 1.0


@dataclass(slots=True)
class Twin:
    """Per-entity state: learner, last applied sequence, counters.

    ``learner`` answers the entity kind's label task (None for a kind without one);
    ``kind`` names the declared kind (twins.yaml) and ``tasks`` holds its forecast and
    anomaly tasks (None when it has none, and for twins of a worker without a spec).
    """

    entity_id: str
    learner: TwinLearner | None
    last_seq: int = -1
    updates: int = 0
    labelled: int = 0
    gaps: int = 0
    missing: list[int] = field(default_factory=list)
    # The entity's gap detector and its synthetic-fill book live (and are
    # checkpointed) with the twin, so a restarted worker continues both where they were.
    detector: GapDetector | None = None
    fills: FillBook = field(default_factory=FillBook)
    absorbed: list[int] = field(default_factory=list)  # missed seqs whose synthetic fill was absorbed
    kind: str | None = None
    tasks: KindTwin | None = None

    def __setstate__(self, state: object) -> None:
        """Restore a pickled twin; a twin pickled before a field existed gets its default."""
        slots = state[1] if isinstance(state, tuple) and len(state) == 2 else state  # (None, {slot: value})
        if not isinstance(slots, dict):
            raise TypeError(f"unexpected pickled Twin state {type(state).__name__}")
        for name, value in slots.items():
            object.__setattr__(self, name, value)
        for name, make in (("detector", lambda: None), ("fills", FillBook), ("absorbed", list), ("kind", lambda: None),
                           ("tasks", lambda: None)):
            if not hasattr(self, name):
                object.__setattr__(self, name, make())

    def classify(self, seq: int) -> SeqStatus:
        if seq > self.last_seq:
            return SeqStatus.NEW
        return SeqStatus.LATE if seq in self.missing or seq in self.absorbed else SeqStatus.DUPLICATE

    def forget_missing(self, seq: int) -> None:
        """A late event for ``seq`` was reported; stop waiting for it."""
        for seen in (self.missing, self.absorbed):
            if seq in seen:
                seen.remove(seq)

    def features(self, metrics: Features) -> dict[str, float | None]:
        """The learner's input: the sample's metrics plus the twin's age in samples."""
        x = dict(metrics)
        x[AGE_FEATURE] = float(self.updates)
        return x

    def step(
        self, seq: int, metrics: Features, target: float | None, synthetic: Collection[str] = (), weight: float = 1.0
    ) -> IntervalPrediction:
        """Predict for a NEW event, then learn from its label if it has one.

        Prequential order (predict, then learn) keeps the reported error honest.
        The caller checks :meth:`classify` first; a non-new ``seq`` raises.
        ``synthetic`` names the inputs that are gap fills (see ``TwinLearner.observe_one``).
        ``weight`` is the label's sample weight (``TwinLearner.learn_one``'s ``w``, in
        [0, 1]; the worker passes ``synthetic_learn_weight`` for synthetic input).
        """
        learner = self._stepping(seq)
        return self._conclude(seq, learner, learner.observe_one(self.features(metrics), synthetic), target, weight)

    def _stepping(self, seq: int) -> TwinLearner:
        """The learner, when ``seq`` may be stepped (a NEW event of a twin with a label task); else ``ValueError``."""
        if seq <= self.last_seq:
            raise ValueError(f"{self.entity_id}: seq {seq} is not after last applied seq {self.last_seq}")
        if self.learner is None:
            raise ValueError(f"{self.entity_id}: a twin of kind {self.kind!r} has no label task to step")
        return self.learner

    def _conclude(self, seq: int, learner: TwinLearner, x: Features, target: float | None, weight: float) -> IntervalPrediction:
        """After observing: predict, learn, advance (the rest of :meth:`step`)."""
        prediction = learner.predict_and_learn(x, target, w=weight)
        if target is not None:
            self.labelled += 1
        self.advance(seq)
        return prediction

    @staticmethod
    def step_many(steps: Sequence[Step]) -> list[IntervalPrediction | Exception]:
        """:meth:`step` for several twins, one event each, with their learners' observations batched.

        Each result is what ``twin.step(...)`` returns for its step (to float tolerance), or
        the exception it raised; a failed step leaves the others standing. The twins must be
        distinct (one event per entity: the worker's waves); :func:`observe_all` lets each
        learner family batch its stateless work (``TwinLearner.observe_many``).

        >>> from twinstream.models.river_linear import RiverLinearTwin
        >>> a, b = Twin("a", RiverLinearTwin()), Twin("b", RiverLinearTwin())
        >>> [r.value for r in Twin.step_many([Step(a, 0, {"s1": 1.0}, 5.0), Step(b, 0, {"s1": 2.0})])]
        [0.0, 0.0]
        >>> a.labelled, b.labelled, isinstance(Twin.step_many([Step(a, 0, {"s1": 1.0})])[0], ValueError)
        (1, 0, True)
        """
        if len(steps) == 1:  # nothing to batch
            step = steps[0]
            try:
                return [step.twin.step(step.seq, step.metrics, step.target, step.synthetic, weight=step.weight)]
            except Exception as exc:  # noqa: BLE001 - reported per step
                return [exc]
        out: list[IntervalPrediction | Exception] = [ValueError("not stepped")] * len(steps)
        observing: list[tuple[int, TwinLearner]] = []
        items: list[Observation] = []
        for i, step in enumerate(steps):
            try:
                learner = step.twin._stepping(step.seq)
                items.append((learner, step.twin.features(step.metrics), step.synthetic))
                observing.append((i, learner))
            except Exception as exc:  # noqa: BLE001 - reported per step
                out[i] = exc
        for (i, learner), x in zip(observing, observe_all(items), strict=True):
            if isinstance(x, Exception):
                out[i] = x
                continue
            step = steps[i]
            try:
                out[i] = step.twin._conclude(step.seq, learner, x, step.target, step.weight)
            except Exception as exc:  # noqa: BLE001 - reported per step
                out[i] = exc
        return out

    def advance(self, seq: int) -> None:
        """The sequence bookkeeping of a NEW event (gaps, last seq, update count), without a learner.

        :meth:`step` ends with it; a twin whose kind has no label task (forecast and
        anomaly tasks only, applied by :attr:`tasks`) calls it alone, so duplicates and
        late events are recognised the same way for every kind.

        >>> twin = Twin(entity_id="pump-0", learner=None, kind="pump")
        >>> twin.advance(0); twin.advance(3)
        >>> twin.updates, twin.gaps, twin.classify(2), twin.classify(3)
        (2, 2, <SeqStatus.LATE: 'late'>, <SeqStatus.DUPLICATE: 'duplicate'>)
        """
        if seq <= self.last_seq:
            raise ValueError(f"{self.entity_id}: seq {seq} is not after last applied seq {self.last_seq}")
        if self.last_seq >= 0 and seq > self.last_seq + 1:
            skipped = range(max(self.last_seq + 1, seq - MAX_REMEMBERED_GAPS), seq)
            self.gaps += seq - self.last_seq - 1
            self.missing.extend(skipped)
            del self.missing[:-MAX_REMEMBERED_GAPS]
        self.last_seq = seq
        self.updates += 1

    def absorb(self, seq: int, metrics: Features) -> bool:
        """Apply a synthetic sample for ``seq``, a sample that never arrived, after later ones were applied.

        Why: a twin whose samples go missing would otherwise fall behind its entity (its
        age counts applied samples, its smoothing means see fewer readings). The sidecar's
        fill for a missed sample can only arrive after the sample that revealed the gap,
        so it is absorbed late: the learner's state advances as if the sample had come
        (every input synthetic, so none enters the personal baseline), nothing is
        predicted or learned. The measured sample, should it still arrive, is reported
        late as before. Returns False (and changes nothing) unless ``seq`` is a missed
        sequence number the twin still remembers and has not absorbed.

        >>> from twinstream.models.river_linear import RiverLinearTwin
        >>> twin = Twin(entity_id="e", learner=RiverLinearTwin())
        >>> _ = twin.step(0, {"s1": 1.0}, None); _ = twin.step(2, {"s1": 1.2}, None)
        >>> twin.absorb(1, {"s1": 1.1}), twin.updates, twin.absorb(1, {"s1": 1.1}), twin.classify(1)
        (True, 3, False, <SeqStatus.LATE: 'late'>)
        """
        if seq not in self.missing:
            return False
        if self.learner is not None:
                self.learner.observe_one(self.features(metrics), frozenset(k for k, v in metrics.items() if v is not None))
        self.missing.remove(seq)
        self.absorbed.append(seq)
        del self.absorbed[:-MAX_REMEMBERED_GAPS]
        self.updates += 1
        return True

    def to_bytes(self) -> bytes:
        """Snapshot for the changelog-backed twin table."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(blob: bytes) -> Twin:
        return unpickle_as(blob, Twin, "twin table value")

