"""Per-entity gap detection: missed samples, missing sensors, flat-lined sensors.

One :class:`GapDetector` per entity sees that entity's telemetry in sequence order
(River style: :meth:`GapDetector.observe_one` per sample) and returns the
:class:`~twinstream.schemas.gaps.Gap` messages the sample reveals. It learns, from the
stream itself:

- the entity's **cadence**: the interquartile mean of the time per sequence step over
  the last ``cadence_window`` steps (trimmed, so an occasional gap does not inflate it,
  jitter averages out, and a lasting change of cadence is learned within half a window). A sequence jump is
  a missed-samples gap at once; a silence longer than ``cadence_factor`` cadences with
  no jump (a source that numbers only what it sends) is one too, once ``min_steps``
  steps have been seen.
- the **sensors** it reports: a sensor seen before that is null, NaN or absent opens a
  ``missing_sensor`` gap, closed when it comes back.
- each sensor's **change rate**: a sensor that has varied and then repeats one value for
  ``L`` samples opens a ``flatline`` gap (starting at the first repeated sample; a change
  closes it), where ``L`` is the largest of ``flat_window``, twice its longest earlier
  repeat, and the run length that has probability below ``flat_alpha`` under a low
  estimate of its own change rate. Sensors that never or rarely varied, or that toggle
  between fewer than ``min_levels`` quantisation steps (constant or coarsely quantised
  by design), are not flagged. On C-MAPSS FD001 (all 21 sensors,
  train and test engines) the defaults raise no gap; a sensor frozen mid-life is flagged
  after 10 to 18 repeated cycles.

Memory is bounded: a fixed-size interval buffer and a few numbers per sensor, for at
most ``max_sensors`` sensors. The detector pickles (it lives in a changelog-backed
table next to the twin). Duplicates and late samples (``seq`` not after the last one)
are ignored.

>>> from datetime import datetime, timedelta, timezone
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> at = lambda seq: t0 + timedelta(minutes=seq)
>>> det = GapDetector("pump-1")
>>> sum(len(det.observe_one(seq, at(seq), {"p": float(seq % 7), "q": 1.0})) for seq in range(30))
0
>>> [(g.kind.value, g.first_seq, g.last_seq) for g in det.observe_one(33, at(33), {"p": 5.0, "q": 1.0})]
[('missed_samples', 30, 32)]
>>> det.cadence_s
60.0
>>> [(g.kind.value, g.sensors, g.open) for g in det.observe_one(34, at(34), {"p": None, "q": 1.0})]
[('missing_sensor', ['p'], True)]
>>> [(g.kind.value, g.first_seq, g.last_seq, g.open) for g in det.observe_one(35, at(35), {"p": 2.0, "q": 1.0})]
[('missing_sensor', 34, 34, False)]
>>> gaps = [g for seq in range(36, 60) for g in det.observe_one(seq, at(seq), {"p": 2.0, "q": 1.0})]
>>> [(g.kind.value, g.sensors, g.first_seq, g.open) for g in gaps]  # q never varied: constant, not dead
[('flatline', ['p'], 35, True)]
"""

from __future__ import annotations

import math
import pickle
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from twinstream.schemas.gaps import Gap, GapKind

DETECTOR = "gap-detector-v1"
_INF = math.inf


@dataclass(slots=True)
class _Sensor:
    """What the detector knows about one sensor of one entity."""

    last_value: float = math.nan
    readings: int = 0
    changes: int = 0
    low: float = math.inf  # range of values seen, and the smallest change: quantisation levels
    high: float = -math.inf
    step: float = math.inf  # how often the value changed between consecutive readings
    run_start_seq: int = -1  # first sample of the current run of one repeated value
    run_start_time: datetime | None = None
    run_length: int = 0
    longest_run: int = 0  # longest run seen while not flat-lined (the sensor's natural repeats)
    flat_open: bool = False
    missing_since_seq: int = -1  # -1: not missing
    missing_since_time: datetime | None = None
    missing_count: int = 0


@dataclass(slots=True)
class _Event:
    kind: GapKind
    sensor: str
    first_seq: int
    last_seq: int
    start: datetime
    end: datetime
    samples: int
    open: bool


