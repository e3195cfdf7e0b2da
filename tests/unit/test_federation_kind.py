"""A federated round for a declared kind: two pump sites train the kind's prior on their own tables, a pump twin loads it.

No raw data leaves a site: every reply holds model-shaped arrays, the moments of the
kind's features, or scalar and histogram metrics (the same check as the C-MAPSS round).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flower_support import InProcessGrid

from twinstream.federation import client_app
from twinstream.federation.server_app import run_federated, write_and_publish
from twinstream.federation.server_config import RoundConfig, run_config_overrides
from twinstream.federation.site_history import SiteHistoryError, load_kind_site
from twinstream.federation.strategies import StrategyConfig
from twinstream.models.federated import initial_arrays, kind_layout
from twinstream.models.kind_prior import load_kind_prior
from twinstream.models.prior import PriorMismatchError
from twinstream.schemas.twin_spec import load_spec, parse_spec
from twinstream.streams.kinds import WorkerKinds

SPEC = """kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow}, {name: pressure}, {name: temp}]
    tasks: [{type: label, target: rul}]
    learner: {family: prior-twin}
    prior: {registry: pump-rul}
"""


def pump_rows(pumps: range, seed: int, life: tuple[int, int]) -> list[str]:
    """Run-to-failure pumps: flow falls, pressure and temperature rise as each pump wears out (own offsets, noise)."""
    rng = np.random.default_rng(seed)
    lines = []
    for p in pumps:
        length = int(rng.integers(*life))
        offset = rng.normal(0.0, 1.0, 3)
        for t in range(1, length + 1):
            wear = (t / length) ** 2
            flow = 100.0 - 20.0 * wear + 2.0 * offset[0] + rng.normal(0.0, 0.5)
            pressure = 5.0 + 2.0 * wear + 0.2 * offset[1] + rng.normal(0.0, 0.05)
            temp = 60.0 + 10.0 * wear + offset[2] + rng.normal(0.0, 0.3)
            lines.append(f"pump-{p},{t},{flow:.3f},{pressure:.4f},{temp:.3f}")
    return lines


def write_site(tmp_path: Path, name: str, pumps: range, seed: int, life: tuple[int, int]) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text("\n".join(["pump,t,flow,pressure,temp", *pump_rows(pumps, seed, life)]) + "\n")
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pumps")
    spec = tmp / "twins.yaml"
    spec.write_text(SPEC)
    return {
        "spec": spec,
        "a": write_site(tmp, "site-a", range(0, 6), 1, (60, 100)),
        "b": write_site(tmp, "site-b", range(6, 12), 2, (100, 160)),
    }


def node(fleet: dict[str, Path], site: str) -> dict[str, object]:
    return {
        "csv": str(fleet[site]),
        "entity-column": "pump",
        "time-column": "t",
        "rul-from-end": True,
        "spec": str(fleet["spec"]),
        "kind": "pump",
    }


def round_config(fleet: dict[str, Path], rounds: int = 12) -> RoundConfig:
    kind = load_spec(fleet["spec"]).kinds[0]
    overrides = run_config_overrides(
        StrategyConfig(name="fedavg", fraction_evaluate=1.0), num_server_rounds=rounds, start_from="init", publish=False
    )
    return RoundConfig.from_run_config({**overrides, "kind-spec": kind.model_dump_json(), "target-cap": 80.0})


def test_round_config_of_a_kind_publishes_as_its_registry_family(fleet: dict[str, Path]) -> None:
    cfg = round_config(fleet)
    assert cfg.family == "pump-rul"
    layout = cfg.layout()
    assert layout.prior_inputs == ("age", "flow_raw", "pressure_raw", "temp_raw") and layout.cap == 80.0


def test_a_site_computes_its_kinds_features_and_refuses_another_schema(fleet: dict[str, Path], tmp_path: Path) -> None:
    data = load_kind_site(fleet["a"], "pump", "t", fleet["spec"], rul_from_end=True, cap=80.0)
    assert data.x.shape[1] == len(data.features.names) == 13 and data.y.max() == 80.0
    other = tmp_path / "other.yaml"
    other.write_text(SPEC.replace("{name: temp}", "{name: vibration}"))
    schema = kind_layout(load_spec(other).kinds[0]).schema
    with pytest.raises(SiteHistoryError, match="another feature schema"):
        load_kind_site(fleet["a"], "pump", "t", fleet["spec"], rul_from_end=True, expected_schema=schema)


def test_two_pump_sites_train_a_prior_that_a_pump_twin_loads(fleet: dict[str, Path], tmp_path: Path) -> None:
    cfg = round_config(fleet)
    grid = InProcessGrid(client_app.app, [node(fleet, "a"), node(fleet, "b")])
    outcome = run_federated(grid, cfg)
    assert outcome.sites == 2
    # only model-shaped arrays, the kind's feature moments and metrics leave a site
    shapes = [a.shape for a in initial_arrays(0, cfg.layout())]
    n_features = len(cfg.layout().names)
    for _, message_type, content in grid.replies:
        assert not content.config_records, message_type
        for name, record in content.array_records.items():
            got = [a.shape for a in record.to_numpy_ndarrays()]
            assert got == (shapes if name == "arrays" else [(n_features,)] * 3), (message_type, name)
    # the federated model learned: its prior head beats predicting the mean label
    rows = [client_app.site_data(node(fleet, s), {"feature-schema": cfg.layout().schema, "target-cap": 80.0}) for s in "ab"]
    y = np.concatenate([d.y for d in rows])
    assert outcome.metrics["federated_rmse_prior"] < 0.8 * float(np.std(y))

    artifact, version = write_and_publish(outcome, cfg, run_id=7, out_dir=tmp_path, env={})
    prior = load_kind_prior(artifact, load_spec(fleet["spec"]).kinds[0])
    assert prior.manifest.family == "pump-rul" and prior.manifest.target == "rul" and prior.manifest.target_cap == 80.0
    assert prior.manifest.feature_schema.params["metrics"] == ["flow", "pressure", "temp"]
    with pytest.raises(PriorMismatchError, match="feature schema"):
        load_kind_prior(artifact, parse_spec(SPEC.replace("{name: temp}", "{name: vibration}")).kinds[0])

    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC.replace("{registry: pump-rul}", f"{{artifact: {artifact}}}"))
    kinds = WorkerKinds.load(str(spec))
    assert kinds is not None
    kind = kinds.match("pump-99", None)
    assert kind is not None
    twin = kinds.new_twin("pump-99", kind)
    assert twin.learner.prior_version == version  # type: ignore[union-attr]
    worn = twin.step(1, {"flow": 80.5, "pressure": 7.0, "temp": 70.0}, None)
    fresh_twin = kinds.new_twin("pump-98", kind)
    fresh = fresh_twin.step(1, {"flow": 100.0, "pressure": 5.0, "temp": 60.0}, None)
    assert worn.value < fresh.value  # the fleet's wear pattern, learned across both sites


def test_round_command_refuses_a_kind_without_one_label_task(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from twinstream.cli import app

    spec = tmp_path / "twins.yaml"
    spec.write_text("kinds: [{name: pump, metrics: [{name: flow}], tasks: [{type: forecast, metric: flow, horizon: 2}]}]\n")
    result = CliRunner().invoke(app, ["federation", "round", "--insecure", "--spec", str(spec), "--kind", "pump"])
    assert result.exit_code == 2 and "0 label tasks" in " ".join(result.output.split())
