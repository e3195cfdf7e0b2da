"""The fleet prior artifact: manifest checks, refusal of mismatches, training end to end (tiny)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest

from twinstream.datasets.cmapss import bundled_dir, load_subset
from twinstream.models.features import RulFeatures
from twinstream.models.prior import PriorMismatchError, bundled_prior_dir, load_prior
from twinstream.models.prior_twin import PriorTwin
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    """A private copy of the bundled prior that a test may damage."""
    copy = tmp_path / "prior"
    shutil.copytree(bundled_prior_dir(), copy)
    return copy


def test_bundled_prior_is_small_verified_and_trained_on_fd001_train() -> None:
    directory = bundled_prior_dir()
    manifest = PriorManifest.model_validate_json((directory / MANIFEST_FILE).read_text())
    assert sum(p.stat().st_size for p in directory.iterdir()) < 1_000_000
    assert manifest.weights_sha256 == sha256(directory / manifest.weights_file)
    assert manifest.training_data == {"train_FD001.txt": sha256(bundled_dir() / "train_FD001.txt")}
    assert manifest.feature_schema == RulFeatures().schema()
    assert manifest.target_cap == 125.0 and manifest.training["subset"] == "FD001"
    prior = load_prior(directory, RulFeatures().schema())
    assert set(prior.manifest.prior_inputs) < set(prior.names)


def test_tampered_weights_are_refused_naming_the_sha256(artifact: Path) -> None:
    weights = artifact / "weights.npz"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(PriorMismatchError, match=r"weights sha256 mismatch: weights\.npz has [0-9a-f]{64}, manifest says"):
        load_prior(artifact)
    with pytest.raises(PriorMismatchError, match="sha256"):
        PriorTwin(prior=str(artifact))


def test_wrong_feature_schema_is_refused_naming_the_feature(artifact: Path) -> None:
    path = artifact / MANIFEST_FILE
    data = json.loads(path.read_text())
    names = data["feature_schema"]["names"]
    names[names.index("s7_dev")] = "s7_median"
    path.write_text(json.dumps(data))
    mismatch = r"feature schema mismatch: names differ: missing \['s7_dev'\]; unexpected \['s7_median'\]"
    with pytest.raises(PriorMismatchError, match=mismatch):
        load_prior(artifact, RulFeatures().schema())
    with pytest.raises(PriorMismatchError, match="s7_median"):
        PriorTwin(prior=str(artifact))


def test_extractor_parameters_must_match_the_prior() -> None:
    with pytest.raises(PriorMismatchError, match="extractor params differ: baseline_n"):
        PriorTwin(baseline_n=5)


def test_missing_weights_file_is_an_error(artifact: Path) -> None:
    (artifact / "weights.npz").unlink()
    with pytest.raises(FileNotFoundError, match="weights.npz"):
        load_prior(artifact)


def test_twin_state_holds_no_weights() -> None:
    learner = PriorTwin()
    weights = (bundled_prior_dir() / "weights.npz").stat().st_size
    assert learner.state_bytes() < min(weights, 8192)


@pytest.mark.parametrize("prior", ["bundled", None])
def test_sample_weight_scales_the_personal_step_even_when_clipped(prior: str | None) -> None:
    """A label far below the base (a gradient over the clip): weight 0.5 moves the prediction half as far as 1."""
    moves = {}
    for w in (1.0, 0.5):
        learner = PriorTwin(prior=prior)
        x = learner.observe_one({"s2": 642.0, "s3": 1590.0})
        before = learner.predict_one(x)
        assert before - 5.0 > 50.0  # squared-loss gradient 2 * residual, weighted by 0.5: still over the clip of 50
        learner.learn_one(x, 5.0, w=w)
        moves[w] = before - learner.predict_one(x)
    assert moves[1.0] > 0
    assert moves[0.5] == pytest.approx(moves[1.0] / 2)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NASA layout with FD001's first 8 training engines (the test files unchanged)."""
    directory = tmp_path_factory.mktemp("cmapss")
    lines = (bundled_dir() / "train_FD001.txt").read_text().splitlines()
    (directory / "train_FD001.txt").write_text("\n".join(line for line in lines if int(line.split()[0]) <= 8) + "\n")
    for name in ("test_FD001.txt", "RUL_FD001.txt"):
        shutil.copy(bundled_dir() / name, directory / name)
    return directory


def test_training_writes_a_loadable_deterministic_artifact(tiny_data: Path, tmp_path: Path) -> None:
    from twinstream.models.prior_train import train_prior

    kwargs = dict(subset="FD001", data_dir=tiny_data, folds=2, hidden=8, prior_hidden=4, epochs=2, seed=3)
    first = train_prior(tmp_path / "a", **kwargs)
    second = train_prior(tmp_path / "b", **kwargs)
    assert first.weights_sha256 == second.weights_sha256 == sha256(tmp_path / "a" / "weights.npz")
    assert first.training_data == {"train_FD001.txt": sha256(tiny_data / "train_FD001.txt")}
    assert first.metrics["train_engines"] == 8.0
    assert all(math.isfinite(v) for v in first.metrics.values())
    learner = PriorTwin(prior=str(tmp_path / "a"))
    rows = [r for r in load_subset("FD001").test if r.unit == 1]
    for row in rows:
        p = learner.predict_interval(learner.observe_one(row.sensors))
    assert 0.0 <= p.lower <= p.value <= p.upper and p.value <= 125.0
    assert learner.prior_version == "rul-mlp-v2"


def test_prior_train_command(tiny_data: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from twinstream.commands.prior import app

    out = tmp_path / "cli-prior"
    args = ["train", "--data", str(tiny_data), "--out", str(out), "--epochs", "1", "--hidden", "4", "--prior-hidden", "4", "--folds", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = CliRunner().invoke(app, ["show", str(out)])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["weights_sha256"] == sha256(out / "weights.npz")