class GapDetector:
    """Gap detector of one entity: learns cadence and sensor behaviour, reports gaps."""

    def __init__(
        self,
        entity_id: str,
        sensors: tuple[str, ...] | None = None,
        flat_window: int = 10,
        flat_tolerance: float = 0.0,
        min_changes: int = 3,
        flat_alpha: float = 1e-6,
        min_levels: int = 4,
        cadence_factor: float = 2.5,
        cadence_window: int = 31,
        min_steps: int = 5,
        max_sensors: int = 256,
    ) -> None:
        if flat_window < 2:
            raise ValueError("flat_window must be at least 2 samples")
        if cadence_factor <= 1.0:
            raise ValueError("cadence_factor must exceed 1")
        self.entity_id = entity_id
        self.expected = tuple(sensors) if sensors is not None else None
        self.flat_window = flat_window
        self.flat_tolerance = flat_tolerance
        self.min_changes = min_changes
        self.flat_alpha = flat_alpha
        self.min_levels = min_levels
        self.cadence_factor = cadence_factor
        self.min_steps = min_steps
        self.max_sensors = max_sensors
        self.steps: deque[float] = deque(maxlen=cadence_window)  # seconds per sequence step
        self.sensors: dict[str, _Sensor] = {}
        self.last_seq = -1
        self.last_time: datetime | None = None
        self.samples = 0

    @property
    def cadence_s(self) -> float | None:
        """Learned seconds per sample (interquartile mean of recent steps), ``None`` before any step."""
        if not self.steps:
            return None
        ordered = sorted(self.steps)
        cut = len(ordered) // 4
        middle = ordered[cut:len(ordered) - cut]
        return sum(middle) / len(middle)

    def observe_one(
        self, seq: int, event_time: datetime, metrics: Mapping[str, float | None], detected_at: datetime | None = None
    ) -> list[Gap]:
        """Learn from one sample and return the gaps it reveals (usually none)."""
        if event_time.tzinfo is None:
            raise ValueError("event_time must be timezone-aware")
        if seq <= self.last_seq:
            return []
        now = detected_at or datetime.now(UTC)
        gaps: list[Gap] = []
        if self.last_time is not None:
            gaps.extend(self._missed(seq, event_time, now))
        events: list[_Event] = []
        if self.expected is not None:
            names = self.expected
        elif self.sensors.keys() <= metrics.keys():  # usual case: every known sensor reported
            names = metrics.keys()
        else:
            names = tuple(dict.fromkeys([*self.sensors, *metrics]))
        sensors = self.sensors
        exact = not self.flat_tolerance
        flat_window, min_changes = self.flat_window, self.min_changes
        for name in names:
            state = sensors.get(name)
            if state is None:
                if len(sensors) >= self.max_sensors:
                    continue
                state = sensors[name] = _Sensor()
            value = metrics.get(name)
            if value is None or not -_INF < value < _INF:  # missing, NaN or infinite
                self._missing(name, state, seq, event_time, events)
            elif not exact or state.flat_open or state.missing_since_seq >= 0:
                self._present(name, state, float(value), seq, event_time, events)
            else:
                # Hot path (every reading of every sensor, no gap open, exact repeats): the
                # same updates as _present, inlined; worker throughput depends on it.
                state.readings += 1
                if value < state.low:
                    state.low = value
                if value > state.high:
                    state.high = value
                last = state.last_value
                if value == last:
                    state.run_length += 1
                    if (state.run_length >= flat_window and state.changes >= min_changes
                            and state.run_length >= self._flat_after(state)):
                        state.flat_open = True
                        events.append(_Event(GapKind.FLATLINE, name, state.run_start_seq, seq, state.run_start_time,
                                             event_time, state.run_length, True))
                else:
                    if state.run_length > state.longest_run:
                        state.longest_run = state.run_length
                    if last == last:  # not NaN: a change
                        state.changes += 1
                        step = value - last if value > last else last - value
                        if step < state.step:
                            state.step = step
                    state.run_start_seq, state.run_start_time, state.run_length = seq, event_time, 1
                    state.last_value = float(value)
        gaps.extend(self._group(events, now) if events else ())
        self.last_seq, self.last_time = seq, event_time
        self.samples += 1
        return gaps

    # -- missed samples -------------------------------------------------------------

    def _missed(self, seq: int, event_time: datetime, now: datetime) -> list[Gap]:
        assert self.last_time is not None
        jump = seq - self.last_seq
        dt = (event_time - self.last_time).total_seconds()
        cadence = self.cadence_s
        out: list[Gap] = []
        if jump > 1:
            out.append(self._gap(GapKind.MISSED_SAMPLES, [], self.last_seq + 1, seq - 1, self.last_time, event_time, jump - 1, False, now))
        elif cadence and len(self.steps) >= self.min_steps and dt > self.cadence_factor * cadence:
            lost = max(1, round(dt / cadence) - 1)
            out.append(self._gap(GapKind.MISSED_SAMPLES, [], None, None, self.last_time, event_time, lost, False, now))
        if dt > 0:
            self.steps.append(dt / jump)
        return out

    # -- sensors ----------------------------------------------------------------------

    def _missing(self, name: str, s: _Sensor, seq: int, t: datetime, events: list[_Event]) -> None:
        if s.changes == 0 and math.isnan(s.last_value) and s.missing_since_seq < 0 and self.expected is None:
            return  # never seen: nothing is missing yet
        if s.missing_since_seq < 0:
            s.missing_since_seq, s.missing_since_time, s.missing_count = seq, t, 0
        s.missing_count += 1
        if s.missing_count == 1:
            events.append(_Event(GapKind.MISSING_SENSOR, name, seq, seq, t, t, 1, True))

    def _present(self, name: str, s: _Sensor, value: float, seq: int, t: datetime, events: list[_Event]) -> None:
        if s.missing_since_seq >= 0:
            assert s.missing_since_time is not None and self.last_time is not None
            events.append(_Event(GapKind.MISSING_SENSOR, name, s.missing_since_seq, self.last_seq,
                                 s.missing_since_time, self.last_time, s.missing_count, False))
            s.missing_since_seq, s.missing_since_time, s.missing_count = -1, None, 0
        s.readings += 1
        if value < s.low:
            s.low = value
        if value > s.high:
            s.high = value
        last = s.last_value
        # hot path (every reading of every sensor): plain comparisons, no function calls
        tolerance = self.flat_tolerance * (value if value > 1.0 else -value if value < -1.0 else 1.0) if self.flat_tolerance else 0.0
        if last == last and -tolerance <= value - last <= tolerance:  # last == last: not NaN
            s.run_length += 1
        else:
            if s.flat_open:
                assert s.run_start_time is not None and self.last_time is not None
                events.append(_Event(GapKind.FLATLINE, name, s.run_start_seq, self.last_seq, s.run_start_time,
                                     self.last_time, s.run_length, False))
                s.flat_open = False
            elif s.run_length:
                s.longest_run = max(s.longest_run, s.run_length)
            if not math.isnan(s.last_value):
                s.changes += 1
                s.step = min(s.step, abs(value - s.last_value))
            s.run_start_seq, s.run_start_time, s.run_length = seq, t, 1
            s.last_value = value
        # _flat_after is never below flat_window, so shorter runs need not ask it
        if (s.run_length >= self.flat_window and not s.flat_open and s.changes >= self.min_changes
                and s.run_length >= self._flat_after(s)):
            s.flat_open = True
            assert s.run_start_time is not None
            events.append(_Event(GapKind.FLATLINE, name, s.run_start_seq, seq, s.run_start_time, t, s.run_length, True))

    def _flat_after(self, s: _Sensor) -> float:
        """Repeats that make a sensor flat-lined: rare under its own change rate, and long for it."""
        # A low estimate of the chance that a reading differs from the previous one (changes
        # minus two Poisson standard deviations): a sensor that rarely changes is never
        # called dead on a handful of changes.
        rate = max(0.0, s.changes - 2.0 * math.sqrt(s.changes)) / max(1, s.readings - s.run_length)  # before this run
        if rate <= 0.0 or (s.high - s.low) < self.min_levels * s.step:
            return math.inf  # rarely changes, or toggles between a few quantisation levels
        unlikely = math.log(self.flat_alpha) / math.log1p(-rate) if rate < 1.0 else 0.0
        return max(self.flat_window, 2 * s.longest_run, unlikely)

    # -- output -----------------------------------------------------------------------

    def _group(self, events: list[_Event], now: datetime) -> list[Gap]:
        """One message per (kind, range, open) with all the sensors that share it."""
        groups: dict[tuple, list[str]] = {}
        for e in events:
            groups.setdefault((e.kind, e.first_seq, e.last_seq, e.start, e.end, e.samples, e.open), []).append(e.sensor)
        return [self._gap(k[0], sorted(names), k[1], k[2], k[3], k[4], k[5], k[6], now) for k, names in groups.items()]

    def _gap(self, kind: GapKind, sensors: list[str], first: int | None, last: int | None,
             start: datetime, end: datetime, samples: int, is_open: bool, now: datetime) -> Gap:
        # A source whose clock stepped back can put a gap's end before its start; the
        # gap is still real, so it is reported as an instant rather than refused.
        end = max(start, end)
        return Gap(entity_id=self.entity_id, kind=kind, sensors=sensors, first_seq=first, last_seq=last,
                   start_time=start, end_time=end, samples=samples, open=is_open, detected_at=now, detector=DETECTOR)

    def open_gaps(self) -> dict[str, GapKind]:
        """Sensors with a gap open now (missing wins over flat-lined)."""
        out = {n: GapKind.FLATLINE for n, s in self.sensors.items() if s.flat_open}
        out.update({n: GapKind.MISSING_SENSOR for n, s in self.sensors.items() if s.missing_since_seq >= 0})
        return out

    def state_bytes(self) -> int:
        return len(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))
