"""Prometheus metrics of the connectors, labelled by source (never by entity).

One object per process; ``twinstream connect`` serves them when ``metrics_port`` is set
in the connectors file.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class ConnectorMetrics:
    """Values read, samples sent, reconnects, buffer depth/bytes and drops, per source."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.values_read = Counter(
            "twinstream_connector_values_read_total", "Values read from the plant (before scaling)", ["source"], registry=r
        )
        self.samples_buffered = Counter(
            "twinstream_connector_samples_total", "Samples assembled and written to the disk buffer", ["source"], registry=r
        )
        self.samples_sent = Counter(
            "twinstream_connector_samples_sent_total", "Samples acknowledged by Kafka", ["source"], registry=r
        )
        self.reconnects = Counter(
            "twinstream_connector_reconnects_total", "Connections re-established after a failure", ["source"], registry=r
        )
        self.errors = Counter(
            "twinstream_connector_errors_total", "Read/connection errors (the source keeps running)", ["source"], registry=r
        )
        self.dropped = Counter(
            "twinstream_connector_dropped_total",
            "Samples dropped: buffer full (overflow), older than max_age_s (expired), not mappable (invalid), "
            "or polled while the device served an empty entity id (no_entity)",
            ["source", "reason"], registry=r,
        )
        self.buffer_samples = Gauge("twinstream_connector_buffer_samples", "Samples waiting in the disk buffer", ["source"], registry=r)
        self.buffer_bytes = Gauge("twinstream_connector_buffer_bytes", "Bytes waiting in the disk buffer", ["source"], registry=r)
        self.connected = Gauge("twinstream_connector_connected", "1 while the source is connected", ["source"], registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (tests and the benchmark read counters this way)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found
