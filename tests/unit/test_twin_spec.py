"""twins.yaml: the example specs load, matching rules, and bad files name their line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from twinstream.schemas.twin_spec import KindRegistry, SpecError, load_spec, parse_spec

ROOT = Path(__file__).resolve().parents[2]

TWO_KINDS = """
kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: pressure}, {name: temp, range: [0, 120]}]
    tasks: [{type: forecast, metric: flow, horizon: 3}]
  - name: anything
    match: {entity_id: ["*"]}
    tasks: [{type: anomaly, metric: x}]
"""


@pytest.mark.parametrize("name", ["cmapss", "nab"])
def test_example_specs_load(name: str) -> None:
    spec = load_spec(ROOT / "examples" / name / "twins.yaml")
    assert spec.kinds and all(k.tasks for k in spec.kinds)


def test_cmapss_example_matches_the_replay_engines() -> None:
    registry = KindRegistry.from_file(ROOT / "examples" / "cmapss" / "twins.yaml")
    assert registry.match("fd001-train-001").name == "turbofan"
    assert registry.match("fd001-test-100").name == "turbofan"
    assert registry.match("pump-0") is None  # -> unknown_kind dead letter
    assert registry.match("pump-0", "turbofan").name == "turbofan"  # the kind field wins


def test_first_matching_kind_wins_and_catch_all() -> None:
    registry = KindRegistry(parse_spec(TWO_KINDS))
    assert registry.match("pump-7").name == "pump"
    assert registry.match("fan-1").name == "anything"
    assert registry.match("fan-1", "nope") is None  # a declared kind field must name a kind


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kinds:\n  - name: pump\n    tasks: [{type: forecast, metric: flow, horizon: 0}]\n", ":3: kinds[0].tasks[0].horizon:"),
        ("kinds:\n  - name: pump\n    tasks:\n      - {type: label, target: rul}\n    colour: red\n", ":5: kinds[0].colour: Extra inputs"),
        ("kinds:\n  - name: pump\n    metrics:\n      - {name: t, range: [5, 1]}\n    tasks: [{type: label, target: rul}]\n",
         ":4: kinds[0].metrics[0]:"),
        ("kinds:\n  - name: pump\n    metrics: [{name: flow}]\n    tasks: [{type: forecast, metric: speed, horizon: 2}]\n",
         ":2: kinds[0]: Value error, task forecast names metric 'speed'"),
        ("kinds:\n  - name: pump\n    tasks: [{type: label, target: rul}]\n    prior: {path: a, registry: b}\n", ":4: kinds[0].prior:"),
        ("kinds: [\n", "not valid YAML"),
        ("kinds: []\n", ":1: kinds:"),
    ],
)
def test_bad_spec_names_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text, "twins.yaml")
    assert str(info.value).startswith("twins.yaml"), str(info.value)
    assert expected in str(info.value), str(info.value)


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "twins.yaml")


def test_two_kinds_cannot_answer_to_the_same_kind_field() -> None:
    text = ("kinds:\n  - {name: a, match: {kind: pump}, tasks: [{type: label, target: y}]}\n"
            "  - {name: pump, tasks: [{type: label, target: y}]}\n")
    with pytest.raises(SpecError, match="same kind field"):
        parse_spec(text)
