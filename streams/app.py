"""The Faust application: broker, store and tuning in one factory.

Why a factory and not a module-level ``app``: every process (worker, demo, tests,
benchmark) builds its app from one :class:`~twinstream.settings.Settings`, so no
hidden global decides which broker or app id is used. Agents are registered on the
app by the modules that own them (:mod:`twinstream.streams.ingest`, the InfluxDB sink).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import faust

from twinstream.kafka_security import faust_credentials
from twinstream.schemas.topics import topic_catalog
from twinstream.settings import Settings
from twinstream.streams.fetch_wait import set_fetch_max_wait

NOISY_LOGGERS = ("aiokafka", "faust", "mode", "kafka")


def quiet_library_loggers(level: int = logging.WARNING) -> None:
    """Raise library loggers to WARNING.

    aiokafka and Faust build debug log records per message even when nothing prints
    them (~9% of a worker's time, measured); call this from a process entry point,
    never at import.
    """
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def create_app(settings: Settings) -> faust.App:
    """A Faust app configured for twinstream (no agents yet)."""
    if settings.broker is None:
        raise ValueError("settings.broker is not set; start the embedded broker first")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),  # TLS / SASL from the kafka_* settings (None: plaintext)
        store=settings.store,
        datadir=str(settings.data_dir / settings.app_id),
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        topic_disable_leader=True,
        web_enabled=False,
        # The embedded broker rejects InitProducerId v0, so no exactly_once here:
        # exactly-once *effect* comes from per-entity sequence numbers instead.
        processing_guarantee="at_least_once",
        producer_acks=-1,
        producer_linger=0.005,
        producer_max_batch_size=256 * 1024,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_s / 4),
        # Records per poll: aiokafka fetches a partition again only once its buffered records are
        # taken, so small polls left the batch intake, and the agent behind it, waiting for input.
        broker_max_poll_records=10000,
        consumer_max_fetch_size=4 * 1024 * 1024,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=8192,
        stream_wait_empty=False,
        recovery_consistency_check=settings.recovery_consistency_check,
        table_cleanup_interval=timedelta(minutes=5).total_seconds(),
        value_serializer="raw",
        key_serializer="raw",
    )
    set_fetch_max_wait(app, settings.fetch_max_wait_ms)
    return app


def declare_topics(app: faust.App, settings: Settings) -> dict[str, faust.TopicT]:
    """Faust topic handles for the catalog topics, by catalog name (``twinstream.telemetry``).

    Values stay raw bytes: the ingest agent parses them itself, so that a message that
    fails to parse can go to the dead-letter topic with its original bytes.
    """
    specs = topic_catalog(settings.partitions, settings.topic_namespace)
    return {
        f"twinstream.{spec.name.split('.', 1)[1]}": app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            retention=timedelta(milliseconds=spec.retention_ms),
            key_serializer="raw",
            value_serializer="raw",
            internal=False,
        )
        for spec in specs
    }
