"""The sidecar's logic, free of Faust: keep each entity's recent window, turn gaps into fills.

Inputs are the entity's measured telemetry (context) and the gap messages the worker's
detectors publish. Outputs are synthetic :class:`~twinstream.schemas.telemetry.Telemetry`
samples, one per ``(entity, seq)`` to fill, carrying only the filled sensors:

- ``missing_sensor`` open: from the gap's ``first_seq`` on, every sample of the entity
  that lacks one of the gap's sensors gets a fill for it (samples already in the window
  at once, later ones as they arrive) until the closing message, which also fills any
  sample of the closed range still in the window and not filled yet.
- ``missed_samples`` with a sequence range: whole samples for the missing sequence
  numbers (at most ``max_missed``), event times spaced evenly across the hole.
- ``flatline``: not filled. The sensor still reports values, and a fill never
  overwrites a measured value.

Fills are conditioned on the window (the entity's last ``window`` samples and what
came after the hole, if it arrived): :mod:`.fill_method` fills the NaN cells of the
window and gives each value a standard deviation (the published ``confidence``). With
an adaptive method the filler of each sensor is chosen on the window's own measured
values, and each fill names it and its measured error (``Telemetry.fill``). Each
``(entity, seq, sensor)`` is filled once per process lifetime (bounded memo); after a
restart, fills for redelivered messages are made again (at-least-once) and the twins
keep the first one they accepted.

>>> from datetime import datetime, timedelta, timezone
>>> from twinstream.streams.fill_method import FillMethod
>>> t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> filler = GapFiller(FillMethod.baseline("doc"), window=16)
>>> for seq in range(10):
...     _ = filler.on_telemetry(Telemetry(entity_id="e", event_time=t0 + timedelta(seconds=seq), seq=seq,
...                                       metrics={"a": float(seq), "b": 1.0}))
>>> gap = Gap(entity_id="e", kind="missing_sensor", sensors=["a"], first_seq=10, last_seq=10,
...           start_time=t0 + timedelta(seconds=10), end_time=t0 + timedelta(seconds=10), samples=1, open=True)
>>> _ = filler.on_telemetry(Telemetry(entity_id="e", event_time=t0 + timedelta(seconds=10), seq=10,
...                                   metrics={"a": None, "b": 1.0}))
>>> filler.on_gap(gap)
>>> [(f.seq, sorted(f.metrics), f.synthetic, round(f.metrics["a"])) for f in filler.produce()]
[(10, ['a'], True, 10)]
>>> filler.produce()  # each (entity, seq, sensor) once
[]
"""

from __future__ import annotations

import logging
import math
import zlib
from array import array
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from twinstream.models.fill_select import Choice
from twinstream.schemas.gaps import Gap, GapKind
from twinstream.schemas.telemetry import FillChoice, Telemetry
from twinstream.streams.fill_method import BASELINE_VERSION, FillMethod

log = logging.getLogger(__name__)

SOURCE = "twinstream-sidecar"
MEMO_SEQS = 4096  # (seq -> filled sensors) remembered per entity
MAX_COLUMNS = 256
_NAN = math.nan


@dataclass(slots=True)
class _Entity:
    rows: deque  # (seq, event_time, array('d') in `columns` order, NaN = missing) of recent measured samples
    columns: list[str] = field(default_factory=list)  # sensor names, in the order values are stored
    col_index: dict[str, int] = field(default_factory=dict)
    # sensor -> the rows seen up to the sample where it went missing: its context survives the
    # window moving on (a gap message can arrive long after the sensor dropped)
    anchors: dict[str, list] = field(default_factory=dict)
    open: dict[str, int] = field(default_factory=dict)  # sensor -> first seq of its open gap
    filled: OrderedDict = field(default_factory=OrderedDict)  # seq -> set of sensors already filled
    wanted: dict[int, set[str]] = field(default_factory=dict)  # seq -> sensors to fill in the next produce()
    missed_times: dict[int, datetime] = field(default_factory=dict)  # event time of each missed seq to fill


def _choice(choice: Choice) -> FillChoice:
    return FillChoice(method=choice.method, validation_mae=choice.mae, validation_cells=choice.cells,
                      step_like=choice.step_like)


