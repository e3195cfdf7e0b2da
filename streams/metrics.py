"""Prometheus metrics of the worker and sinks (one registry per process).

Exposed with :func:`serve_metrics` when ``TWINSTREAM_METRICS_PORT`` is set. Labels are
kept low-cardinality (topic, reason, target), never the entity id.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# From what a monitoring client notices (tens of ms) to a worker catching up on a backlog (minutes).
INGEST_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class WorkerMetrics:
    """Counters and gauges for throughput, lag, errors and model quality."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("twinstream_events_in_total", "Telemetry messages received", ["topic"], registry=r)
        self.events_applied = Counter("twinstream_events_applied_total", "Telemetry events applied to twins", registry=r)
        self.duplicates = Counter(
            "twinstream_duplicates_skipped_total", "Events skipped because the twin already applied their seq", registry=r
        )
        self.sequence_gaps = Counter("twinstream_sequence_gaps_total", "Sequence numbers skipped by a source", registry=r)
        self.dead_letters = Counter("twinstream_dead_letters_total", "Messages sent to the DLQ", ["reason"], registry=r)
        self.twin_errors = Counter(
            "twinstream_twin_errors_total",
            "Records whose handling raised, by stage: decode, load (twin state unreadable), apply (the twin was "
            "restored to its state before the record) are dead-lettered as twin_error; restore (that failed too: the "
            "twin went back to its last checkpoint); detect (the gap detector raised: it starts afresh, the sample "
            "is still applied)",
            ["stage"], registry=r,
        )
        self.predictions = Counter("twinstream_predictions_total", "Predictions published", ["target"], registry=r)
        self.checkpoints = Counter("twinstream_checkpoints_total", "Twin-state checkpoints written", registry=r)
        self.stale_events = Counter(
            "twinstream_stale_events_discarded_total",
            "Events discarded unapplied and unacked because they were fetched before a rebalance "
            "or are ahead of the table's checkpoint marker (they are redelivered)", registry=r,
        )
        self.offset_rewinds = Counter(
            "twinstream_offset_rewinds_total",
            "Input partitions sought back because an event came past an offset not yet applied "
            "(after a rebalance: past the table's marker, or past the log start without one)",
            registry=r,
        )
        self.checkpoint_seconds = Histogram(
            "twinstream_checkpoint_seconds", "Time to write a checkpoint and flush", registry=r
        )
        self.ingest_latency = Histogram(
            "twinstream_ingest_latency_seconds",
            "Input record's timestamp (its producer's CreateTime, or the broker's LogAppendTime) to its "
            "batch's outputs handed to the producer",
            buckets=INGEST_LATENCY_BUCKETS, registry=r,
        )
        self.twins = Gauge("twinstream_twins", "Twins held by this worker", registry=r)
        self.lag_seconds = Gauge("twinstream_event_lag_seconds", "Now minus event time of the last event", registry=r)
        self.abs_error = Histogram(
            "twinstream_abs_error", "Absolute error of predictions whose target was known",
            ["target"], buckets=(1, 2, 5, 10, 20, 50, 100, 200), registry=r,
        )
        self.prior_swaps = Counter(
            "twinstream_prior_swaps_total", "Priors pulled from the registry and swapped into the twins", registry=r
        )
        self.prior_pull_failures = Counter(
            "twinstream_prior_pull_failures_total",
            "Prior pulls that kept the current prior: registry unavailable, prior rejected (signature, sha256, schema), or error",
            ["reason"], registry=r,
        )
        # --- gaps and synthetic samples ---
        self.gaps_detected = Counter(
            "twinstream_gaps_detected_total", "Gaps found by the per-twin gap detectors and published", ["kind"], registry=r
        )
        self.synthetic_fill_values = Counter(
            "twinstream_synthetic_fill_values_total",
            "Values of synthetic samples received by twins, by outcome: accepted, early, duplicate, "
            "refused_measured (a fill never overwrites a measurement), stale, absorbed_missed (a missed sample's fill, absorbed late)",
            ["outcome"], registry=r,
        )
        self.synthetic_values_used = Counter(
            "twinstream_synthetic_values_used_total", "Synthetic values used as twin input in place of missing sensors", registry=r
        )
        self.synthetic_predictions = Counter(
            "twinstream_synthetic_predictions_total", "Predictions with synthetic input (synthetic_share > 0)", registry=r
        )
        self.sidecar_fills = Counter(
            "twinstream_sidecar_fills_total", "Synthetic samples published by the sidecar", ["generator"], registry=r
        )
        self.sidecar_unfilled = Counter(
            "twinstream_sidecar_unfilled_total", "Gap samples the sidecar did not fill, by reason", ["reason"], registry=r
        )
        self.sidecar_generator_fallbacks = Counter(
            "twinstream_sidecar_generator_fallbacks_total",
            "Sidecar batches whose generator fills were replaced by the Kalman baseline, by reason: timeout "
            "(over TWINSTREAM_SIDECAR_GENERATOR_BUDGET_S), busy (an abandoned generator call still running), error",
            ["reason"], registry=r,
        )
        self.sink_points = Counter("twinstream_sink_points_total", "Points written to InfluxDB", registry=r)
        self.sink_failures = Counter("twinstream_sink_write_failures_total", "Failed InfluxDB writes (retried)", registry=r)
        self.sink_dead_letters = Counter(
            "twinstream_sink_dead_letters_total",
            "Predictions the InfluxDB sink sent to its DLQ, by reason: sink_rejected (InfluxDB refused the point "
            "permanently, after bounded retries), bad_json / invalid (not a Prediction)",
            ["reason"], registry=r,
        )
        # --- pipeline health (a timer refreshes these, so they move while no records arrive) ---
        self.consumergroup_lag = Gauge(
            "kafka_consumergroup_lag",
            "Records of an input partition this worker owns not yet committed by its consumer group: high watermark "
            "minus committed offset (kafka_exporter's name). The embedded broker under-reports high watermarks, so "
            "there it reads short (never below 0)",
            ["consumergroup", "topic", "partition"], registry=r,
        )
        self.twins_by_kind = Gauge(
            "twinstream_twins_by_kind", "Twins of each kind held in this worker's memory (loaded since the last rebalance)",
            ["kind"], registry=r,
        )
        self.checkpoint_age = Gauge(
            "twinstream_checkpoint_age_seconds",
            "Seconds since the last checkpoint while applied events wait to be acknowledged (0 when none wait)",
            registry=r,
        )
        self.in_domain_share = Gauge(
            "twinstream_in_domain_share",
            "Share of the last predictions of this worker's partitions whose input was in the model's domain, by kind",
            ["kind"], registry=r,
        )
        self.prior_info = Gauge(
            "twinstream_prior_info", "Twins in memory using each prior version, by kind (value: number of twins)",
            ["kind", "prior_version"], registry=r,
        )
        # --- twin API ---
        self.api_requests = Counter(
            "twinstream_api_requests_total", "Twin API requests, by route template, method and status",
            ["route", "method", "status"], registry=r,
        )
        self.api_request_seconds = Histogram(
            "twinstream_api_request_seconds", "Twin API time to the response head, by route template", ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0), registry=r,
        )


