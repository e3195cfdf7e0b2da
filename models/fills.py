"""Synthetic fills inside a twin: which values may be filled, and which fill an event uses.

Why a book per twin: fills come from the sidecar on their own topic, usually *after* the
measured sample whose sensor was missing has been applied (the sidecar needs to see that
sample first), sometimes before it. The twin applies events in sequence order and never
goes back, so a fill is used in one of two ways:

- **at its own sequence number**, when it arrived before the measured sample (it waits in
  ``pending``): the sample's missing sensor takes the fill's value;
- **carried forward**, when it arrived after: it becomes the latest synthetic value of
  that sensor and fills the sensor in the following samples for as long as the sensor
  stays missing (like a last observation carried forward, but the value is the
  sidecar's estimate conditioned on the entity's recent context).

A fill never overwrites a measured value: a fill for an ``(entity, seq, sensor)`` whose
value was measured is refused and counted, and a fill for a sensor that is measured
again stops being carried. Fills for samples that never arrived (missed samples) are not
the book's business: the twin absorbs them late (``Twin.absorb``). State is bounded: the last
``HORIZON`` sequence numbers with a missing sensor, at most ``HORIZON`` early fills.

>>> book = FillBook()
>>> book.prepare(0, {"a": 1.0, "b": 2.0})
({'a': 1.0, 'b': 2.0}, 2, 0)
>>> book.prepare(1, {"a": 1.1, "b": None})          # b missing, no fill yet: stays missing
({'a': 1.1, 'b': None}, 1, 0)
>>> book.offer(1, last_seq=1, values={"b": 2.5}).accepted, book.offer(1, last_seq=1, values={"a": 9.0}).refused_measured
(1, 1)
>>> book.prepare(2, {"a": 1.2, "b": None})          # the fill of seq 1 is carried forward
({'a': 1.2, 'b': 2.5}, 1, 1)
>>> book.offer(3, last_seq=2, values={"b": 2.7}).early  # arrives before seq 3
1
>>> book.prepare(3, {"a": 1.3})                     # b absent: the early fill is used at its own seq
({'a': 1.3, 'b': 2.7}, 1, 1)
>>> book.prepare(4, {"a": 1.4, "b": 2.9})           # b measured again: nothing carried any more
({'a': 1.4, 'b': 2.9}, 2, 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

HORIZON = 64
MAX_SENSORS = 256


@dataclass(slots=True)
class FillOutcome:
    """What happened to the values of one synthetic sample offered to a twin."""

    accepted: int = 0  # filled a missing value of an applied sample (now carried forward)
    early: int = 0  # held until the measured sample of that seq arrives
    duplicate: int = 0  # that (seq, sensor) already had a fill: the first one stays
    refused_measured: int = 0  # the value was measured: a fill never overwrites it
    stale: int = 0  # older than the book remembers, or early-fill room exhausted


@dataclass(slots=True)
class FillBook:
    """Per-twin bookkeeping of missing sensors and synthetic fills (picklable, bounded)."""

    open: dict[int, dict[str, float | None]] = field(default_factory=dict)  # seq -> missing sensor -> fill
    pending: dict[int, dict[str, float]] = field(default_factory=dict)  # fills ahead of their sample
    latest: dict[str, tuple[int, float]] = field(default_factory=dict)  # carried fill per missing sensor
    known: set[str] = field(default_factory=set)  # sensors this entity has reported
    last_missing: frozenset[str] = frozenset()  # sensors missing in the last applied sample
    refused_early: int = 0  # early fills refused by the last prepare (the sample measured them)

    def __setstate__(self, state: tuple[None, dict[str, object]] | dict[str, object]) -> None:
        """Restore from a pickle, ignoring slots this class no longer has.

        Why: twins are pickled into the changelog, and a checkpoint written by an older
        version may carry a removed field (``learn_credit``, a thinning credit replaced by
        sample weights); a plain slots class would fail to load it.
        """
        values = state[1] if isinstance(state, tuple) else state
        for name in self.__slots__:
            if name in values:
                setattr(self, name, values[name])

    def prepare(self, seq: int, metrics: Mapping[str, float | None]) -> tuple[dict[str, float | None], int, int]:
        """The metrics an applied sample gives the twin, and (measured, synthetic) value counts.

        Missing sensors (null, or absent but reported before) take the early fill for this
        ``seq`` if one waits, else the latest fill carried forward, else stay missing.
        """
        known = self.known
        if (not self.pending and not self.open and len(metrics) == len(known) and None not in metrics.values()
                and known.issuperset(metrics.keys())):
            # Hot path: every known sensor measured, nothing waiting or open (what the loop below
            # concludes for such a sample, without it).
            if self.latest:
                self.latest.clear()
            self.last_missing = frozenset()
            return dict(metrics), len(metrics), 0
        missing: list[str] | None = None
        measured = 0
        for name, value in metrics.items():
            if value is None:
                if missing is None:
                    missing = []
                missing.append(name)
            else:
                measured += 1
        if not known.issuperset(metrics.keys()):
            for name, value in metrics.items():
                if value is not None and name not in known and len(known) < MAX_SENSORS:
                    known.add(name)
        if len(known) > measured + (len(missing) if missing else 0):
            absent = [name for name in known if name not in metrics]
            if absent:
                missing = (missing or []) + absent
        early = self.pending.pop(seq, None)
        if early is not None:
            # an early fill for a sensor that this sample measured is refused (counted by the caller)
            self.refused_early += sum(1 for name in early if metrics.get(name) is not None)
        if not missing:
            if self.latest:
                self.latest.clear()
            self.last_missing = frozenset()
            self._prune(seq)
            return dict(metrics), measured, 0
        out = dict(metrics)
        book: dict[str, float | None] = {}
        synthetic = 0
        for name in missing:
            value: float | None = None
            if early is not None and name in early:
                value = early[name]
                book[name] = value
                self.latest[name] = (seq, value)
            else:
                book[name] = None
                carried = self.latest.get(name)
                if carried is not None:
                    value = carried[1]
            out[name] = value
            if value is not None:
                synthetic += 1
        missing_set = frozenset(missing)
        for name in [n for n in self.latest if n not in missing_set]:
            del self.latest[name]  # measured again: never carry a fill over a measurement
        self.open[seq] = book
        self.last_missing = missing_set
        self._prune(seq)
        return out, measured, synthetic

    def take_refused_early(self) -> int:
        """Early fills refused by the last :meth:`prepare` because the sample measured them."""
        refused, self.refused_early = self.refused_early, 0
        return refused

    def offer(self, seq: int, last_seq: int, values: Mapping[str, float | None]) -> FillOutcome:
        """A synthetic sample for ``seq`` arrived; the twin has applied up to ``last_seq``."""
        out = FillOutcome()
        filled = {name: float(v) for name, v in values.items() if v is not None}
        if seq > last_seq:
            slot = self.pending.get(seq)
            if slot is None:
                if len(self.pending) >= HORIZON:
                    out.stale += len(filled)
                    return out
                slot = self.pending[seq] = {}
            for name, value in filled.items():
                if name in slot:
                    out.duplicate += 1
                else:
                    slot[name] = value
                    out.early += 1
            return out
        book = self.open.get(seq)
        if book is None:
            if seq <= last_seq - HORIZON:
                out.stale += len(filled)
            else:
                out.refused_measured += len(filled)  # every sensor of that sample was measured
            return out
        for name, value in filled.items():
            if name not in book:
                out.refused_measured += 1
            elif book[name] is not None:
                out.duplicate += 1
            else:
                book[name] = value
                out.accepted += 1
                carried = self.latest.get(name)
                if name in self.last_missing and (carried is None or carried[0] <= seq):
                    self.latest[name] = (seq, value)
        return out

    def _prune(self, seq: int) -> None:
        floor = seq - HORIZON
        if self.open and min(self.open) <= floor:
            for old in [s for s in self.open if s <= floor]:
                del self.open[old]
        if self.pending and min(self.pending) <= seq:
            for old in [s for s in self.pending if s <= seq]:
                del self.pending[old]
