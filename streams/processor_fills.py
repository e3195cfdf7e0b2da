"""The processor's handling of gaps and synthetic samples: fills into a twin's input, fills offered, gap detection.

Why a module of its own: it is the part of :class:`~twinstream.streams.processor.TwinProcessor`
that docs/sidecar.md describes (how measured and synthetic samples meet in a twin), kept
apart from the batch and wave machinery; the processor inherits it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from twinstream.models.gaps import GapDetector
from twinstream.models.twin import SeqStatus, Twin
from twinstream.schemas.dead_letter import RejectReason
from twinstream.schemas.telemetry import Telemetry
from twinstream.settings import Settings
from twinstream.streams.metrics import WorkerMetrics
from twinstream.streams.records import BatchOutput, Record

log = logging.getLogger("twinstream.streams.processor")


class FillsAndGaps:
    """Methods of :class:`~twinstream.streams.processor.TwinProcessor` for fills and gaps."""

    settings: Settings
    metrics: WorkerMetrics
    dirty: set[str]
    _reject: Callable[[BatchOutput, Record, RejectReason, str, str | None], None]  # the processor's dead-letter path

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

    def _detect_or_reset(self, out: BatchOutput, decoded: Telemetry, twin: Twin, now: datetime) -> None:
        """Gap detection for an applied sample; a detector that raises starts afresh, the sample still counts.

        Why not a dead letter: the sample is valid and the twin applied it; a detector
        confused by the entity's history (e.g. event times going backwards) would
        otherwise turn every later sample of the entity into a dead letter.
        """
        mark = len(out.gaps)
        try:
            self._detect(out, decoded, twin, now)
        except Exception:
            del out.gaps[mark:]
            twin.detector = None
            log.exception(
                "gap detector failed entity=%s seq=%s event_time=%s; it starts afresh",
                decoded.entity_id,
                decoded.seq,
                decoded.event_time.isoformat(),
            )
            self.metrics.twin_errors.labels("detect").inc()

    def _detect(self, out: BatchOutput, decoded: Telemetry, twin: Twin, now: datetime) -> None:
        detector = twin.detector
        if detector is None:
            detector = twin.detector = GapDetector(decoded.entity_id)
        for gap in detector.observe_one(decoded.seq, decoded.event_time, decoded.metrics, detected_at=now):
            log.info(
                "gap entity=%s kind=%s sensors=%s seq=%s..%s open=%s",
                gap.entity_id,
                gap.kind.value,
                ",".join(gap.sensors),
                gap.first_seq,
                gap.last_seq,
                gap.open,
            )
            self.metrics.gaps_detected.labels(gap.kind.value).inc()
            out.gaps.append((decoded.entity_id.encode(), gap.model_dump_json().encode()))

    def _offer_fill(self, out: BatchOutput, record: Record, decoded: Telemetry, twin: Twin) -> None:
        """A synthetic sample from the sidecar: into the twin's fill book, never over a measured value."""
        if not decoded.synthetic:
            self._reject(out, record, RejectReason.INVALID, "the synthetic topic takes synthetic=true samples only", decoded.entity_id)
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
            log.info(
                "synthetic fill refused: entity=%s seq=%s values=%d were measured (topic=%s partition=%s offset=%s)",
                decoded.entity_id,
                decoded.seq,
                outcome.refused_measured,
                record.topic,
                record.partition,
                record.offset,
            )
        if outcome.accepted or outcome.early:
            self.dirty.add(decoded.entity_id)
