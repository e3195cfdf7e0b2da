"""The twin update step for a batch of telemetry, free of Faust and of the network.

Why separate from the agent: this is the logic that must be exactly right (idempotent
updates, every input accounted for), so it is a plain class that tests drive with
plain records. The agent (:mod:`twinstream.streams.ingest`) only moves bytes in and
out and decides when to checkpoint.

Every telemetry record ends in exactly one of: a prediction, a dead letter, or a
skipped duplicate (a redelivery of an event the twin already applied).

Issue 6 (docs/sidecar.md): each twin runs a gap detector on its measured samples and
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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import orjson

from twinstream.models.gaps import GapDetector
from twinstream.models.registry import make_learner
from twinstream.models.twin import SeqStatus, Twin
from twinstream.schemas.dead_letter import DeadLetter, RejectReason
from twinstream.schemas.telemetry import Telemetry
from twinstream.schemas.topics import SYNTHETIC
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.validation import Rejection, decode_telemetry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed message, as the processor needs it."""

    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class BatchOutput:
    """What one batch produced: messages to publish, by destination."""

    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    gaps: list[tuple[bytes, bytes]] = field(default_factory=list)
    duplicates: int = 0


def encode_prediction(
    telemetry: Telemetry, twin: Twin, target: str, value: float, lower: float, upper: float, synthetic_share: float = 0.0
) -> bytes:
    """JSON of a :class:`~twinstream.schemas.prediction.Prediction`, built without a model instance.

    Hot path: ~1 per event. A unit test checks the output validates as ``Prediction``.
    """
    return orjson.dumps(
        {
            "entity_id": telemetry.entity_id,
            "event_time": telemetry.event_time,
            "seq": telemetry.seq,
            "target": target,
            "value": value,
            "lower": lower,
            "upper": upper,
            "model_version": twin.learner.model_version,
            "prior_version": getattr(twin.learner, "prior_version", None),
            "updates": twin.updates,
            "synthetic": telemetry.synthetic or synthetic_share > 0.0,
            "synthetic_share": synthetic_share,
        }
    )


def encode_dead_letter(record: Record, reason: RejectReason, error: str, entity_id: str | None) -> bytes:
    return DeadLetter(
        original=record.value or b"",
        key=record.key,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        reason=reason,
        error=error,
        entity_id=entity_id,
    ).model_dump_json().encode()


