"""Trajectory generator artifacts: gate numbers in the manifest, generation with labels, and refusal by the trainer path."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from twinstream.datasets import cmapss
from twinstream.models import discriminative as discriminative_module
from twinstream.models import trajectory_diffusion as td
from twinstream.models.trajectory_artifact import (
    TrajectoryGeneratorRejected,
    load_trajectory_generator,
    synthetic_trajectories,
    train_trajectory_generator,
)
from twinstream.models.trajectory_gate import discriminative, tstr
from twinstream.schemas.trajectory_generator import TRAJECTORY_MANIFEST_FILE, TrajectoryGateThresholds

SENSORS = list(cmapss.INFORMATIVE_SENSORS)
OPEN = TrajectoryGateThresholds(max_discriminative=None, max_tstr_ratio=None)


def _engines(units: range) -> dict[str, np.ndarray]:
    fd = cmapss.load_subset("FD001")
    out: dict[str, list[list[float]]] = {}
    for r in sorted(fd.train, key=lambda r: (r.unit, r.cycle)):
        if r.unit in units:
            out.setdefault(str(r.unit), []).append([r.sensors[s] for s in SENSORS])
    return {u: np.array(v) for u, v in out.items()}


@pytest.fixture(scope="module", autouse=True)
def short_classifier() -> Iterator[None]:
    """The real classifier with a smaller floor of optimisation steps: these tests check wiring, not its accuracy.

    One torch thread: the cores are shared, and two threads on a busy machine are several times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(discriminative_module, "MIN_STEPS", 60)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory, short_classifier: None) -> Path:
    out = tmp_path_factory.mktemp("trajgen")
    train_trajectory_generator(out, _engines(range(1, 7)), SENSORS, steps=30, gate_splits=1)
    return out


def test_manifest_records_gate_numbers_and_pins_weights_and_data(artifact: Path) -> None:
    manifest = json.loads((artifact / TRAJECTORY_MANIFEST_FILE).read_text())
    assert set(manifest["gate"]) == {"discriminative_score", "tstr_ratio"}
    assert 0.0 <= manifest["gate"]["discriminative_score"] <= 0.5 and manifest["gate"]["tstr_ratio"] > 0
    assert {"tstr_rmse", "trtr_rmse"} <= set(manifest["metrics"])
    assert sorted(manifest["training_data"]) == [str(u) for u in range(1, 7)] and "in-sample" in manifest["gate_reference"]
    assert len(manifest["weights_sha256"]) == 64 and manifest["sensors"] == SENSORS


def test_generated_trajectories_come_in_sensor_units_and_continue_an_early_life(artifact: Path) -> None:
    gen = load_trajectory_generator(artifact, OPEN, SENSORS)
    fake = gen.sample(4, np.random.default_rng(0))
    real = np.vstack(list(_engines(range(1, 7)).values()))
    assert all(f.shape[1] == len(SENSORS) and len(f) >= td.MIN_LENGTH for f in fake)
    assert np.all(np.abs(np.vstack(fake).mean(axis=0) - real.mean(axis=0)) < 2 * real.std(axis=0))
    early = _engines(range(7, 8))["7"][:50]
    cont = gen.sample(2, np.random.default_rng(1), prefix=early)
    assert all(np.array_equal(c[:50], early) and len(c) >= 50 + td.MIN_REMAINING for c in cont)


def test_a_tampered_artifact_is_refused(artifact: Path, tmp_path: Path) -> None:
    copy = tmp_path / "gen"
    shutil.copytree(artifact, copy)
    with (copy / "weights.npz").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(TrajectoryGeneratorRejected, match="sha256 mismatch"):
        synthetic_trajectories(copy, 2, np.random.default_rng(0), OPEN)
    manifest = json.loads((artifact / TRAJECTORY_MANIFEST_FILE).read_text())
    manifest["sensors"] = SENSORS[::-1]
    (copy / "weights.npz").write_bytes((artifact / "weights.npz").read_bytes())
    (copy / TRAJECTORY_MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(TrajectoryGeneratorRejected, match="sensors"):
        synthetic_trajectories(copy, 2, np.random.default_rng(0), OPEN, sensors=SENSORS)


def test_a_generator_failing_its_gate_is_refused_by_the_prior_trainer(artifact: Path, tmp_path: Path) -> None:
    gate = json.loads((artifact / TRAJECTORY_MANIFEST_FILE).read_text())["gate"]
    strict = TrajectoryGateThresholds(max_tstr_ratio=gate["tstr_ratio"] / 2, max_discriminative=None)
    with pytest.raises(TrajectoryGeneratorRejected, match="tstr_ratio"):
        synthetic_trajectories(artifact, 2, np.random.default_rng(0), strict)
    assert len(synthetic_trajectories(artifact, 2, np.random.default_rng(0), OPEN)) == 2

    failing = tmp_path / "failing"
    shutil.copytree(artifact, failing)
    manifest = json.loads((failing / TRAJECTORY_MANIFEST_FILE).read_text())
    manifest["gate"]["discriminative_score"] = 0.45  # above the default 0.25 line
    (failing / TRAJECTORY_MANIFEST_FILE).write_text(json.dumps(manifest))
    from twinstream.commands.prior import app

    out = tmp_path / "prior"
    result = CliRunner().invoke(
        app, ["train", "--data", str(cmapss.bundled_dir()), "--out", str(out), "--synthetic", str(failing), "--epochs", "1", "--folds", "2"]
    )
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert "fails the quality gate" in said and "discriminative_score 0.45 > 0.25" in said
    assert not out.exists()


def test_the_gate_metrics_tell_copies_from_noise() -> None:
    rng = np.random.default_rng(0)
    lives = [
        np.column_stack([np.exp(-(n - np.arange(1, n + 1)) / 30.0) * 3 + rng.normal(0, 0.2, n)] * 2) for n in rng.integers(120, 250, 10)
    ]
    copies = [s + rng.normal(0, 0.01, s.shape) for s in lives]
    flat = [rng.normal(0, 1.0, s.shape) for s in lives]  # no degradation: no information about remaining life
    assert tstr(lives, copies, lives)["tstr_ratio"] < 1.2 < tstr(lives, flat, lives)["tstr_ratio"]
    assert discriminative(lives, flat, splits=1)["score"] > discriminative(lives, copies, splits=1)["score"]


def test_synth_trajectories_command_writes_a_gated_artifact(tmp_path: Path) -> None:
    """`twinstream synth trajectories` trains on drawn engines and records the gate; the trainer path reads it back."""
    from twinstream.cli import app

    out = tmp_path / "gen"
    result = CliRunner().invoke(app, ["synth", "trajectories", "--engines", "4", "--steps", "10", "--gate-splits", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / TRAJECTORY_MANIFEST_FILE).read_text())
    assert set(manifest["gate"]) == {"discriminative_score", "tstr_ratio"}
    assert len(manifest["training_data"]) == 4 and manifest["sensors"] == SENSORS
    assert len(synthetic_trajectories(out, 2, np.random.default_rng(0), OPEN)) == 2
    refused = CliRunner().invoke(app, ["synth", "trajectories", "--engines", "500", "--out", str(tmp_path / "none")])
    assert refused.exit_code == 2 and "training engines" in refused.output
