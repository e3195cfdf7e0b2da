"""The connectors file (``connectors.yaml``): every source, its connection and its mapping.

Why one validated file: a typo in a register address or a JSON path is found when the
file is loaded, with the source and field named, before anything connects or sends.
The vocabulary is the one plant gateways share: per source a connection (``host`` /
``port`` / ``url``, timeouts, ``reconnect: {initial_s, max_s}``), per device an entity
id (constant or taken from the topic, payload or node path by a pattern), per value a
metric ``name``, a selector, ``scale`` / ``offset`` and the event time.

>>> cfg = parse_config({"sources": [{"name": "press", "type": "modbus", "host": "127.0.0.1",
...     "devices": [{"entity_id": "press-1", "values": [
...         {"name": "temp", "register": "holding", "address": 0, "type": "float32", "scale": 0.1}]}]}]})
>>> cfg.sources[0].devices[0].values[0].registers
2
>>> parse_config({"sources": [{"name": "press", "type": "modbus", "host": "h",
...     "devices": [{"entity_id": "p", "values": [{"name": "t", "register": "coil", "address": 0, "type": "float32"}]}]}]})
Traceback (most recent call last):
...
twinstream.connectors.config.ConfigError: source 'press' (modbus): devices.0.values.0: Value error, a coil holds one bit: ...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twinstream.schemas.telemetry import MAX_METRICS, MAX_NAME_CHARS, EntityId, MetricName

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"


class ConfigError(ValueError):
    """The connectors file is invalid; the message names the source and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Reconnect(_Strict):
    """Jittered exponential backoff between connection attempts, never longer than ``max_s``."""

    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Reconnect:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class EntityPattern(_Strict):
    """Entity id from a string (topic, node path) by a regular expression with a group ``entity``."""

    pattern: str

    @field_validator("pattern")
    @classmethod
    def _has_group(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "entity" not in compiled.groupindex:
            raise ValueError("the pattern needs a named group (?P<entity>...)")
        return value

    def match(self, text: str) -> str | None:
        found = re.search(self.pattern, text)
        return found.group("entity") if found else None


class _Value(_Strict):
    name: MetricName
    scale: float = 1.0
    offset: float = 0.0

    def apply(self, raw: float) -> float:
        """``raw * scale + offset`` (engineering units from raw counts)."""
        return raw * self.scale + self.offset


# --- MQTT ---------------------------------------------------------------------------------


class MqttValue(_Value):
    path: str | None = Field(default=None, description="JSON path in the payload (a.b[0]); None: the payload is the number.")


class MqttDevice(_Strict):
    topic: str = Field(min_length=1, description="Topic filter, wildcards + and # allowed.")
    entity_id: EntityId | None = None
    entity_from_topic: EntityPattern | None = None
    entity_path: str | None = Field(default=None, description="JSON path of the entity id in the payload.")
    time: Literal["receive", "payload"] = "receive"
    time_path: str | None = None
    time_unit: Literal["iso", "s", "ms", "ns"] = "iso"
    values: list[MqttValue] = Field(min_length=1, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _check(self) -> MqttDevice:
        _one_entity(self.entity_id, self.entity_from_topic, self.entity_path, "entity_from_topic", "entity_path")
        if self.time == "payload" and not self.time_path:
            raise ValueError("time: payload needs time_path")
        if sum(v.path is None for v in self.values) and len(self.values) > 1:
            raise ValueError("a plain numeric payload maps to one value; give every value a path")
        _unique([v.name for v in self.values])
        return self


class MqttSource(_Strict):
    type: Literal["mqtt"]
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_CHARS)
    host: str
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = None
    client_id: str | None = Field(default=None, description="Fixed id: the broker keeps the session (QoS 1 queue) across reconnects.")
    qos: Literal[0, 1, 2] = 1
    timeout_s: float = Field(default=10.0, gt=0)
    keepalive_s: int = Field(default=30, ge=5)
    reconnect: Reconnect = Reconnect()
    devices: list[MqttDevice] = Field(min_length=1)


# --- OPC UA --------------------------------------------------------------------------------


class OpcuaValue(_Value):
    node_id: str | None = Field(default=None, description="e.g. ns=2;s=Machine1.Temperature or ns=2;i=7")
    browse_path: str | None = Field(
        default=None, description="Slash-separated browse names with namespace index (2:Temperature); relative to the device."
    )

    @model_validator(mode="after")
    def _one_selector(self) -> OpcuaValue:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id, browse_path")
        return self


class OpcuaDevice(_Strict):
    entity_id: EntityId | None = None
    path: str = Field(default="0:Objects", description="Browse path of the device's node (or of the parent of many devices).")
    entity_from_path: EntityPattern | None = Field(
        default=None, description="One device per child of `path` whose browse name matches; the group is the entity id."
    )
    values: list[OpcuaValue] = Field(min_length=1, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _check(self) -> OpcuaDevice:
        _one_entity(self.entity_id, self.entity_from_path, None, "entity_from_path", "")
        if self.entity_from_path is not None and any(v.node_id for v in self.values):
            raise ValueError("with entity_from_path every value needs a browse_path relative to the device")
        _unique([v.name for v in self.values])
        return self


class OpcuaSecurity(_Strict):
    policy: Literal["Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"]
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path
    private_key: Path
    server_certificate: Path | None = None


class OpcuaSource(_Strict):
    type: Literal["opcua"]
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_CHARS)
    url: str = Field(pattern=r"^opc\.tcp://")
    username: str | None = None
    password: str | None = None
    security: OpcuaSecurity | None = None
    timeout_s: float = Field(default=4.0, gt=0)
    watchdog_s: float = Field(default=2.0, gt=0, description="Server-state read interval that detects a dead session.")
    reconnect: Reconnect = Reconnect()
    mode: Literal["subscribe", "poll"] = "subscribe"
    interval_s: float = Field(default=0.5, gt=0, description="Poll interval, or the subscription's publishing interval.")
    queue_size: int = Field(default=10, ge=1, description="Subscription: changes the server queues per node between publishes.")
    on_change: bool = Field(default=False, description="Poll: send a sample only when a value or its timestamp changed.")
    time: Literal["source", "server", "receive"] = "source"
    devices: list[OpcuaDevice] = Field(min_length=1)


# --- Modbus TCP ----------------------------------------------------------------------------

ModbusType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"]
_REGISTERS = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2, "float64": 4, "bool": 1}