class TwinProcessor:
    """Applies telemetry to twins held in memory; the agent persists them at checkpoints.

    ``load_twin(entity_id)`` returns the twin's last checkpointed bytes (or None for a
    new entity); ``clock`` gives "now" for the future-timestamp check.
    """

    def __init__(
        self,
        settings: Settings,
        load_twin: Callable[[str], bytes | None],
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.settings = settings
        self.load_twin = load_twin
        self.metrics = metrics or WorkerMetrics()
        self.clock = clock
        self.twins: dict[str, Twin] = {}
        self.partition_of: dict[str, int] = {}
        self.dirty: set[str] = set()
        self._skew = timedelta(seconds=settings.max_future_skew_s)
        self.synthetic_topic = SYNTHETIC.in_namespace(settings.topic_namespace).name

    def new_twin(self, entity_id: str) -> Twin:
        learner = make_learner(self.settings.learner, **self.settings.learner_params)
        return Twin(entity_id=entity_id, learner=learner)

    def twin(self, entity_id: str, partition: int) -> Twin:
        twin = self.twins.get(entity_id)
        if twin is None:
            blob = self.load_twin(entity_id)
            twin = Twin.from_bytes(blob) if blob else self.new_twin(entity_id)
            self.twins[entity_id] = twin
            self.partition_of[entity_id] = partition
            self.metrics.twins.set(len(self.twins))
        return twin

    def process(self, records: Iterable[Record]) -> BatchOutput:
        out = BatchOutput()
        now = self.clock()
        target = self.settings.target
        abs_error = self.metrics.abs_error.labels(target)  # one label lookup per batch, not per event
        last_event_time: datetime | None = None
        for record in records:
            decoded = decode_telemetry(
                record.value,
                record.key,
                now=now,
                max_payload=self.settings.max_payload_bytes,
                max_future_skew=self._skew,
                max_metrics=self.settings.max_metrics,
            )
            if isinstance(decoded, Rejection):
                self._reject(out, record, decoded.reason, decoded.error, decoded.entity_id)
                continue
            twin = self.twin(decoded.entity_id, record.partition)
            if record.topic == self.synthetic_topic:
                self._offer_fill(out, record, decoded, twin)
                continue
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
                continue
            if status is SeqStatus.LATE:
                twin.forget_missing(decoded.seq)
                self.dirty.add(decoded.entity_id)
                self._reject(
                    out, record, RejectReason.OUT_OF_ORDER,
                    f"seq {decoded.seq} arrived after seq {twin.last_seq} was applied", decoded.entity_id,
                )
                continue
            label = decoded.targets.get(target)
            gaps_before = twin.gaps
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
            try:
                interval = twin.step(decoded.seq, inputs, label, synthetic, weight=weight)
            except Exception as exc:  # a learner bug must not stop the worker
                log.exception("twin update failed entity=%s topic=%s partition=%s offset=%s",
                              decoded.entity_id, record.topic, record.partition, record.offset)
                self._reject(out, record, RejectReason.TWIN_ERROR, f"{type(exc).__name__}: {exc}", decoded.entity_id)
                continue
            if twin.gaps != gaps_before:
                self.metrics.sequence_gaps.inc(twin.gaps - gaps_before)
            if self.settings.gap_detection and not decoded.synthetic:
                self._detect(out, decoded, twin, now)
            self.dirty.add(decoded.entity_id)
            if label is not None:
                abs_error.observe(abs(interval.value - label))
            out.predictions.append(
                (record.key or b"",
                 encode_prediction(decoded, twin, target, interval.value, interval.lower, interval.upper, share))
            )
            last_event_time = decoded.event_time
        if out.predictions:
            self.metrics.events_applied.inc(len(out.predictions))
            self.metrics.predictions.labels(target).inc(len(out.predictions))
        if last_event_time is not None:
            self.metrics.lag_seconds.set((now - last_event_time).total_seconds())
        return out

    def _inputs(self, decoded: Telemetry, twin: Twin) -> tuple[dict[str, float | None], float]:
        """The sensor values the twin applies (missing ones filled where a fill exists) and their synthetic share."""
        if decoded.synthetic:  # a generated sample sent as an event: all of its input is synthetic
            present = sum(1 for v in decoded.metrics.values() if v is not None)
            return dict(decoded.metrics), 1.0 if present else 0.0
        inputs, measured, synthetic = twin.fills.prepare(decoded.seq, decoded.metrics)
        refused = twin.fills.take_refused_early()
        if refused:
            self.metrics.synthetic_fill_values.labels("refused_measured").inc(refused)
        if not synthetic:
            return inputs, 0.0
        self.metrics.synthetic_values_used.inc(synthetic)
        self.metrics.synthetic_predictions.inc()
        return inputs, synthetic / (measured + synthetic)

    def _synthetic_learn_weight(self) -> float | None:
        """Sample weight of a labelled event with synthetic input: None (not learned) unless ``learn_from_synthetic``.

        With it on, every such event is learned, with weight ``synthetic_learn_weight``
        (0 < w <= 1, see ``TwinLearner.learn_one``). ``FillBook.learn_credit`` (the
        thinning credit this replaced) is no longer used; it stays for old pickles.
        """
        if not self.settings.learn_from_synthetic:
            return None
        return self.settings.synthetic_learn_weight

    def _detect(self, out: BatchOutput, decoded: Telemetry, twin: Twin, now: datetime) -> None:
        detector = twin.detector
        if detector is None:
            detector = twin.detector = GapDetector(decoded.entity_id)
        for gap in detector.observe_one(decoded.seq, decoded.event_time, decoded.metrics, detected_at=now):
            log.info("gap entity=%s kind=%s sensors=%s seq=%s..%s open=%s", gap.entity_id, gap.kind.value,
                     ",".join(gap.sensors), gap.first_seq, gap.last_seq, gap.open)
            self.metrics.gaps_detected.labels(gap.kind.value).inc()
            out.gaps.append((decoded.entity_id.encode(), gap.model_dump_json().encode()))

    def _offer_fill(self, out: BatchOutput, record: Record, decoded: Telemetry, twin: Twin) -> None:
        """A synthetic sample from the sidecar: into the twin's fill book, never over a measured value."""
        if not decoded.synthetic:
            self._reject(out, record, RejectReason.INVALID,
                         "the synthetic topic takes synthetic=true samples only", decoded.entity_id)
            return
        if twin.classify(decoded.seq) is SeqStatus.LATE:  # a sample that never arrived: absorbed late, once
            values = sum(1 for v in decoded.metrics.values() if v is not None)
            if twin.absorb(decoded.seq, decoded.metrics):
                self.metrics.synthetic_fill_values.labels("absorbed_missed").inc(values)
                self.dirty.add(decoded.entity_id)
            else:
                self.metrics.synthetic_fill_values.labels("duplicate").inc(values)
            return
        outcome = twin.fills.offer(decoded.seq, twin.last_seq, decoded.metrics)
        for name in ("accepted", "early", "duplicate", "refused_measured", "stale"):
            count = getattr(outcome, name)
            if count:
                self.metrics.synthetic_fill_values.labels(name).inc(count)
        if outcome.refused_measured:
            log.info("synthetic fill refused: entity=%s seq=%s values=%d were measured (topic=%s partition=%s offset=%s)",
                     decoded.entity_id, decoded.seq, outcome.refused_measured, record.topic, record.partition, record.offset)
        if outcome.accepted or outcome.early:
            self.dirty.add(decoded.entity_id)

    def _reject(self, out: BatchOutput, record: Record, reason: RejectReason, error: str, entity_id: str | None) -> None:
        log.warning("dead-letter reason=%s entity=%s topic=%s partition=%s offset=%s: %s",
                    reason.value, entity_id, record.topic, record.partition, record.offset, error)
        self.metrics.dead_letters.labels(reason.value).inc()
        out.dead_letters.append((record.key, encode_dead_letter(record, reason, error, entity_id)))

    def take_dirty(self) -> dict[int, list[tuple[str, bytes]]]:
        """Serialized dirty twins grouped by partition, for a checkpoint; clears the dirty set."""
        grouped: dict[int, list[tuple[str, bytes]]] = {}
        for entity_id in self.dirty:
            grouped.setdefault(self.partition_of[entity_id], []).append((entity_id, self.twins[entity_id].to_bytes()))
        self.dirty.clear()
        return grouped

    def drop_all(self) -> int:
        """Forget every cached twin (after a rebalance); their checkpointed state lives on in the table."""
        dropped = len(self.twins)
        self.twins.clear()
        self.partition_of.clear()
        self.dirty.clear()
        self.metrics.twins.set(0)
        return dropped
