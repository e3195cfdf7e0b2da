"""Priors from a user's own history: ``prior train --spec --kind --csv``, the artifact it writes, the domain it records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.datasets.cmapss import load_subset
from twinstream.datasets.history import load_history
from twinstream.models.domain import DomainBounds
from twinstream.models.features import RulFeatures, feature_names
from twinstream.models.generic_features import GenericFeatures
from twinstream.models.kind_twin import TwinFactory
from twinstream.models.prior import PriorMismatchError, bundled_prior_dir, load_prior
from twinstream.models.prior_history import load_kind_prior
from twinstream.models.prior_train import engine_features, training_domain
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest
from twinstream.schemas.twin_spec import KindRegistry, load_spec

SPEC = """\
version: 1
kinds:
  - name: pump
    match: {entity_id: ["pump-*"]}
    metrics: [{name: flow, unit: m3/h}, {name: temp, unit: degC}]
    tasks:
      - {type: label, target: rul}
      - {type: forecast, metric: temp, horizon: 3, max_season: 64}
      - {type: anomaly, metric: flow}
  - name: fan
    match: {entity_id: ["fan-*"]}
    metrics: [{name: temp}]
    tasks: [{type: forecast, metric: temp, horizon: 2, max_season: 0}]
"""

runner = CliRunner()


def said(result) -> str:  # noqa: ANN001
    """The command's output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def write_history(path: Path, pumps: int = 6, seed: int = 0) -> Path:
    """Run-to-failure pumps: flow falls and temp rises with wear, temp has a 24-sample cycle; some flow cells empty."""
    rng = np.random.default_rng(seed)
    lines = ["pump,time,flow,temp,rul"]
    for p in range(pumps):
        life = int(rng.integers(70, 130))
        for t in range(life):
            wear = t / life
            flow = "" if t % 13 == 4 else f"{100 - 25 * wear ** 2 + rng.normal(0, 1):.3f}"
            temp = 50 + 12 * wear ** 2 + 3 * math.sin(2 * math.pi * t / 24) + rng.normal(0, 0.3)
            lines.append(f"pump-{p},{t},{flow},{temp:.3f},{life - 1 - t}")
    body = lines[:1] + lines[1:][::-1]  # rows in reverse time order: the loader sorts by the time column
    path.write_text("\n".join(body) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("history")
    spec = root / "twins.yaml"
    spec.write_text(SPEC)
    csv = write_history(root / "history.csv")
    out = root / "prior"
    result = runner.invoke(app, ["prior", "train", "--spec", str(spec), "--kind", "pump", "--csv", str(csv),
                                 "--entity-column", "pump", "--time-column", "time", "--out", str(out),
                                 "--epochs", "3", "--folds", "3", "--hidden", "16", "--prior-hidden", "8"])
    assert result.exit_code == 0, result.output
    return spec, csv, out


def test_history_prior_is_a_verified_artifact_pinning_the_kinds_features(trained: tuple[Path, Path, Path]) -> None:
    spec, csv, out = trained
    manifest = PriorManifest.model_validate_json((out / MANIFEST_FILE).read_bytes())
    kind = load_spec(spec).kinds[0]
    assert manifest.feature_schema == GenericFeatures(["flow", "temp"]).schema()
    assert manifest.family == "pump" and manifest.target == "rul" and manifest.forecast_tasks == ["temp@3"]
    assert manifest.training_data == {"history.csv": __import__("hashlib").sha256(csv.read_bytes()).hexdigest()}
    assert manifest.prior_inputs == ["age", "flow_raw", "temp_raw"]
    assert manifest.domain is not None and manifest.domain["names"] == manifest.feature_schema.names
    loaded = load_kind_prior(out, kind)
    assert loaded.label is not None and set(loaded.forecasts) == {"temp@3"}
    assert loaded.forecasts["temp@3"].train_mae_scaled < loaded.forecasts["temp@3"].train_persistence_mae_scaled
    assert loaded.forecasts["temp@3"].season == 24  # learned from the history itself, no labels
    # the prior reads the kind's features and predicts within its labels' range
    history = load_history(csv, "pump", "time", ["flow", "temp"], "rul")
    fx = GenericFeatures(["flow", "temp"])
    vectors = [fx.update_vector(row) for row in history["pump-0"].rows()]
    preds = loaded.label.predict_many(np.array(vectors))
    assert np.isfinite(preds).all() and preds.min() >= 0.0
    # training features are in the recorded domain; a pump far outside is not
    assert np.mean([loaded.domain.check(v)[0] for v in vectors]) > 0.9
    far = list(vectors[-1])
    for name in ("flow_raw", "flow_ew", "temp_raw", "temp_ew"):
        far[manifest.feature_schema.names.index(name)] += 1e4
    assert loaded.domain.check(far)[0] is False


def test_history_prior_is_refused_for_another_kind_and_when_tampered(trained: tuple[Path, Path, Path], tmp_path: Path) -> None:
    spec, _, out = trained
    fan = load_spec(spec).kinds[1]
    with pytest.raises(PriorMismatchError, match="feature schema mismatch"):
        load_kind_prior(out, fan)
    shown = runner.invoke(app, ["prior", "show", str(out), "--spec", str(spec), "--kind", "fan"])
    assert shown.exit_code == 1 and "feature schema mismatch" in said(shown)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    blob = bytearray((copy / "weights.npz").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (copy / "weights.npz").write_bytes(bytes(blob))
    with pytest.raises(PriorMismatchError, match="sha256 mismatch"):
        load_kind_prior(copy, load_spec(spec).kinds[0])


def test_forecast_kind_learns_from_the_series_itself_and_parquet_reads_the_same(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    rng = np.random.default_rng(1)
    rows = [(f"fan-{e}", t, float(20 + e + math.sin(t / 5.0) + rng.normal(0, 0.05)) if t % 31 else None)
            for e in range(3) for t in range(300)]
    parquet = tmp_path / "fans.parquet"
    pq.write_table(pa.table({"fan": [r[0] for r in rows], "ts": [r[1] for r in rows], "temp": [r[2] for r in rows]}), parquet)
    out = tmp_path / "fan-prior"
    result = runner.invoke(app, ["prior", "train", "--spec", str(spec), "--kind", "fan", "--csv", str(parquet),
                                 "--entity-column", "fan", "--time-column", "ts", "--out", str(out)])
    assert result.exit_code == 0, result.output
    kind = load_spec(spec).kinds[1]
    prior = load_kind_prior(out, kind)
    assert prior.label is None and list(prior.forecasts) == ["temp@2"]
    assert prior.manifest.target == "temp@2" and prior.domain is not None
    twin = TwinFactory(KindRegistry(load_spec(spec)), forecast_priors={"fan": prior.forecasts}).new("fan-9")
    preds = [twin.step({"temp": 21.0 + math.sin(t / 5.0)}, t)[0] for t in range(40)]
    assert preds[-1].prior_version == "fan-v1" and math.isfinite(preds[-1].value)


def test_label_kind_without_labels_stops_with_a_clear_message(tmp_path: Path) -> None:
    spec = tmp_path / "twins.yaml"
    spec.write_text(SPEC)
    csv = tmp_path / "h.csv"
    csv.write_text("pump,time,flow,temp\npump-1,1,1.0,2.0\n")
    common = ["prior", "train", "--spec", str(spec), "--csv", str(csv), "--entity-column", "pump", "--time-column", "time",
              "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*common, "--kind", "pump"])
    assert result.exit_code == 2 and "no column rul" in said(result)
    result = runner.invoke(app, [*common])
    assert result.exit_code == 2 and "choose one with --kind" in said(result)
    result = runner.invoke(app, [*common, "--kind", "pump", "--rul-from-end"])
    assert result.exit_code == 2 and "labelled rows" in said(result)
    assert not (tmp_path / "out").exists()


def test_bundled_prior_records_the_domain_of_its_fd001_training_features() -> None:
    prior = load_prior(bundled_prior_dir(), RulFeatures().schema())
    domain = prior.manifest.domain
    assert domain is not None and domain["names"] == feature_names()
    x, _, _ = engine_features(load_subset("FD001"))
    assert domain == json.loads(json.dumps(training_domain(x, feature_names()).to_manifest()))
    bounds = DomainBounds.from_manifest(domain)
    assert np.mean([bounds.check(row)[0] for row in x[::7]]) > 0.97
    # an engine whose sensors sit far outside the fleet's range is out of the prior's domain
    fx = RulFeatures()
    engine = [r for r in load_subset("FD001").test if r.unit == 1]
    features = [fx.update({k: v + 50.0 for k, v in r.sensors.items()}) for r in engine]
    assert not any(bounds.check_named(f)[0] for f in features)


def test_a_manifest_without_domain_still_loads(tmp_path: Path) -> None:
    copy = tmp_path / "old"
    copy.mkdir()
    for f in bundled_prior_dir().iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    data = json.loads((copy / MANIFEST_FILE).read_text())
    data.pop("domain")
    data.pop("forecast_tasks")
    (copy / MANIFEST_FILE).write_text(json.dumps(data))
    prior = load_prior(copy, RulFeatures().schema(), cache=False)
    assert prior.manifest.domain is None and prior.manifest.forecast_tasks == []