class ModbusValue(_Value):
    table: Literal["holding", "input", "coil", "discrete"] = Field(default="holding", alias="register")
    address: int = Field(ge=0, le=65535)
    type: ModbusType = "uint16"
    byte_order: Literal["big", "little"] = Field(default="big", description="Byte order inside each 16-bit register.")
    word_order: Literal["big", "little"] = Field(default="big", description="Order of the registers of a 32/64-bit value.")

    @model_validator(mode="after")
    def _check(self) -> ModbusValue:
        if self.table in ("coil", "discrete") and self.type != "bool":
            raise ValueError(f"a {self.table} holds one bit: type must be bool (got {self.type})")
        if self.type == "string":
            raise ValueError("telemetry metrics are numbers: a string register can only name the entity (entity_from)")
        return self

    @property
    def registers(self) -> int:
        """16-bit registers (or bits) the value occupies."""
        return 1 if self.table in ("coil", "discrete") else _REGISTERS[self.type]


class ModbusString(_Strict):
    """A string in holding/input registers, read as the device's entity id."""

    table: Literal["holding", "input"] = Field(default="holding", alias="register")
    address: int = Field(ge=0, le=65535)
    length: int = Field(ge=1, le=250, description="Characters (two per register).")
    byte_order: Literal["big", "little"] = "big"


class ModbusDevice(_Strict):
    entity_id: EntityId | None = None
    entity_from: ModbusString | None = None
    unit_id: int = Field(default=1, ge=0, le=255)
    values: list[ModbusValue] = Field(min_length=1, max_length=MAX_METRICS)

    @model_validator(mode="after")
    def _check(self) -> ModbusDevice:
        _one_entity(self.entity_id, self.entity_from, None, "entity_from", "")
        _unique([v.name for v in self.values])
        return self


class ModbusSource(_Strict):
    type: Literal["modbus"]
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_CHARS)
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    timeout_s: float = Field(default=2.0, gt=0)
    reconnect: Reconnect = Reconnect()
    interval_s: float = Field(default=1.0, gt=0)
    on_change: bool = Field(default=False, description="Send a sample only when a value of the device changed.")
    max_block: int = Field(default=100, ge=1, le=125, description="Most registers read in one request.")
    devices: list[ModbusDevice] = Field(min_length=1)