def serve_metrics(metrics: WorkerMetrics, port: int, addr: str = "127.0.0.1") -> None:
    """Serve ``/metrics`` for Prometheus in a background thread."""
    start_http_server(port, addr=addr, registry=metrics.registry)


def observe_many(histogram: Histogram, values: Sequence[float]) -> None:
    """Observe ``values`` into one histogram child, one increment per bucket touched.

    Why: a per-event ``observe`` takes two locked increments, a few percent of the
    worker's time per event; a batch's errors mostly fall in a few buckets. Uses the
    child's bucket layout where prometheus-client exposes it, else observes one by one.

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("e", "errors", buckets=(1, 5), registry=CollectorRegistry())
    >>> observe_many(h, [0.5, 3.0, 4.0, 9.0])
    >>> [(s.labels.get("le"), s.value) for s in h.collect()[0].samples if s.name == "e_bucket"]
    [('1.0', 1.0), ('5.0', 3.0), ('+Inf', 4.0)]
    """
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            histogram.observe(value)
        return
    counts: dict[int, int] = {}
    for value in values:
        if value != value:  # NaN: no bucket, as observe() does
            continue
        index = bisect_left(bounds, value)
        counts[index] = counts.get(index, 0) + 1
    for index, count in counts.items():
        buckets[index].inc(count)
    total.inc(sum(values))


def observe_ages(histogram: Histogram, stamps: Sequence[float | None], now: float) -> None:
    """Observe ``now - stamp`` (seconds) for every stamp, in one pass; a record without a timestamp is left out.

    Why the record's own timestamp: it is what a monitoring client compares a prediction's
    timestamp with, so the histogram answers "how late are the predictions" as the client
    sees it (the producer's clock, unless the topic stamps LogAppendTime).

    >>> from prometheus_client import CollectorRegistry
    >>> h = Histogram("l", "latency", buckets=(0.1, 1), registry=CollectorRegistry())
    >>> observe_ages(h, [99.95, 99.5, None], now=100.0)
    >>> [(s.labels.get("le"), s.value) for s in h.collect()[0].samples if s.name == "l_bucket"]
    [('0.1', 1.0), ('1.0', 2.0), ('+Inf', 2.0)]
    """
    observe_many(histogram, [now - stamp for stamp in stamps if stamp])
