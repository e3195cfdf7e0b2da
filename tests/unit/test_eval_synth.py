"""``eval synth``: masks, the CSV path, the command's JSON and docs, and the FD001 numbers."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twinstream.commands.evaluate import app
from twinstream.evaluation import synthetic


def test_block_mask_one_interior_block_per_long_series_seeded() -> None:
    series = [np.zeros((n, 3)) for n in (40, 39, 120, 303)]
    masks = synthetic.block_mask(series, np.random.default_rng([0, 1]))
    again = synthetic.block_mask(series, np.random.default_rng([0, 1]))
    assert all((a == b).all() for a, b in zip(masks, again))
    assert masks[1].sum() == 0
    for m in (masks[0], masks[2], masks[3]):
        rows = np.flatnonzero(m.any(axis=1))
        assert len(rows) == 10 and (np.diff(rows) == 1).all() and m[rows].all()  # 10 consecutive, all sensors
        assert rows[0] >= 1 and rows[-1] <= len(m) - 2  # observed samples on both sides


def test_block_mask_every_and_existing_gaps() -> None:
    s = np.zeros((250, 2))
    s[5, 0] = np.nan
    m = synthetic.block_mask([s], np.random.default_rng(3), every=100)[0]
    assert m.any(axis=1).sum() == 30  # runs of 100, 100 and 50 rows: the last is >= 40 too
    assert not m[5, 0]  # a value that was never measured is never hidden (nor scored)
    s = np.zeros((230, 2))
    m = synthetic.block_mask([s], np.random.default_rng(3), every=100)[0]
    assert m.any(axis=1).sum() == 20  # the 30-row tail gets none


def test_random_mask_rate_and_never_hides_a_missing_value() -> None:
    s = np.zeros((2000, 5))
    s[::7, 1] = np.nan
    m = synthetic.random_mask([s], np.random.default_rng(0))[0]
    assert abs(m.mean() - 0.3) < 0.01 and not (m & np.isnan(s)).any()


def write_csv(path: Path, n: int = 400) -> None:
    rng = np.random.default_rng(4)
    t = np.arange(n)
    a = np.sin(t / 15.0) * 3 + rng.normal(0, 0.3, n)
    b = 0.01 * t + rng.normal(0, 0.1, n)
    order = rng.permutation(n)  # rows out of time order
    with path.open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["time", "a", "b", "site"])
        for i in order:
            w.writerow([f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z" if i < 3600 else i, f"{a[i]:.4f}",
                        "" if i == 250 else f"{b[i]:.4f}", "north"])


def test_csv_dataset_sorts_splits_and_skips_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path)
    data = synthetic.csv_dataset(path, "time")
    assert data.columns == ["a", "b"] and len(data.train) == len(data.test) == 1
    assert data.train[0].shape == (200, 2) and data.test[0].shape == (200, 2)
    assert np.isnan(data.test[0][50, 1])  # row 250's empty cell stays missing
    assert abs(np.nanmean(data.train[0], axis=0)).max() < 1e-9  # z-scored with the first part
    with pytest.raises(ValueError):
        synthetic.csv_dataset(path, "when")
    with pytest.raises(ValueError):
        synthetic.csv_dataset(path, "time", ["a", "zz"])


def test_command_on_csv_writes_the_documented_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    write_csv(path)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["synth", "--csv", str(path), "--time-column", "time", "--json", str(out),
                                      "--generator-epochs", "1", "--generator-windows", "128", "--draws", "4"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for mask in ("block", "random"):
        for method in ("generator", "linear", "last_value", "kalman", "kalman_filter", "adaptive"):
            assert math.isfinite(report["imputation"][mask][method]["mae"])
            assert report["imputation"][mask][method]["rmse"] >= report["imputation"][mask][method]["mae"]
        assert report["imputation"][mask]["kalman"]["mae"] < report["imputation"][mask]["last_value"]["mae"]
        choices = report["imputation"][mask]["adaptive"]["choices"]  # what the adaptive arm picked, per window and column
        assert sum(choices.values()) > 0 and set(choices) <= {"kalman", "generator", "linear", "last_value"}
    # the generator was trained by the run on the CSV's first part; the RUL effects are C-MAPSS only
    assert report["generator"]["artifact"].startswith("trained by this run") and "t.csv" in report["generator"]["training_data"]
    assert 0.0 <= report["discriminative_score"] <= 0.5
    assert set(report["discriminative"]) == {"generator", "kalman_noise", "kalman", "linear"}
    assert report["gate"]["measured"]["mae_ratio_block"] == pytest.approx(
        report["imputation"]["block"]["generator"]["mae"] / report["imputation"]["block"]["linear"]["mae"])
    assert set(report["not_measured"]) == {"tstr_rmse", "rul_rmse_ratio_missing30"}
    assert report["masks"]["block"]["blocks"] == 2 and report["command"].startswith("twinstream eval synth --csv")
    for bad in (["--csv", str(path)], ["--csv", str(path), "--time-column", "time", "--docs", str(tmp_path)],
                ["--csv", str(tmp_path / "missing.csv"), "--time-column", "time"]):
        assert CliRunner().invoke(app, ["synth", *bad]).exit_code == 2


def test_command_on_a_few_engines_writes_docs(tmp_path: Path) -> None:
    args = ["synth", "--limit-engines", "8", "--seeds", "3", "--draws", "6", "--no-rul", "--docs", str(tmp_path),
            "--json", str(tmp_path / "r.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / "synthetic.md").read_text()
    report = json.loads((tmp_path / "r.json").read_text())
    assert "Generated by `twinstream eval synth --subset FD001 --limit-engines 8 --seed 0 --seeds 3 --draws 6 --no-rul --docs docs`" in text
    assert f"| {report['imputation']['block']['kalman']['mae']:.3f} |" in text
    gen = report["imputation"]["block"]["generator"]
    assert f"(`generator`) | {gen['mae']:.3f} | {gen['rmse']:.3f} |" in text and "(sidecar.md)" in text
    for name, d in report["discriminative"].items():
        assert f"(`{name}`) | {d['score']:.3f} | {d['accuracy']:.3f} |" in text
    # the classifier is not blind even on 8 engines' windows (on all of FD001 it catches ~all: see the committed report)
    assert report["discriminative"]["linear"]["score"] > 0.15 and report["discriminative"]["kalman"]["score"] > 0.15
    assert report["generator"]["version"] in text and report["gate"]["passes"] == (not report["gate"]["failures"])
    assert "tstr_rmse" not in report and "are therefore not measured in this run" in text
    assert report["test_series"] == 8 and len(report["kalman_params"]) == 14
    assert report["seeds"] == [0, 1, 2]
    assert report["gap_detection"]["engines"] == 8 and report["gap_detection"]["clean"]["false_gaps"] == 0
    assert "## Gap detection on injected faults" in text
    for mask in ("block", "random"):
        for method, s in report["seed_spread"][mask].items():
            assert s["mae_min"] <= report["imputation"][mask][method]["mae"] <= s["mae_max"]  # seed 0 is one of the draws
            assert s["mae_min"] <= s["mae_mean"] <= s["mae_max"] and s["mae_std"] >= 0
    assert f"{report['seed_spread']['block']['linear']['mae_mean']:.3f} ± " in text
    assert f"(fitted r) | {report['reference']['noise_floor_mae']['block']:.3f} |" in text


@pytest.fixture(scope="module")
def fd001_report() -> dict:
    return synthetic.evaluate_imputation(synthetic.cmapss_dataset("FD001"), seed=0)


def test_fd001_numbers_land_near_the_gate_references(fd001_report: dict) -> None:
    block = {k: v["mae"] for k, v in fd001_report["imputation"]["block"].items()}
    # the references the gate's targets came with (docs/decisions.md): block mask, one draw: linear 0.477,
    # last value 0.525, Kalman smoother 0.373, complete-series smoothing ~0.36
    assert block["linear"] == pytest.approx(0.477, abs=0.04)
    assert block["last_value"] == pytest.approx(0.525, abs=0.04)
    assert block["kalman"] == pytest.approx(0.373, abs=0.02)
    floor = fd001_report["reference"]["kalman_on_complete_series"]["block"]["mae"]
    assert floor == pytest.approx(0.36, abs=0.02) and floor < block["kalman"]
    noise = fd001_report["reference"]["noise_floor_mae"]["block"]  # E|noise| with the fitted r: below every method
    assert noise < min(block.values()) and noise == pytest.approx(block["kalman"], rel=0.05)
    assert fd001_report["reference"]["train_residual_mean_abs_cross_correlation"] < 0.1
    assert fd001_report["masks"]["block"]["blocks"] == sum(1 for s in synthetic.cmapss_dataset("FD001").test if len(s) >= 40)


def test_committed_docs_match_a_fresh_run(fd001_report: dict) -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "synthetic.md").read_text()
    assert "Generated by `twinstream eval synth" in text
    for name in ("linear", "last_value", "kalman"):
        b, r = fd001_report["imputation"]["block"][name], fd001_report["imputation"]["random"][name]
        assert f"(`{name}`) | {b['mae']:.3f} | {b['rmse']:.3f} | {r['mae']:.3f} | {r['rmse']:.3f} |" in text, (
            f"docs/synthetic.md is stale for {name}: rerun twinstream eval synth --seeds 10 --docs docs")


def test_gap_detector_finds_injected_faults_in_fd001() -> None:
    from twinstream.evaluation.gap_eval import evaluate_detection

    r = evaluate_detection("FD001", seed=0)
    assert r["engines"] == 100 and r["clean"]["false_gaps"] == 0
    faults = r["faults"]
    assert faults["missing_sensor"]["recall"] == 1.0 and faults["missing_sensor"]["delay_max"] == 1
    assert faults["missed_samples"]["recall"] == 1.0 and faults["missed_samples"]["delay_max"] == 6
    assert faults["flatline"]["recall"] >= 0.9 and faults["flatline"]["delay_median"] <= 15
    assert all(f["false_gaps"] == 0 and f["injected"] == 88 for f in faults.values())


def test_committed_report_is_what_the_code_computes_and_the_page_is_generated_from_it(fd001_report: dict, tmp_path: Path) -> None:
    """benchmarks/results/eval_synth.json agrees with a fresh run of the same code on everything that is cheap to
    recompute (the deterministic baselines and the noise floor, seed 0), and docs/synthetic.md is exactly the page
    ``write_docs`` makes of it: no number on the page comes from anywhere else."""
    repo = Path(__file__).resolve().parents[2]
    report = json.loads((repo / "benchmarks" / "results" / "eval_synth.json").read_text())
    for mask in ("block", "random"):
        for name, fresh in fd001_report["imputation"][mask].items():
            if name == "adaptive":  # its candidates include the generator in the committed run, not in this one
                assert report["imputation"][mask][name]["choices"], "the committed report has no adaptive arm"
                continue
            assert report["imputation"][mask][name] == pytest.approx(fresh, abs=1e-6), (
                f"benchmarks/results/eval_synth.json is stale for {mask}/{name}: rerun twinstream eval synth --seeds 10 "
                "--json benchmarks/results/eval_synth.json --docs docs")
    assert report["reference"]["noise_floor_mae"] == pytest.approx(fd001_report["reference"]["noise_floor_mae"], abs=1e-9)
    committed = (repo / "docs" / "synthetic.md").read_text()
    assert synthetic.write_docs(report, tmp_path).read_text() == committed, "docs/synthetic.md is not generated from the committed report"
    text = committed
    disc = report["discriminative"]
    assert disc["linear"]["score"] >= 0.45 and disc["kalman"]["score"] >= 0.45  # deterministic fills are caught: 0.46-0.49
    assert disc["kalman_noise"]["score"] <= 0.1  # Kalman + sampled noise about 0.05
    assert report["discriminative_score"] == disc["generator"]["score"]
    assert report["sample_errors"]["block"]["kalman_noise"]["mae"] == pytest.approx(0.52, abs=0.03)  # a sample adds the noise back
    for name, d in disc.items():
        assert f"(`{name}`) | {d['score']:.3f} | {d['accuracy']:.3f} | {d['test_windows']} |" in text
    gen = report["imputation"]["block"]["generator"]
    assert f"(`generator`) | {gen['mae']:.3f} | {gen['rmse']:.3f} |" in text
    assert report["gate"]["passes"] == (not report["gate"]["failures"]) and report["command"] in text


def test_cold_start_table_shows_every_k_and_the_verdict() -> None:
    from twinstream.evaluation.synth_docs_gen import cold_start_text

    row = {"engines": 96, "engines_truth_below_cap": 3, "rmse_plain": 3.5, "rmse_augmented": 7.25, "rmse_blend": 5.0,
           "rmse_real_lookahead": 0.5, "helps": False}
    text = cold_start_text({"horizon": 30, "samples": 8, "weight": 0.5, "by_k": {"10": row, "20": {**row, "helps": True}}})
    assert "| 10 | 96 | 3.500 | 7.250 | 5.000 | 0.500 | 3 | no |" in text and "| 20 |" in text and "| yes |" in text
    assert cold_start_text({}) == "Cold start: not measured in this run."


def test_missing30_verdict_is_not_hidden_by_rounding() -> None:
    from twinstream.evaluation.synth_docs_gen import _verdict

    assert "misses" in _verdict(1.0502) and "meets" in _verdict(1.05) and _verdict(None) == "not measured"


def test_missing30_per_seed_text_has_every_seed_and_the_standard_error() -> None:
    from twinstream.evaluation.synth_docs_gen import _per_seed

    rul = {"missing30": {"runs": [{"seed": s, "filled_late": {"ratio": v}} for s, v in ((0, 1.0), (1, 1.1))]}}
    assert _per_seed(rul) == "0: 1.000, 1: 1.100; standard error of the mean 0.050"
