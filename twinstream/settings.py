"""One configuration object for every twinstream process.

Values come from (highest priority first) CLI flags, ``TWINSTREAM_*`` environment
variables and the defaults below. The object is frozen: code that needs a variant
builds one with :meth:`Settings.model_copy`, so no process mutates shared config.

>>> Settings(broker="kafka://127.0.0.1:9092").broker_servers
'127.0.0.1:9092'
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from twinstream.schemas.generator import GateThresholds


BUNDLED_TWINS_SPEC = "bundled:cmapss"  # twinstream/specs/cmapss.yaml, the same file as examples/cmapss/twins.yaml
NO_TWINS_SPEC = "none"


class Settings(BaseSettings):
    """Runtime configuration (env prefix ``TWINSTREAM_``)."""

    model_config = SettingsConfigDict(env_prefix="TWINSTREAM_", frozen=True, extra="forbid")

    # --- broker and app identity -------------------------------------------------
    broker: str | None = Field(
        default=None,
        description="Kafka bootstrap URL, e.g. kafka://127.0.0.1:9092. None: start the embedded broker.",
    )
    broker_storage: str = Field(
        default="memory://",
        description=(
            "Where the embedded broker (`twinstream broker`, the demo) keeps topics and offsets: memory:// (lost on stop), "
            "a directory (durable, local), or s3://bucket/ (AWS_* variables); see twinstream/broker_storage.py."
        ),
    )
    app_id: str = Field(default="twinstream", description="Faust app id = consumer group; keep it unique per deployment.")
    topic_namespace: str = Field(
        default="twinstream",
        pattern=r"^[a-z][a-z0-9_]*$",
        description="Leading name of every catalog topic (twinstream.telemetry, ...).",
    )
    partitions: int = Field(default=4, ge=1, le=1024, description="Partitions of the keyed topics.")
    data_dir: Path = Field(default=Path(".twinstream"), description="Worker state (RocksDB tables).")
    store: str = Field(default="rocksdb://", description="Faust table store: rocksdb:// or memory://.")
    session_timeout_s: float = Field(default=8.0, gt=0, description="Consumer session timeout (Tansu holds JoinGroup ~half of it).")

    recovery_consistency_check: bool = Field(
        default=False,
        description=(
            "Faust's start-up check that local RocksDB offsets do not exceed the changelog high watermark. "
            "Off by default: the embedded Tansu 0.6.0 under-reports high watermarks (base offset of the last "
            "record batch + 1), which would fail the check after a crash. Turn it on with Apache Kafka."
        ),
    )

    # --- ingest batching and checkpoints -----------------------------------------
    batch_size: int = Field(default=1000, ge=1, description="Events handled per batch by the ingest agent.")
    batch_timeout_s: float = Field(
        default=0.01,
        gt=0,
        description="Max wait to fill a batch, with batch_intake off (the intake hands over what each fetch brought, "
            "without waiting). Under full load batches fill to batch_size first; at lighter load this wait is part "
            "of every event's latency (docs/performance.md).",
    )
    checkpoint_interval_s: float = Field(
        default=1.0,
        ge=0,
        description="Twin state is written to the changelog table at most this often; input offsets are "
            "acknowledged only after the checkpoint that holds them.",
    )

    # --- twins ---------------------------------------------------------------------
    learner: str = Field(
        default="prior-twin",
        description="Twin learner family (twinstream.models.registry): prior-twin (fleet prior + personal state) or river-linear.",
    )
    learner_params: dict[str, Any] = Field(
        default_factory=dict, description="Learner constructor parameters (JSON in env), e.g. {\"prior\": \"bundled\"}."
    )
    target: str = Field(default="rul", description="What twins predict; learned from telemetry targets of that name.")
    twin_idle_evict_s: float = Field(
        default=0.0,
        ge=0,
        description="Twins that got no event for this many seconds leave the worker's memory once a checkpoint holds "
            "their state (they stay in the table and reload on their next event); 0: never evicted.",
    )
    fetch_max_wait_ms: int = Field(
        default=500,
        ge=1,
        le=30_000,
        description="Longest a worker's fetch may wait at the broker (Faust's fixed value is 1,500 ms). The embedded "
            "broker holds a fetch for about half of this even with data ready, so it bounds ingest latency; 50 gives the "
            "lowest latency with the in-memory embedded broker or Apache Kafka, but on the embedded broker's durable "
            "storage every fetch lists a partition's objects, and fetches that often starve its writes "
            "(streams/fetch_wait.py).",
    )
    batch_intake: bool = Field(
        default=True,
        description="Hand the worker's input records from the consumer to the ingest agent a whole fetch at a time "
            "(streams/batch_intake.py) instead of through Faust's per-record stream; offsets, acks and rebalances "
            "are handled as Faust does. False: Faust's stream and take buffer.",
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        ge=0,
        description="Allocations between the garbage collector's youngest-generation passes in the worker (Python's "
            "default is 700). Twins are long-lived and nearly free of reference cycles, so frequent passes cost time "
            "and free little (docs/performance.md); objects alive at start-up are frozen out of collection. 0: Python's defaults.",
    )
    twins_spec: str = Field(
        default=BUNDLED_TWINS_SPEC,
        min_length=1,
        description=(
            "Twin kinds this worker serves (twins.yaml, docs/any-fleet.md): a file path, or bundled:cmapss (the C-MAPSS "
            "turbofan spec shipped with the package). A sample of an entity no kind matches goes to the DLQ as unknown_kind. "
            "none: no kinds; every entity is a twin of `learner` predicting `target`."
        ),
    )

    # --- gaps and synthetic samples (docs/sidecar.md) --------------------------------
    gap_detection: bool = Field(
        default=True, description="Run a gap detector per twin and publish each gap to the gaps topic."
    )
    learn_from_synthetic: bool = Field(
        default=False,
        description="Let twins learn from labelled events whose input holds synthetic values, weighted by "
            "synthetic_learn_weight (they always predict with them).",
    )
    synthetic_learn_weight: float = Field(
        default=1.0, gt=0, le=1.0,
        description=(
            "With learn_from_synthetic: the sample weight (0 < w <= 1) every labelled event with synthetic input is learned with "
            "(scales the learner's update; statistics that cannot be weighted, e.g. the residual quantile, learn only from w = 1)."
        ),
    )
    sidecar_window: int = Field(default=64, ge=4, le=4096, description="Recent samples per entity the sidecar conditions fills on.")
    sidecar_adaptive_fill: bool = Field(
        default=True,
        description="Choose the filler per entity and sensor (Kalman, generator, linear, last value) by its error on "
            "pseudo-gaps cut from the window's measured values; false: generator where it passes its gate, else Kalman.",
    )
    sidecar_max_missed: int = Field(
        default=64, ge=1, description="Most missing samples the sidecar fills for one missed-samples gap (the rest are counted, "
            "not filled)."
    )
    sidecar_warmup_records: int = Field(
        default=10_000, ge=0,
        description="On start/rebalance the sidecar re-reads up to this many telemetry records before its "
            "committed offset, per partition, as context.",
    )
    sidecar_generator_budget_s: float = Field(
        default=2.0, gt=0,
        description=(
            "Longest the sidecar waits for the generator's fills of one batch (it runs in a thread); "
            "a slower batch is filled by the Kalman baseline instead and counted (twinstream_sidecar_generator_fallbacks_total)."
        ),
    )

    # --- prior pull from the federation registry -----------------------------------
    prior_registry_url: str | None = Field(
        default=None,
        description="Prior registry base URL (twinstream federation serve), e.g. http://registry:8780. None: "
            "twins keep their configured prior.",
    )
    prior_registry_public_key: str = Field(
        default="",
        description="The registry's Ed25519 public key (base64, from `twinstream federation public-key`). "
            "Priors are accepted only if signed by it.",
    )
    prior_poll_interval_s: float = Field(default=60.0, gt=0, description="The worker asks the registry for the latest prior this often.")
    prior_registry_timeout_s: float = Field(default=5.0, gt=0, description="Timeout of each registry HTTP request.")

    # --- input validation ----------------------------------------------------------
    max_payload_bytes: int = Field(default=64 * 1024, ge=256, description="Larger telemetry messages go to the DLQ.")
    max_future_skew_s: float = Field(default=300.0, ge=0, description="Event times further in the future go to the DLQ.")
    max_metrics: int = Field(default=256, ge=1, description="Most metrics one telemetry message may carry.")

    # --- InfluxDB sink -------------------------------------------------------------
    influx_url: str | None = Field(default=None, description="InfluxDB (v2 write API) URL; None disables the sink.")
    influx_api: Literal["v2", "v1"] = Field(
        default="v2", description="v2: /api/v2/write (InfluxDB 2, VictoriaMetrics); v1: /write?db=<bucket> (InfluxDB 1.x)."
    )
    influx_org: str = "twinstream"
    influx_bucket: str = "twinstream"
    influx_token: SecretStr = SecretStr("")
    influx_batch_size: int = Field(default=5000, ge=1)
    influx_flush_interval_s: float = Field(default=1.0, gt=0)
    influx_max_backoff_s: float = Field(default=10.0, gt=0)

    # --- synthetic data: the generator's quality gate ---------------------------------
    synth_generator_dir: Path | None = Field(
        default=None, description="Generator artifact directory (twinstream synth train --out); None: the bundled FD001 one."
    )
    synth_gate_max_mae_ratio: float | None = Field(
        default=0.8, gt=0, description="Refuse a generator whose recorded block-mask MAE exceeds this share of linear "
            "interpolation's (None: unchecked)."
    )
    synth_gate_max_discriminative: float | None = Field(
        default=0.15, ge=0, le=0.5, description="Refuse a generator whose recorded discriminative score exceeds this (None: unchecked)."
    )

    # --- observability ---------------------------------------------------------------
    metrics_port: int | None = Field(default=None, description="Serve Prometheus metrics on this port.")
    metrics_addr: str = Field(
        default="127.0.0.1", description="Address the metrics server binds (0.0.0.0 in containers so Prometheus can scrape)."
    )
    log_level: str = Field(default="INFO")
    lag_interval_s: float = Field(
        default=5.0, gt=0, description="The worker measures its consumer group's lag (kafka_consumergroup_lag) this often."
    )

    # --- Kafka connection security (docs/security.md; twinstream/kafka_security.py) -----
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT", description="How every Kafka client connects: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS + SASL)."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="SCRAM-SHA-512", description="SASL mechanism with SASL_*: PLAIN (only over TLS), SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str = Field(default="", description="SASL user name (with SASL_PLAINTEXT / SASL_SSL).")
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password; prefer kafka_sasl_password_file (a mounted Secret). Never logged."
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (read at start, newline stripped); wins over kafka_sasl_password."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None, description="PEM bundle of the CAs the broker's certificate must chain to (None: the system trust store)."
    )
    kafka_ssl_certfile: Path | None = Field(default=None, description="Client certificate (PEM) for mutual TLS; needs kafka_ssl_keyfile.")
    kafka_ssl_keyfile: Path | None = Field(default=None, description="Client private key (PEM, unencrypted) for mutual TLS.")
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host connected to. Turn off only for tests."
    )
    kafka_connect_timeout_s: float = Field(
        default=20.0, gt=0, description="A process that cannot connect and authenticate to Kafka within this time exits with the cause."
    )

    # --- twin query API (docs/operations.md) -------------------------------------------
    api_port: int | None = Field(default=None, description="Serve the twin API and inspector page on this port (None: off).")
    api_addr: str = Field(default="127.0.0.1", description="Address the twin API binds (0.0.0.0 in containers).")
    api_advertised_url: str | None = Field(
        default=None,
        description="URL other workers reach this worker's API at (routing by partition owner); None: http://api_addr:api_port.",
    )
    api_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token the twin API requires (empty: no token). Never logged."
    )

    @field_validator("broker")
    @classmethod
    def _check_broker(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "://" not in value:
            value = f"kafka://{value}"
        scheme = value.split("://", 1)[0]
        if scheme != "kafka":
            raise ValueError(f"broker URL must start with kafka:// (got {value!r})")
        return value

    def synth_gate(self) -> GateThresholds:
        """The generator quality gate built from the ``synth_gate_*`` fields."""
        from twinstream.schemas.generator import GateThresholds

        return GateThresholds(max_mae_ratio=self.synth_gate_max_mae_ratio, max_discriminative=self.synth_gate_max_discriminative)

    @property
    def broker_servers(self) -> str:
        """The bootstrap servers (``host:port[,host:port]``) for plain Kafka clients."""
        if self.broker is None:
            raise ValueError("no broker configured (the embedded broker sets one when it starts)")
        return ",".join(part.split("://", 1)[-1] for part in self.broker.split(";"))


def settings_from_env() -> Settings:
    """Settings for a process started as ``python -m ...``: bad TWINSTREAM_* values exit 2 with pydantic's message.

    Why: the sink and the sidecar run as their own processes (compose, Helm); a typo in
    their environment should stop them with the field named, not a traceback.
    """
    import sys

    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        print(f"invalid TWINSTREAM_* settings:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from exc