# --- file replay ---------------------------------------------------------------------------


class FileValue(_Value):
    column: str | None = Field(default=None, description="Column name; default: the metric name.")


class FileSource(_Strict):
    type: Literal["file"]
    name: str = Field(pattern=_NAME, max_length=MAX_NAME_CHARS)
    path: Path
    format: Literal["csv", "parquet", "auto"] = "auto"
    entity_column: str | None = None
    entity_id: EntityId | None = None
    time_column: str | None = Field(default=None, description="None: receive time.")
    time_unit: Literal["iso", "s", "ms", "ns"] = "iso"
    seq_column: str | None = Field(default=None, description="Take seq from the file (re-replay is idempotent) instead of the store.")
    values: list[FileValue] = Field(default_factory=list, description="Empty: every other numeric column, unscaled.")
    rate: float = Field(default=0.0, ge=0, description="Samples per second; 0 = as fast as possible.")
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> FileSource:
        _one_entity(self.entity_id, self.entity_column, None, "entity_column", "")
        _unique([v.name for v in self.values])
        return self

    @property
    def file_format(self) -> str:
        return ("parquet" if self.path.suffix.lower() in (".parquet", ".pq") else "csv") if self.format == "auto" else self.format


# --- the file --------------------------------------------------------------------------------

Source = Annotated[MqttSource | OpcuaSource | ModbusSource | FileSource, Field(discriminator="type")]


class BufferConfig(_Strict):
    """The local disk buffer between sources and Kafka (also holds the sequence numbers)."""

    path: Path = Path(".twinstream/connectors.sqlite")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    overflow: Literal["drop_oldest", "block"] = Field(
        default="drop_oldest", description="Full buffer: drop the oldest samples (counted), or hold the sources back."
    )


class KafkaConfig(_Strict):
    topic: str | None = Field(default=None, description="Default: <namespace>.telemetry from the settings.")
    batch: int = Field(default=500, ge=1, le=100_000, description="Samples sent per round trip.")
    request_timeout_s: float = Field(default=10.0, gt=0)
    reconnect: Reconnect = Reconnect(initial_s=0.5, max_s=5.0)


class ConnectorsConfig(_Strict):
    buffer: BufferConfig = BufferConfig()
    kafka: KafkaConfig = KafkaConfig()
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    sources: list[Source] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_sources(self) -> ConnectorsConfig:
        _unique([s.name for s in self.sources], what="source name")
        return self


def _one_entity(constant: object, first: object, second: object, first_name: str, second_name: str) -> None:
    given = [x for x in (constant, first, second) if x is not None]
    if len(given) != 1:
        names = ", ".join(n for n in ("entity_id", first_name, second_name) if n)
        raise ValueError(f"give exactly one of {names}")


def _unique(names: list[str], what: str = "metric name") -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


def _describe(raw: dict[str, Any], exc: ValidationError) -> str:
    """One line per error: ``source 'NAME' (TYPE): field.path: message``."""
    sources = raw.get("sources") if isinstance(raw.get("sources"), list) else []
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = "connectors file"
        if len(loc) >= 2 and loc[0] == "sources" and isinstance(loc[1], int):
            entry = sources[loc[1]] if loc[1] < len(sources) and isinstance(sources[loc[1]], dict) else {}
            where = f"source {entry.get('name', f'#{loc[1]}')!r} ({entry.get('type', '?')})"
            loc = loc[2:]
            if loc and loc[0] == entry.get("type"):  # the discriminator's tag adds nothing
                loc = loc[1:]
        field = ".".join(str(part) for part in loc) or "(source)"
        if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
            field = "type"
        lines.append(f"{where}: {field}: {error['msg']}")
    return "\n".join(lines)


def parse_config(raw: Any) -> ConnectorsConfig:
    """Validate a loaded YAML/JSON document; :class:`ConfigError` names source and field."""
    if not isinstance(raw, dict):
        raise ConfigError("connectors file: the top level must be a mapping with `sources:`")
    try:
        return ConnectorsConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(raw, exc)) from None


def load_config(path: Path) -> ConnectorsConfig:
    """Read and validate a connectors YAML file."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return parse_config(raw)
