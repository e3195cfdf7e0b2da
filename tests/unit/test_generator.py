"""The generator contract (used by the sidecar and the RUL effects): fills, samples, verification, gate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from twinstream.models.generator import Generator, GeneratorRejected, WindowKalman, bundled_generator_dir, choose_imputer, load_generator
from twinstream.schemas.generator import GateThresholds

OPEN = GateThresholds(max_mae_ratio=None, max_discriminative=None)


@pytest.fixture(scope="module")
def gen() -> Generator:
    return load_generator(gate=OPEN)


def window(gen: Generator, steps: int = 60, seed: int = 0) -> np.ndarray:
    """A plausible raw-unit window: the training mean plus a slow drift and noise of one training sd."""
    rng = np.random.default_rng(seed)
    drift = np.linspace(0, 1.0, steps)[:, None] * rng.normal(size=len(gen.sensors))
    return gen.mean + (drift + 0.5 * rng.normal(size=(steps, len(gen.sensors)))) * gen.std


def gappy(gen: Generator) -> np.ndarray:
    y = window(gen)
    y[20:30] = np.nan  # interior block, all sensors
    y[50:] = np.nan  # open gap at the end: a forecast
    y[:, 3] = np.nan  # a sensor missing over the whole window
    y[5, 1] = np.nan
    return y


def test_impute_keeps_observed_fills_every_gap(gen: Generator) -> None:
    y = gappy(gen)
    out = gen.impute(y)
    seen = ~np.isnan(y)
    assert out.shape == y.shape and np.isfinite(out).all()
    np.testing.assert_array_equal(out[seen], y[seen])
    # a whole missing sensor is filled near its training mean, in raw units (not z-scores)
    assert abs(out[:, 3].mean() - gen.mean[3]) < 3 * gen.std[3]
    # the open tail continues the window's level rather than jumping to the training mean
    near = np.abs(out[50:, 0] - y[40:50, 0].mean()).mean()
    assert near < 3 * gen.std[0]


def test_samples_shape_observed_unchanged_seeded_and_noisy(gen: Generator) -> None:
    y = gappy(gen)
    a = gen.sample(y, 4, np.random.default_rng(7))
    b = gen.sample(y, 4, np.random.default_rng(7))
    c = gen.sample(y, 4, np.random.default_rng(8))
    seen = ~np.isnan(y)
    assert a.shape == (4, *y.shape) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[:, ~seen], c[:, ~seen])
    for s in a:
        np.testing.assert_array_equal(s[seen], y[seen])
    # samples differ from one another at missing positions (they carry noise), not at observed ones
    assert (a.std(axis=0)[~seen] > 0).all() and (a.std(axis=0)[seen] == 0).all()


def test_wrong_columns_are_refused(gen: Generator) -> None:
    with pytest.raises(ValueError, match="columns"):
        gen.impute(np.zeros((10, len(gen.sensors) + 1)))
    with pytest.raises(GeneratorRejected, match="sensors"):
        load_generator(gate=OPEN, sensors=list(reversed(gen.sensors)))


def copy_artifact(tmp_path: Path) -> Path:
    out = tmp_path / "gen"
    shutil.copytree(bundled_generator_dir(), out)
    return out


def test_tampered_weights_or_manifest_are_refused(tmp_path: Path) -> None:
    out = copy_artifact(tmp_path)
    load_generator(out, OPEN)
    weights = out / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(GeneratorRejected, match="sha256 mismatch"):
        load_generator(out, OPEN)
    out = copy_artifact(tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["unexpected"] = 1
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GeneratorRejected, match="schema"):
        load_generator(out, OPEN)


def test_gate_refusal_names_the_metric_and_choose_falls_back(tmp_path: Path) -> None:
    out = copy_artifact(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["gate"]["mae_ratio_block"] = 0.95  # worse than the 0.8 threshold
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(GeneratorRejected, match="mae_ratio_block 0.95 > 0.8"):
        load_generator(out, GateThresholds(max_discriminative=None))
    choice = choose_imputer(out, GateThresholds(max_discriminative=None))
    assert choice.kind == "baseline" and isinstance(choice.imputer, WindowKalman) and "mae_ratio_block" in choice.reason
    ok = choose_imputer(out, OPEN)
    assert ok.kind == "generator" and ok.version == ok.imputer.version
    # the fallback fills raw units too and keeps observed values
    y = np.column_stack([np.linspace(9000, 9010, 40), np.linspace(1.0, 2.0, 40)])
    y[15:25] = np.nan
    filled = choice.imputer.impute(y)
    np.testing.assert_allclose(filled[15:25, 0], np.linspace(9000, 9010, 40)[15:25], atol=0.05)
    assert choose_imputer(tmp_path / "absent", OPEN).kind == "baseline"


def tiny_dataset(n: int = 6, steps: int = 120, dims: int = 3, seed: int = 0):
    """Trending sensors with white noise, in raw units far from zero (so normalization matters)."""
    from twinstream.datasets.series import Dataset, zscore

    rng = np.random.default_rng(seed)
    raw = [100.0 + np.linspace(0, rng.uniform(1, 3), steps)[:, None] * np.array([1.0, -2.0, 0.5])
           + rng.normal(0, 0.3, (steps, dims)) for _ in range(n)]
    train, test, mean, std = zscore(raw[:-1], raw[-1:])
    return Dataset("tiny", ["a", "b", "c"], train, test, mean, std)


def test_trained_artifact_round_trips_and_records_its_gate(tmp_path: Path) -> None:
    import torch

    from twinstream.models.generator_fit import train_generator

    data = tiny_dataset()
    manifest, timing = train_generator(data, tmp_path / "g", training_data={"tiny.csv": "ab" * 32}, epochs=1, windows=64,
                                       window=32, gate_draws=2)
    assert manifest.family == "llt-diffusion" and manifest.diffusion_steps == 50 and manifest.sensors == ["a", "b", "c"]
    assert "mae_ratio_block" in manifest.gate and manifest.metrics["val_block_mae_linear"] > 0
    loaded = load_generator(tmp_path / "g", OPEN)
    assert loaded.denoiser is not None and loaded.version == "llt-diffusion-v1"
    # the weights on disk are the weights trained: same samples from the same noise as a second load
    again = load_generator(tmp_path / "g", OPEN)
    y = data.test[0] * data.std + data.mean
    y[40:50] = np.nan
    y[110:, 1] = np.nan
    np.testing.assert_array_equal(loaded.sample(y, 2, np.random.default_rng(3)), again.sample(y, 2, np.random.default_rng(3)))
    for a, b in zip(loaded.denoiser.net.state_dict().values(), again.denoiser.net.state_dict().values()):
        assert torch.equal(a, b)
    filled = loaded.impute(y)
    assert np.isfinite(filled).all() and np.abs(filled[40:50] - 100).max() < 10  # raw units, near the data