class GapFiller:
    """Per-entity windows and open sensor gaps; :meth:`produce` returns the fills due."""

    def __init__(self, method: FillMethod, window: int = 64, max_missed: int = 64, max_entities: int = 100_000) -> None:
        self.method = method
        self.window = window
        self.max_missed = max_missed
        self.max_entities = max_entities
        self.entities: OrderedDict[str, _Entity] = OrderedDict()
        self.unfilled: dict[str, int] = {}  # reason -> count (for metrics and logs)

    def _entity(self, entity_id: str) -> _Entity:
        state = self.entities.get(entity_id)
        if state is None:
            state = self.entities[entity_id] = _Entity(rows=deque(maxlen=self.window))
            if len(self.entities) > self.max_entities:
                self.entities.popitem(last=False)
        return state

    def _skip(self, reason: str, count: int = 1) -> None:
        self.unfilled[reason] = self.unfilled.get(reason, 0) + count

    def _want(self, state: _Entity, seq: int, sensors: set[str]) -> None:
        done = state.filled.get(seq, ())
        todo = {s for s in sensors if s not in done}
        if todo:
            state.wanted.setdefault(seq, set()).update(todo)

    @staticmethod
    def _row(state: _Entity, sample: Telemetry) -> tuple[int, datetime, array]:
        """A compact row (8 bytes per value): 64 samples of 24 metrics take ~23 KB per entity (measured)."""
        index = state.col_index
        for name, value in sample.metrics.items():
            if value is not None and name not in index and len(index) < MAX_COLUMNS:
                index[name] = len(state.columns)
                state.columns.append(name)
        values = array("d", [_NAN]) * len(state.columns)
        for name, value in sample.metrics.items():
            j = index.get(name)
            if j is not None and value is not None:
                values[j] = value
        return sample.seq, sample.event_time, values

    @staticmethod
    def _value(state: _Entity, values: array, name: str) -> float | None:
        j = state.col_index.get(name)
        if j is None or j >= len(values) or values[j] != values[j]:
            return None
        return values[j]

    def on_telemetry(self, sample: Telemetry) -> None:
        """A measured sample: context, and a fill request for any sensor of an open gap it lacks."""
        if sample.synthetic:
            return
        state = self._entity(sample.entity_id)
        row = self._row(state, sample)
        if state.rows and (state.anchors or len(row[2]) > len(sample.metrics) or None in sample.metrics.values()):
            self._anchor(state, row)
        state.rows.append(row)
        if state.open:
            lacking = {s for s, first in state.open.items() if sample.seq >= first and sample.metrics.get(s) is None}
            if lacking:
                self._want(state, sample.seq, lacking)

    @staticmethod
    def _anchor(state: _Entity, row: tuple[int, datetime, array]) -> None:
        """Keep the context of sensors that go missing with ``row``; drop it when they are back."""
        values, previous = row[2], state.rows[-1][2]
        for j, name in enumerate(state.columns):
            if values[j] == values[j]:
                state.anchors.pop(name, None)
            elif name not in state.anchors and j < len(previous) and previous[j] == previous[j]:
                state.anchors[name] = list(state.rows)

    def prime(self, sample: Telemetry) -> None:
        """Context read back after a (re)start: merged by seq, asks for no fill (no gap is known yet)."""
        if sample.synthetic:
            return
        state = self._entity(sample.entity_id)
        if any(seq == sample.seq for seq, _, _ in state.rows):
            return
        rows = sorted([*state.rows, self._row(state, sample)], key=lambda row: row[0])
        state.rows = deque(rows[-self.window:], maxlen=self.window)

    def on_gap(self, gap: Gap) -> None:
        state = self._entity(gap.entity_id)
        if gap.kind is GapKind.FLATLINE:
            self._skip("flatline")  # the sensor reports values: a fill never overwrites them
            return
        if gap.kind is GapKind.MISSED_SAMPLES:
            if gap.first_seq is None or gap.last_seq is None:
                self._skip("missed_without_seq", gap.samples)
                return
            last = min(gap.last_seq, gap.first_seq + self.max_missed - 1)
            if last < gap.last_seq:
                self._skip("missed_over_limit", gap.last_seq - last)
            span = (gap.end_time - gap.start_time) / (gap.last_seq - gap.first_seq + 2)
            sensors = self._sensors(state)
            if not sensors:
                self._skip("no_context", last - gap.first_seq + 1)
                return
            for k, seq in enumerate(range(gap.first_seq, last + 1)):
                state.missed_times[seq] = gap.start_time + span * (k + 1)
                self._want(state, seq, sensors)
            return
        assert gap.first_seq is not None
        for sensor in gap.sensors:
            if gap.open:
                state.open.setdefault(sensor, gap.first_seq)
            elif state.open.get(sensor) == gap.first_seq:
                del state.open[sensor]
        last = gap.last_seq if not gap.open else None
        for seq, _, values in state.rows:
            if seq >= gap.first_seq and (last is None or seq <= last):
                lacking = {s for s in gap.sensors if self._value(state, values, s) is None}
                if lacking:
                    self._want(state, seq, lacking)

    @staticmethod
    def _sensors(state: _Entity) -> set[str]:
        seen: set[str] = set()
        for j, name in enumerate(state.columns):
            if name in state.anchors or any(j < len(values) and values[j] == values[j] for _, _, values in state.rows):
                seen.add(name)
        return seen

    def produce(self) -> list[Telemetry]:
        """Fills for every request since the last call, computed in one batch."""
        jobs = []
        for entity_id, state in self.entities.items():
            if state.wanted:
                jobs.append((entity_id, state, state.wanted))
                state.wanted = {}
        return self._fill(jobs)

    def _fill(self, jobs: list[tuple[str, _Entity, dict[int, set[str]]]]) -> list[Telemetry]:
        if not jobs:
            return []
        windows, columns, layouts = [], [], []
        for _entity_id, state, wanted in jobs:
            window, cols, seq_index = self._window(state, wanted)
            windows.append(window)
            columns.append(cols)
            layouts.append(seq_index)
        seed = zlib.crc32(repr(sorted((e, sorted(w)) for e, _, w in jobs)).encode())
        if self.method.adaptive:
            results = self.method.fill_choosing(windows, columns, seed=seed)
        else:
            results = [(value, std, used, {}) for value, std, used in self.method.fill(windows, columns, seed=seed)]
        fills: list[Telemetry] = []
        for (entity_id, state, wanted), window, cols, seq_index, (value, std, by_generator, picks) in zip(
                jobs, windows, columns, layouts, results):
            col_of = {c: j for j, c in enumerate(cols)}
            for seq in sorted(wanted):
                row = seq_index.get(seq)
                if row is None:
                    self._skip("out_of_window", len(wanted[seq]))
                    continue
                metrics, confidence = {}, {}
                for sensor in sorted(wanted[seq]):
                    j = col_of.get(sensor)
                    if j is not None and not np.isnan(window[row, j]):
                        self._skip("measured")  # the sample arrived with this value: never overwrite it
                        continue
                    if j is None or not np.isfinite(value[row, j]):
                        self._skip("no_context")
                        continue
                    metrics[sensor] = float(value[row, j])
                    confidence[sensor] = float(std[row, j]) if np.isfinite(std[row, j]) else 0.0
                if not metrics:
                    continue
                fills.append(Telemetry(
                    entity_id=entity_id, event_time=self._time(state, seq), seq=seq, metrics=metrics,
                    source=SOURCE, synthetic=True, generator=self._made_by(set(metrics), by_generator),
                    confidence=confidence, fill={sensor: _choice(picks[sensor]) for sensor in metrics if sensor in picks},
                ))
                done = state.filled.setdefault(seq, set())
                done.update(metrics)
                state.filled.move_to_end(seq)
                while len(state.filled) > MEMO_SEQS:
                    state.filled.popitem(last=False)
                state.missed_times.pop(seq, None)
        return fills

    def _made_by(self, filled: set[str], by_generator: set[str]) -> str:
        """The version behind a fill's values: the generator's, the baseline's, or both joined by '+'."""
        if not by_generator & filled:
            return BASELINE_VERSION
        if filled <= by_generator:
            return self.method.version
        return f"{self.method.version}+{BASELINE_VERSION}"

    def _window(self, state: _Entity, wanted: dict[int, set[str]]) -> tuple[np.ndarray, list[str], dict[int, int]]:
        """The entity's window as a (T, D) array over consecutive seqs, NaN where missing or to fill."""
        rows = {seq: values for seq, _, values in state.rows}
        seqs = sorted(set(rows) | set(wanted))
        if len(seqs) > self.window + self.max_missed:
            seqs = seqs[-(self.window + self.max_missed):]
        anchored = {seq: values for kept in state.anchors.values() for seq, _, values in kept if seq not in rows}
        if anchored:
            rows.update(anchored)
            seqs = sorted(set(seqs) | set(anchored))
        first, last = seqs[0], seqs[-1]
        all_seqs = list(range(first, last + 1))
        if len(all_seqs) > 4 * (self.window + self.max_missed):  # a huge jump: keep the wanted rows' neighbourhood
            all_seqs = seqs
        cols = sorted(self._sensors(state) | {s for names in wanted.values() for s in names})
        index = {seq: i for i, seq in enumerate(all_seqs)}
        window = np.full((len(all_seqs), len(cols)), np.nan)
        col_of = {c: j for j, c in enumerate(cols)}
        for seq, values in rows.items():
            i = index.get(seq)
            if i is None:
                continue
            for k, value in enumerate(values):
                j = col_of.get(state.columns[k])
                if j is not None and value == value:
                    window[i, j] = value
        return window, cols, index

    @staticmethod
    def _time(state: _Entity, seq: int) -> datetime:
        for row_seq, event_time, _ in state.rows:
            if row_seq == seq:
                return event_time
        if seq in state.missed_times:
            return state.missed_times[seq]
        before = [(s, t) for s, t, _ in state.rows if s < seq]
        if before:
            s, t = before[-1]
            return t + timedelta(seconds=seq - s)
        return state.rows[0][1] if state.rows else datetime.now().astimezone()

    def forget(self) -> None:
        """Drop every window (after a rebalance the partitions' events are redelivered)."""
        self.entities.clear()
