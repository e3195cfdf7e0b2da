"""The twin update step for a batch of telemetry, free of Faust and of the network.

Why separate from the agent: this is the logic that must be exactly right (idempotent
updates, every input accounted for), so it is a plain class that tests drive with
plain records. The agent (:mod:`twinstream.streams.ingest`) only moves bytes in and
out and decides when to checkpoint.

Every telemetry record ends in exactly one of: a prediction, a dead letter, or a
skipped duplicate (a redelivery of an event the twin already applied).

Gaps and fills (docs/sidecar.md): each twin runs a gap detector on its measured samples and
every gap it finds is published to the gaps topic. Records from the synthetic topic
(fills written by the sidecar) produce no prediction: they are offered to the twin's
:class:`~twinstream.models.fills.FillBook`, which uses them in place of missing sensors
and never over a measured value. A measured sample with missing sensors is still
applied; its prediction carries ``synthetic_share`` (share of its sensor values that
came from fills), and a twin learns from a labelled event with synthetic input only
when ``learn_from_synthetic`` is on. A fill for a sample that never arrived (a missed
sequence number) is absorbed by the twin late (:meth:`Twin.absorb`): its age and
smoothing state advance as if the sample had come, without a prediction. Synthetic
values never enter a twin's personal baseline.

Twin kinds (twins.yaml, ``twins_spec``; docs/any-fleet.md): each sample's entity is
matched to a declared kind (its ``kind`` field, or its id against the kinds' globs; the
answer is cached per entity). A sample no kind matches is a dead letter ``unknown_kind``.
A kind's label task (e.g. ``rul``) is the twin's learner, as before; its forecast and
anomaly tasks (``Twin.tasks``) each add one prediction per sample, tagged with ``kind``
and ``task``, computed from the measured values only (fills never teach a forecaster).
A kind without a label task keeps only the sequence bookkeeping (``Twin.advance``).
With ``twins_spec=none`` every entity is a twin of ``learner`` predicting ``target``.

No input stops the batch: any exception while handling one record (loading the twin,
the learner's step, a prediction that is not finite, encoding) makes that record a
dead letter ``twin_error`` with the error text, and the outputs it had produced are
withdrawn. The twin may have been changed half-way, so it is put back to its state
just before the record: its last checkpointed bytes, with the records applied since
then (kept per twin, see :class:`TwinJournal`) applied again silently. Later events of
that entity then work as if the bad one had never come. Should that replay raise too,
the twin is dropped from memory and reloads from its checkpoint (logged, counted).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from threadpoolctl import threadpool_limits

from twinstream.models.base import IntervalPrediction
from twinstream.models.registry import make_learner
from twinstream.models.twin import SeqStatus, Step, Twin
from twinstream.schemas.dead_letter import RejectReason
from twinstream.schemas.telemetry import Telemetry
from twinstream.schemas.topics import SYNTHETIC
from twinstream.schemas.twin_spec import KindSpec
from twinstream.settings import Settings
from twinstream.streams.kinds import TargetCounts, WorkerKinds, encode_task_prediction
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.processor_fills import FillsAndGaps
from twinstream.streams.records import (  # noqa: F401  (re-exported: the processor's public API)
    BadPrediction,
    BatchOutput,
    Record,
    encode_dead_letter,
    encode_prediction,
)
from twinstream.streams.twin_cache import TwinCacheUpkeep, TwinSnapshot
from twinstream.streams.twin_journal import TwinJournal
from twinstream.streams.validation import Rejection, decode_telemetry

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Deferred:
    """A valid event whose label step waits for its wave (see :meth:`TwinProcessor.process`)."""

    record: Record
    decoded: Telemetry
    kind: str | None  # the matched kind's name (None without a twins spec)
    target: str
    label: float | None
    share: float
    step: Step
    gaps_before: int


class TwinProcessor(FillsAndGaps, TwinCacheUpkeep):
    """Applies telemetry to twins held in memory; the agent persists them at checkpoints.

    ``load_twin(entity_id)`` returns the twin's last checkpointed bytes (or None for a
    new entity); ``clock`` gives "now" for the future-timestamp check.
    """

    def __init__(
        self,
        settings: Settings,
        load_twin: Callable[[str], bytes | None],
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.load_twin = load_twin
        self.metrics = metrics or WorkerMetrics()
        self.clock = clock
        self.twins: dict[str, Twin] = {}
        # entity -> clock time of its latest event, oldest first; kept only with idle eviction on (it costs memory per twin)
        self.touched: OrderedDict[str, float] = OrderedDict()
        self._track_idle = settings.twin_idle_evict_s > 0
        self._now_s = 0.0
        self.partition_of: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.journal = TwinJournal()
        self.snapshot = TwinSnapshot({})
        self._skew = timedelta(seconds=settings.max_future_skew_s)
        self.synthetic_topic = SYNTHETIC.in_namespace(settings.topic_namespace).name
        # Raises SpecError for a bad spec: the worker stops before it consumes anything.
        self.kinds = WorkerKinds.load(settings.twins_spec, settings)
        # One BLAS thread for the process: the twins' matrix products (a wave of prior evaluations)
        # are small, and a BLAS thread pool on a busy node made them several times slower, not faster.
        threadpool_limits(limits=1, user_api="blas")

    def new_twin(self, entity_id: str, spec: KindSpec | None = None) -> Twin:
        if spec is not None and self.kinds is not None:
            return self.kinds.new_twin(entity_id, spec)
        learner = make_learner(self.settings.learner, **self.settings.learner_params)
        return Twin(entity_id=entity_id, learner=learner)

    def twin(self, entity_id: str, partition: int, spec: KindSpec | None = None) -> Twin:
        """The entity's twin, about to change: a checkpoint still waiting for its state gets it first."""
        if entity_id in self.snapshot.pending:
            self._keep_in_snapshot(entity_id)
        twin = self.twins.get(entity_id)
        if twin is None:
            blob = self.load_twin(entity_id)
            twin = Twin.from_bytes(blob) if blob else self.new_twin(entity_id, spec)
            if spec is not None and twin.kind != spec.name and self.kinds is not None:
                self.kinds.adopt(twin, spec)
            self.journal.checkpointed(entity_id)  # loaded: its base is what load_twin gives
            self.twins[entity_id] = twin
            self.partition_of[entity_id] = partition
            self.metrics.twins.set(len(self.twins))
        if self._track_idle:
            self.touched[entity_id] = self._now_s
            self.touched.move_to_end(entity_id)
        return twin

    def process(self, records: Iterable[Record]) -> BatchOutput:
        """Handle a batch; never raises for anything in a record (see the module docstring).

        The label steps of a batch run in waves with at most one event per entity: an
        event's sequential work (validation, sequence check, fills, feature state) runs
        as it comes, its label step waits, and the next event of an entity that has one
        waiting first completes the wave (``Twin.step_many``: each learner family batches
        its stateless work, e.g. the fleet prior's network, over the wave). Every entity's
        events keep their order and predict-then-learn semantics exactly; outputs keep
        each entity's order (not the order across entities).
        """
        out = BatchOutput()
        now = self.clock()
        self._now_s = now.timestamp()
        counts = TargetCounts(self.metrics)  # one label lookup per target and batch, not per event
        wave: list[_Deferred] = []
        waiting: set[str] = set()
        last_event_time: datetime | None = None
        applied = 0
        for record in records:
            decoded: Telemetry | Rejection | None = None
            marks = (len(out.predictions), len(out.dead_letters), len(out.gaps))
            try:
                decoded = self._decode(record, now)
                if isinstance(decoded, Rejection):
                    self._reject(out, record, decoded.reason, decoded.error, decoded.entity_id)
                    continue
                if decoded.entity_id in waiting:  # its twin must first finish the waiting event
                    done, last = self._run_wave(out, wave, now, counts)
                    applied, last_event_time = applied + done, last or last_event_time
                    waiting.clear()
                    marks = (len(out.predictions), len(out.dead_letters), len(out.gaps))
                result = self._apply(out, record, decoded, now, counts)
                if isinstance(result, _Deferred):
                    wave.append(result)
                    waiting.add(decoded.entity_id)
                elif result:
                    last_event_time = decoded.event_time
                    applied += 1
            except Exception as exc:  # noqa: BLE001 - one record's failure must not lose the batch
                del out.predictions[marks[0]:], out.dead_letters[marks[1]:], out.gaps[marks[2]:]
                counts.withdraw(marks[0])
                self._twin_error(out, record, decoded if isinstance(decoded, Telemetry) else None, exc, now)
        done, last = self._run_wave(out, wave, now, counts)
        applied, last_event_time = applied + done, last or last_event_time
        if applied:
            self.metrics.events_applied.inc(applied)
        counts.publish()
        if last_event_time is not None:
            self.metrics.lag_seconds.set((now - last_event_time).total_seconds())
        return out

    def _run_wave(self, out: BatchOutput, wave: list[_Deferred], now: datetime, counts: TargetCounts) -> tuple[int, datetime | None]:
        """The waiting label steps, batched; each finished in order. Returns (events applied, latest event time).

        Never raises: a step or finish that fails makes its record a dead letter ``twin_error``
        (its outputs withdrawn, its twin restored), as in :meth:`process`.
        """
        if not wave:
            return 0, None
        applied = 0
        last: datetime | None = None
        results = Twin.step_many([d.step for d in wave])
        for deferred, result in zip(wave, results, strict=True):
            marks = (len(out.predictions), len(out.dead_letters), len(out.gaps))
            try:
                if isinstance(result, Exception):
                    raise result
                self._finish(out, deferred, result, now, counts)
                applied += 1
                last = deferred.decoded.event_time
            except Exception as exc:  # noqa: BLE001 - one record's failure must not lose the batch
                del out.predictions[marks[0]:], out.dead_letters[marks[1]:], out.gaps[marks[2]:]
                counts.withdraw(marks[0])
                self._twin_error(out, deferred.record, deferred.decoded, exc, now)
        wave.clear()
        return applied, last

    def _apply_now(self, out: BatchOutput, record: Record, decoded: Telemetry, now: datetime, counts: TargetCounts) -> None:
        """:meth:`_apply` with its label step run at once (a wave of one); raises what the step raised."""
        result = self._apply(out, record, decoded, now, counts)
        if isinstance(result, _Deferred):
            interval = Twin.step_many([result.step])[0]
            if isinstance(interval, Exception):
                raise interval
            self._finish(out, result, interval, now, counts)

    def _apply(
        self, out: BatchOutput, record: Record, decoded: Telemetry, now: datetime, counts: TargetCounts
    ) -> bool | _Deferred:
        """One valid record onto its twin; True when it was applied (predictions published), a
        :class:`_Deferred` when its label step waits for the wave. May raise (see process)."""
        spec: KindSpec | None = None
        if self.kinds is not None:
            spec = self.kinds.match(decoded.entity_id, decoded.kind)
            if spec is None:
                named = "" if decoded.kind is None else f" with kind {decoded.kind!r}"
                self._reject(out, record, RejectReason.UNKNOWN_KIND,
                             f"no kind in {self.kinds.path} matches entity {decoded.entity_id!r}{named}", decoded.entity_id)
                return False
        twin = self.twin(decoded.entity_id, record.partition, spec)
        if record.topic == self.synthetic_topic:
            self._offer_fill(out, record, decoded, twin)
            self.journal.applied(decoded.entity_id, record, twin)
            return False
        status = twin.classify(decoded.seq)
        if status is SeqStatus.DUPLICATE:
            # A redelivery after a crash. The twin may have been loaded from local
            # RocksDB state that is *ahead* of the changelog (the crash came between
            # the table write and the changelog flush). Marking it dirty makes the
            # next checkpoint write its state to the changelog before this event is
            # acknowledged, so recovery from the changelog alone never goes back.
            out.duplicates += 1
            self.metrics.duplicates.inc()
            self.dirty.add(decoded.entity_id)
            return False
        if status is SeqStatus.LATE:
            twin.forget_missing(decoded.seq)
            self.dirty.add(decoded.entity_id)
            self.journal.applied(decoded.entity_id, record, twin)
            self._reject(
                out, record, RejectReason.OUT_OF_ORDER,
                f"seq {decoded.seq} arrived after seq {twin.last_seq} was applied", decoded.entity_id,
            )
            return False
        gaps_before = twin.gaps
        self.dirty.add(decoded.entity_id)  # before the step: a half-done step changed the twin too
        if twin.learner is not None:
            return self._label_input(record, decoded, twin, spec, gaps_before)
        twin.advance(decoded.seq)  # a kind with forecast/anomaly tasks only
        share = 1.0 if decoded.synthetic and any(v is not None for v in decoded.metrics.values()) else 0.0
        self._after_step(out, record, decoded, twin, share, gaps_before, now, counts)
        return True

    def _after_step(
        self, out: BatchOutput, record: Record, decoded: Telemetry, twin: Twin, share: float, gaps_before: int,
        now: datetime, counts: TargetCounts,
    ) -> None:
        """The kind's forecast/anomaly tasks, gap detection and bookkeeping of an applied event."""
        if twin.tasks is not None:
            for p in twin.tasks.step(decoded.metrics, decoded.seq, decoded.targets):
                if not (math.isfinite(p.value) and (p.lower is None or math.isfinite(p.lower))
                        and (p.upper is None or math.isfinite(p.upper))):
                    raise BadPrediction(f"{p.task} of {p.target}: value={p.value!r} lower={p.lower!r} upper={p.upper!r}")
                out.predictions.append((record.key or b"", encode_task_prediction(decoded, twin, p, share)))
                counts.predicted(p.target)
        if self.settings.gap_detection and not decoded.synthetic:
            self._detect_or_reset(out, decoded, twin, now)
        self.journal.applied(decoded.entity_id, record, twin)
        if twin.gaps != gaps_before:
            self.metrics.sequence_gaps.inc(twin.gaps - gaps_before)

    def _label_input(
        self, record: Record, decoded: Telemetry, twin: Twin, spec: KindSpec | None, gaps_before: int
    ) -> _Deferred:
        """The label task's input (fills applied, synthetic share, learn weight), ready for its wave."""
        label_task = self.kinds.label_task(spec) if spec is not None and self.kinds is not None else None
        target = label_task.target if label_task is not None else self.settings.target
        label = decoded.targets.get(target)
        inputs, share = self._inputs(decoded, twin)
        synthetic: frozenset[str] = frozenset()
        weight = 1.0
        if share > 0.0:
            # the values that came from fills (a synthetic sample: all of its values)
            synthetic = frozenset(n for n, v in inputs.items()
                                  if v is not None and (decoded.synthetic or decoded.metrics.get(n) is None))
            if label is not None:
                learn_weight = self._synthetic_learn_weight()
                if learn_weight is None:
                    label = None
                else:
                    weight = learn_weight
        step = Step(twin, decoded.seq, inputs, label, synthetic, weight)
        return _Deferred(record, decoded, None if spec is None else spec.name, target, label, share, step, gaps_before)

    def _finish(
        self, out: BatchOutput, deferred: _Deferred, interval: IntervalPrediction, now: datetime, counts: TargetCounts
    ) -> None:
        """Publish a stepped label prediction, then the rest of the event (:meth:`_after_step`)."""
        if not (math.isfinite(interval.value) and math.isfinite(interval.lower) and math.isfinite(interval.upper)
                and interval.lower <= interval.upper):
            raise BadPrediction(f"learner predicted value={interval.value!r} lower={interval.lower!r} "
                                f"upper={interval.upper!r}")
        record, decoded, twin, target = deferred.record, deferred.decoded, deferred.step.twin, deferred.target
        prediction = encode_prediction(decoded, twin, target, interval.value, interval.lower, interval.upper,
                                       deferred.share, deferred.kind)
        if deferred.label is not None:
            counts.error(target, abs(interval.value - deferred.label))
        out.predictions.append((record.key or b"", prediction))
        counts.predicted(target)
        self._after_step(out, record, decoded, twin, deferred.share, deferred.gaps_before, now, counts)

    def _twin_error(self, out: BatchOutput, record: Record, decoded: Telemetry | None, exc: Exception, now: datetime) -> None:
        """Dead-letter a record whose handling raised, and undo what it did to its twin."""
        entity_id = decoded.entity_id if decoded is not None else None
        loaded = entity_id is not None and entity_id in self.twins
        log.exception("twin_error entity=%s topic=%s partition=%s offset=%s", entity_id, record.topic,
                      record.partition, record.offset)
        self.metrics.twin_errors.labels("decode" if entity_id is None else "apply" if loaded else "load").inc()
        if loaded:
            self._restore(entity_id, record.partition, now)
        self._reject(out, record, RejectReason.TWIN_ERROR, f"{type(exc).__name__}: {exc}", entity_id)

    def _restore(self, entity_id: str, partition: int, now: datetime) -> None:
        """The twin as it was before the failed record: checkpoint bytes + the records applied since."""
        done = self.journal.records.pop(entity_id, [])
        kind = self.twins[entity_id].kind
        spec = self.kinds.kind(kind) if kind is not None and self.kinds is not None else None
        metrics, self.metrics = self.metrics, WorkerMetrics()  # the replay counts nothing twice
        try:
            base = self._checkpointed_bytes(entity_id)  # may read the table: a failure ends the undo below
            self.twins[entity_id] = Twin.from_bytes(base) if base else self.new_twin(entity_id, spec)
            scratch = BatchOutput()
            for record in done:
                decoded = self._decode(record, now)
                if isinstance(decoded, Rejection):  # it passed before: undo to the last checkpoint (below)
                    raise RuntimeError(f"record at offset {record.offset} no longer decodes: {decoded.error}")
                self._apply_now(scratch, record, decoded, now, TargetCounts(self.metrics))
            log.warning("twin restored entity=%s: checkpoint state + %d records replayed", entity_id, len(done))
        except Exception:
            log.exception("twin restore failed entity=%s: back to its last checkpoint, %d records since then "
                          "are not in its state", entity_id, len(done))
            metrics.twin_errors.labels("restore").inc()
            self.twins.pop(entity_id, None)
            self.touched.pop(entity_id, None)
            self.partition_of.pop(entity_id, None)
            self.dirty.discard(entity_id)
            self.journal.forget(entity_id)
        finally:
            self.metrics = metrics
            self.metrics.twins.set(len(self.twins))

    def _decode(self, record: Record, now: datetime) -> Telemetry | Rejection:
        return decode_telemetry(record.value, record.key, now=now, max_payload=self.settings.max_payload_bytes,
                                max_future_skew=self._skew, max_metrics=self.settings.max_metrics)

    def _reject(self, out: BatchOutput, record: Record, reason: RejectReason, error: str, entity_id: str | None) -> None:
        log.warning("dead-letter reason=%s entity=%s topic=%s partition=%s offset=%s: %s",
                    reason.value, entity_id, record.topic, record.partition, record.offset, error)
        self.metrics.dead_letters.labels(reason.value).inc()
        out.dead_letters.append((record.key, encode_dead_letter(record, reason, error, entity_id)))
