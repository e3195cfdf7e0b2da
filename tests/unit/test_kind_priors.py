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
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from twinstream.cli import app
from twinstream.models.prior_twin import PriorTwin
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


# -- out of the prior's domain, and in drift alarm: the twin leans on what it knows itself --------------------

GROUP = ("s2", "s3", "s4", "s11")  # rise with wear; shifted by 3 fleet standard deviations below


def _shifted_engine(unit: int) -> list[tuple[dict[str, float], float]]:
    """(sensors with GROUP shifted, true RUL) per cycle of an FD001 test engine."""
    from twinstream.datasets.cmapss import load_subset

    fd = load_subset("FD001")
    sd = {s: statistics.pstdev([r.sensors[s] for r in fd.train]) for s in GROUP}
    rows = [r for r in fd.test if r.unit == unit]
    last = rows[-1].cycle
    return [({k: v + (3.0 * sd[k] if k in GROUP else 0.0) for k, v in r.sensors.items()},
             float(fd.test_rul[unit] + last - r.cycle)) for r in rows]


def _run(twin: PriorTwin, cycles: list[tuple[dict[str, float], float]], label_every: int = 0) -> tuple[float, float]:
    """(RMSE against min(true RUL, 125), share of cycles answered in fallback)."""
    err, fallbacks = [], 0
    for i, (sensors, rul) in enumerate(cycles):
        x = twin.observe_one(sensors)
        err.append((twin.predict_one(x) - min(rul, 125.0)) ** 2)
        fallbacks += twin.fallback
        if label_every and i % label_every == 0:
            twin.learn_one(x, rul)
    return math.sqrt(sum(err) / len(err)), fallbacks / len(cycles)


def test_fallback_acts_on_every_out_of_domain_cycle_and_beats_the_heads() -> None:
    cycles = _shifted_engine(31)
    shipped, heads = PriorTwin(), PriorTwin(mask_outside_above=1.0, abandon_prior_above=1.0, alarm_fallback=False)
    out_of_domain = 0
    for sensors, _ in cycles:
        shipped.observe_one(sensors)
        out_of_domain += not shipped.domain_state[0]
    rmse_shipped, share = _run(PriorTwin(), cycles)
    rmse_heads, none = _run(heads, cycles)
    assert none == 0.0 and share >= out_of_domain / len(cycles) > 0.5
    assert rmse_shipped < rmse_heads, (rmse_shipped, rmse_heads)


def test_own_labels_outweigh_a_prior_that_is_wrong_out_of_domain() -> None:
    cycles = _shifted_engine(31)
    with_labels, _ = _run(PriorTwin(), cycles, label_every=20)
    without, _ = _run(PriorTwin(), cycles)
    assert with_labels < 0.8 * without, (with_labels, without)


class _AlarmAt:
    """A drift detector that reports a change at the given updates only (to put a twin in alarm on cue)."""

    def __init__(self, at: set[int]) -> None:
        self.at, self.n, self.drift_detected = at, 0, False

    def update(self, _: float) -> None:
        self.n += 1
        self.drift_detected = self.n in self.at


def _alarm_run(cycles: list[dict[str, float]], at: set[int]) -> list[tuple[bool, bool, bool, object, float]]:
    """Per cycle: (in alarm, answered in fallback, in domain, published ``flagged``, interval width)."""
    from twinstream.models.twin import Twin
    from twinstream.schemas.telemetry import Telemetry
    from twinstream.streams.records import encode_prediction

    twin = PriorTwin()
    twin._drift = _AlarmAt(at)
    holder = Twin(entity_id="e", learner=twin)
    out = []
    for i, sensors in enumerate(cycles):
        x = twin.observe_one(sensors)
        p = twin.predict_interval(x)
        t = Telemetry(entity_id="e", event_time=NOW, seq=i, metrics=sensors)
        body = orjson.loads(encode_prediction(t, holder, "rul", p.value, p.lower, p.upper, kind="turbofan"))
        out.append((twin.in_alarm, twin.fallback, twin.domain_state[0], body.get("flagged"), p.upper - p.lower))
    assert twin.drift_alarms == len(at)
    return out


def test_twin_in_drift_alarm_says_so_and_falls_back_until_back_in_domain() -> None:
    from twinstream.datasets.cmapss import load_subset

    rows = [dict(r.sensors) for r in load_subset("FD001").test if r.unit == 31]
    quiet = _alarm_run(rows, set())
    k = next(i for i in range(30, len(rows) - 1) if quiet[i][2] and quiet[i + 1][2])  # in domain, and the next too
    alarmed = _alarm_run(rows, {k + 1})  # the detector's count is 1-based
    assert alarmed[k][:2] == (True, True) and alarmed[k][3] is True  # the alarm event says so and falls back
    assert alarmed[k][4] > quiet[k][4]  # with a wider interval
    assert alarmed[k + 1][0] is False and alarmed[k + 1][3] is None  # the next event is in domain: the alarm is over
    assert all(f[3] is None for f in quiet)  # no alarm, never flagged

    far = [{s: v * 1.3 for s, v in r.items()} for r in rows]  # moved where the fleet never went
    alarmed = _alarm_run(far, {40})
    after = alarmed[39:]
    assert all(not f[2] for f in after)  # out of domain from there on
    assert all(f[0] and f[1] and f[3] is True for f in after)  # so it stays in alarm, says so, falls back


def test_prior_reference_names_one_source(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="exactly one of bundled, artifact"):
        processor(write_spec(tmp_path, "    prior: {artifact: a, path: b}\n"))


def test_bundled_prior_starts_a_kind_that_names_no_prior_in_its_params(tmp_path: Path) -> None:
    spec = tmp_path / "twins.yaml"
    spec.write_text("kinds:\n  - name: turbofan\n    match: {entity_id: ['fd001-*']}\n"
                    "    tasks: [{type: label, target: rul}]\n    prior: {bundled: fd001}\n")
    out = processor(spec).process([message("fd001-test-001", 0, {"s2": 642.0, "s3": 1590.0}, {"rul": 100.0})])
    assert Prediction.model_validate_json(out.predictions[0][1]).prior_version == "rul-mlp-v2"
