"""A kind's prior trained on the user's own history, loaded by the worker: from a CSV to live twins.

The history is made here: pumps whose flow follows a daily-like cycle (period 24) around
each pump's own level, and whose pressure falls as they wear out (run to failure, so the
remaining life is a label). ``twinstream prior train --spec --kind --csv`` writes the
artifact; a TwinProcessor whose spec names it (``prior: {artifact: DIR}``) must serve
the pumps from it: label predictions and forecasts carry the prior's version, and a new
pump's first forecasts are better than those of a twin without the prior.
"""

from __future__ import annotations

import csv
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.schemas.prediction import Prediction
from twinstream.schemas.twin_spec import SpecError
from twinstream.settings import Settings
from twinstream.streams.processor import Record, TwinProcessor

NOW = datetime(2026, 6, 1, tzinfo=UTC)
PERIOD = 24
SPEC = """
kinds:
  - name: pump
    match: {{entity_id: ["pump-*"]}}
    metrics: [{{name: flow}}, {{name: pressure}}]
    tasks:
      - {{type: forecast, metric: flow, horizon: 2, season: {period}}}
      - {{type: label, target: rul}}
    learner: {{family: prior-twin}}
{prior}"""


def flow(pump: int, t: int, rng: random.Random) -> float:
    level, amp = 40.0 + 3.0 * pump, 8.0 + 0.5 * pump
    return level + amp * math.sin(2 * math.pi * t / PERIOD) + rng.gauss(0.0, 0.3)


def pressure(t: int, life: int, rng: random.Random) -> float:
    return 5.0 - 2.0 * (t / life) ** 2 + rng.gauss(0.0, 0.05)


def write_history(path: Path, pumps: int = 8, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pump", "time", "flow", "pressure"])
        for p in range(pumps):
            life = 150 + 20 * p
            for t in range(life):
                w.writerow([f"pump-{p}", t, f"{flow(p, t, rng):.4f}", f"{pressure(t, life, rng):.4f}"])


def write_spec(tmp: Path, prior: str = "") -> Path:
    path = tmp / "twins.yaml"
    path.write_text(SPEC.format(period=PERIOD, prior=prior))
    return path


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``twinstream prior train --spec --kind pump --csv`` on the pumps' history (the CLI itself)."""
    tmp = tmp_path_factory.mktemp("pump-prior")
    write_history(tmp / "history.csv")
    spec = write_spec(tmp)
    out = tmp / "priors" / "pump"
    result = CliRunner().invoke(app, [
        "prior", "train", "--spec", str(spec), "--kind", "pump", "--csv", str(tmp / "history.csv"),
        "--entity-column", "pump", "--time-column", "time", "--rul-from-end", "--cap", "125",
        "--out", str(out), "--epochs", "20", "--folds", "3", "--hidden", "16", "--prior-hidden", "8"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file()
    return out


def message(entity: str, seq: int, metrics: dict, targets: dict | None = None) -> Record:
    body = {"entity_id": entity, "event_time": (NOW - timedelta(minutes=10_000 - seq)).isoformat(), "seq": seq,
            "metrics": metrics, "targets": targets or {}}
    return Record(entity.encode(), orjson.dumps(body), "twinstream.telemetry", 0, seq)


def processor(spec: Path) -> TwinProcessor:
    return TwinProcessor(Settings(twins_spec=str(spec)), {}.get, clock=lambda: NOW)


def new_pump(n: int = 96, seed: int = 7) -> list[Record]:
    """A pump the prior never saw (its own level and amplitude), no labels."""
    rng = random.Random(seed)
    return [message("pump-42", t, {"flow": flow(5, t, rng) + 4.0, "pressure": pressure(t, 200, rng)}) for t in range(n)]


def early_forecast_mae(proc: TwinProcessor, records: list[Record], first: int = 72) -> float:
    """MAE of the forecasts made from the first ``first`` samples, against the sample they forecast."""
    preds = [Prediction.model_validate_json(v) for _, v in proc.process(records).predictions]
    truth = {orjson.loads(r.value)["seq"]: orjson.loads(r.value)["metrics"]["flow"] for r in records}
    errors = [abs(p.value - truth[p.target_seq]) for p in preds
              if p.task == "forecast" and p.seq < first and p.target_seq in truth]
    assert len(errors) > first // 2
    return sum(errors) / len(errors)


def test_worker_serves_a_kind_from_its_own_history_prior(tmp_path: Path, artifact: Path) -> None:
    version = orjson.loads((artifact / "manifest.json").read_bytes())["family"] + "-v1"
    spec = write_spec(tmp_path, f"    prior: {{artifact: {artifact}}}\n")
    with_prior = processor(spec)
    assert set(with_prior.kinds.priors) == {"pump"}
    preds = [Prediction.model_validate_json(v) for _, v in with_prior.process(new_pump(30)).predictions]
    by_task = {p.task: p for p in preds}
    assert set(by_task) == {"forecast", "label"}
    assert all(p.prior_version == version for p in preds), {p.prior_version for p in preds}
    assert all(p.kind == "pump" for p in preds)
    label = by_task["label"]
    assert 0.0 <= label.value <= 125.0 and label.lower <= label.value <= label.upper


def test_prior_forecasts_beat_a_new_twin_from_the_first_samples(tmp_path: Path, artifact: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with_prior = processor(write_spec(tmp_path / "a", f"    prior: {{artifact: {artifact}}}\n"))
    without = processor(write_spec(tmp_path / "b"))
    records = new_pump()
    mae_prior, mae_new = early_forecast_mae(with_prior, records), early_forecast_mae(without, records)
    assert mae_prior < 0.8 * mae_new, (mae_prior, mae_new)


def test_relative_artifact_is_read_from_the_spec_folder(tmp_path: Path, artifact: Path) -> None:
    import shutil

    shutil.copytree(artifact, tmp_path / "priors" / "pump")
    proc = processor(write_spec(tmp_path, "    prior: {path: priors/pump}\n"))
    assert proc.kinds.priors["pump"].manifest.family == "pump"


@pytest.mark.parametrize("damage", ["missing", "altered", "foreign"])
def test_bad_artifact_stops_the_worker_naming_kind_and_file(tmp_path: Path, artifact: Path, damage: str) -> None:
    import shutil

    target = tmp_path / "priors" / "pump"
    if damage != "missing":
        shutil.copytree(artifact, target)
    if damage == "altered":
        with (target / "weights.npz").open("ab") as f:
            f.write(b"\0")
    if damage == "foreign":  # a prior of another kind (other metrics) is refused for this one
        spec_text = SPEC.replace("{{name: pressure}}", "{{name: temp}}")
        (tmp_path / "twins.yaml").write_text(spec_text.format(period=PERIOD, prior="    prior: {artifact: priors/pump}\n"))
        spec = tmp_path / "twins.yaml"
    else:
        spec = write_spec(tmp_path, "    prior: {artifact: priors/pump}\n")
    with pytest.raises(SpecError) as err:
        processor(spec)
    assert "'pump'" in str(err.value) and str(target) in str(err.value)


def test_unknown_bundled_prior_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such prior is bundled"):
        processor(write_spec(tmp_path, "    prior: {bundled: nope}\n"))
