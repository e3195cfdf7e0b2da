"""The connectors file: valid examples load, invalid ones fail naming the source and the field, nothing starts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.connectors.config import ConfigError, load_config, parse_config

MODBUS = {"type": "modbus", "name": "presses", "host": "127.0.0.1",
          "devices": [{"entity_id": "press-1", "values": [{"name": "temp", "address": 0, "type": "float32"}]}]}
MQTT = {"type": "mqtt", "name": "line1", "host": "127.0.0.1",
        "devices": [{"topic": "plant/+/t", "entity_from_topic": {"pattern": "plant/(?P<entity>[^/]+)/"},
                     "values": [{"name": "t", "path": "temp"}]}]}
OPCUA = {"type": "opcua", "name": "ua", "url": "opc.tcp://127.0.0.1:4840",
         "devices": [{"entity_id": "m1", "values": [{"name": "t", "node_id": "ns=2;i=7"}]}]}
FILE = {"type": "file", "name": "hist", "path": "data.csv", "entity_column": "unit", "time_column": "t"}


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return str(info.value)


def test_every_protocol_loads_with_defaults() -> None:
    config = parse_config({"sources": [MODBUS, MQTT, OPCUA, FILE]})
    assert [s.type for s in config.sources] == ["modbus", "mqtt", "opcua", "file"]
    assert config.sources[1].qos == 1 and config.sources[2].mode == "subscribe"
    assert config.buffer.overflow == "drop_oldest"
    assert config.sources[3].file_format == "csv"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["devices"][0]["values"][0].update(address=70000), "source 'presses' (modbus): devices.0.values.0.address"),
        (lambda s: s["devices"][0]["values"][0].update(type="float128"), "source 'presses' (modbus): devices.0.values.0.type"),
        (lambda s: s["devices"][0]["values"][0].update(register="coil"), "a coil holds one bit"),
        (lambda s: s["devices"][0]["values"][0].update(byte_order="middle"), "devices.0.values.0.byte_order"),
        (lambda s: s["devices"][0].pop("entity_id"), "give exactly one of entity_id, entity_from"),
        (lambda s: s.update(reconnect={"initial_s": 5, "max_s": 1}), "source 'presses' (modbus): reconnect: Value error, max_s"),
        (lambda s: s.update(hots="x"), "source 'presses' (modbus): hots: Extra inputs are not permitted"),
        (lambda s: s["devices"][0]["values"].append({"name": "temp", "address": 4}), "duplicate metric name 'temp'"),
    ],
)
def test_invalid_modbus_source_names_source_and_field(change, expected: str) -> None:
    source = yaml.safe_load(yaml.safe_dump(MODBUS))
    change(source)
    assert expected in error_of({"sources": [MQTT, source]})


def test_invalid_other_sources() -> None:
    bad_pattern = yaml.safe_load(yaml.safe_dump(MQTT))
    bad_pattern["devices"][0]["entity_from_topic"]["pattern"] = "plant/([^/]+)/"
    assert "source 'line1' (mqtt): devices.0.entity_from_topic.pattern" in error_of({"sources": [bad_pattern]})
    assert "(?P<entity>" in error_of({"sources": [bad_pattern]})
    both = yaml.safe_load(yaml.safe_dump(OPCUA))
    both["devices"][0]["values"][0]["browse_path"] = "2:T"
    assert "source 'ua' (opcua): devices.0.values.0: Value error, give exactly one of node_id, browse_path" in error_of({"sources": [both]})
    assert "source 'ua' (opcua): url" in error_of({"sources": [{**OPCUA, "url": "http://x"}]})
    assert "source 'x' (?): type: Unable to extract tag" in error_of({"sources": [{"name": "x"}]})
    assert "source 'x' (kafka): type: Input tag 'kafka'" in error_of({"sources": [{"name": "x", "type": "kafka"}]})
    assert "duplicate source name 'line1'" in error_of({"sources": [MQTT, MQTT]})
    assert "connectors file: sources" in error_of({"sources": []})


def test_cli_check_and_refusal_to_start(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    buffer_path = tmp_path / "state" / "buffer.sqlite"
    good.write_text(yaml.safe_dump({"buffer": {"path": str(buffer_path)}, "sources": [MODBUS, MQTT]}))
    runner = CliRunner()
    result = runner.invoke(app, ["connect", "--check", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "presses" in result.output
    bad = tmp_path / "bad.yaml"
    source = yaml.safe_load(yaml.safe_dump(MODBUS))
    source["devices"][0]["values"][0]["address"] = -1
    bad.write_text(yaml.safe_dump({"buffer": {"path": str(buffer_path)}, "sources": [source]}))
    result = runner.invoke(app, ["connect", "--config", str(bad), "--broker", "kafka://127.0.0.1:1"])
    assert result.exit_code == 2
    assert "source 'presses' (modbus): devices.0.values.0.address" in result.output
    assert not buffer_path.exists(), "nothing started: no buffer created"
    assert load_config(good).sources[0].name == "presses"


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(broken)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "connectors.md"


def test_every_example_in_the_docs_is_valid() -> None:
    text = DOCS.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```yaml\n")[1:]]
    kinds = set()
    for block in blocks:
        config = parse_config(yaml.safe_load(block))
        kinds |= {s.type for s in config.sources}
    assert kinds == {"mqtt", "opcua", "modbus", "file"}, "one complete example per protocol"


def test_docs_throughput_table_is_the_benchmark_result() -> None:
    import json

    results = json.loads((DOCS.parents[1] / "benchmarks" / "results" / "connectors.json").read_text())
    text = DOCS.read_text()
    assert results["lost"] == 0
    for protocol in ("mqtt", "opcua", "modbus", "file"):
        for key in ("values_per_s", "bare_client_values_per_s"):
            assert f"{round(results[protocol][key]):,}" in text, (protocol, key)
    for key in ("puts_per_s", "puts_per_s_without_validation"):
        assert f"{round(results['buffer'][key]):,}" in text, key
