"""Trajectory generator artifacts: train + measure + write, and load + verify + gate.

Why one module for both directions (as :mod:`twinstream.models.generator_train` and
:mod:`twinstream.models.generator` for the gap filler): what the loader verifies must be
exactly what training wrote. An artifact is a directory with ``manifest.json``
(:class:`~twinstream.schemas.trajectory_generator.TrajectoryGeneratorManifest`: sensors,
normalisation, training lives, sha256 of the weights and of each training entity's
series, gate metrics) and ``weights.npz``.

The prior trainer takes synthetic trajectories only through
:func:`synthetic_trajectories`, which loads through :func:`load_trajectory_generator`:
a tampered weights file or a generator whose recorded gate metrics fail the thresholds
raises :class:`TrajectoryGeneratorRejected` naming the reason, and no trajectory is
produced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twinstream.models.generator import GeneratorRejected
from twinstream.models.prior import sha256_file
from twinstream.models.trajectory_diffusion import DIFFUSION_STEPS, GRID, TRAIN_STEPS, TrajectoryDiffusion
from twinstream.models.trajectory_gate import SPLITS, gate_metrics
from twinstream.schemas.trajectory_generator import (
    TRAJECTORY_MANIFEST_FILE,
    TrajectoryGateThresholds,
    TrajectoryGeneratorManifest,
)

WEIGHTS_FILE = "weights.npz"
FAMILY = "trajectory-diffusion"
GATE_SAMPLES_MIN = 10  # synthetic trajectories the gate measures at least


class TrajectoryGeneratorRejected(GeneratorRejected):
    """A trajectory generator may not feed a prior: tampered or mismatched artifact, or failing gate metrics."""


def series_sha256(series: np.ndarray) -> str:
    """Digest of one training entity's series (float64, row-major): what the manifest pins per entity."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(series, dtype=np.float64)).tobytes()).hexdigest()


def train_trajectory_generator(
    out: Path,
    entities: Mapping[str, np.ndarray],
    sensors: Sequence[str],
    *,
    held_out: Sequence[np.ndarray] | None = None,
    version: str = "1",
    steps: int = TRAIN_STEPS,
    seed: int = 0,
    gate_splits: int = SPLITS,
) -> TrajectoryGeneratorManifest:
    """Fit on ``entities`` (name -> raw run-to-failure series ``(T, D)``, last row = failure), measure the gate, write.

    The series are z-scored with their own mean and sd (recorded). The gate compares
    synthetic trajectories with ``held_out`` real entities when given, else with the
    training entities themselves (recorded in ``gate_reference``; see
    :mod:`twinstream.models.trajectory_gate` for why that is the conservative side).
    """
    names = list(entities)
    raw = [np.asarray(entities[n], dtype=float) for n in names]
    stacked = np.vstack(raw)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = [(s - mean) / std for s in raw]
    model = TrajectoryDiffusion.fit(z, steps=steps, seed=seed)
    reference = z if held_out is None else [(np.asarray(s, dtype=float) - mean) / std for s in held_out]
    fake = model.sample(max(len(reference), GATE_SAMPLES_MIN), np.random.default_rng([seed, 31]))
    measured = gate_metrics(z, fake, reference, seed=seed, splits=gate_splits)
    gate = {k: measured[k] for k in ("discriminative_score", "tstr_ratio")}
    metrics = {k: v for k, v in measured.items() if k not in gate}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    np.savez_compressed(weights, **model.to_arrays())
    manifest = TrajectoryGeneratorManifest(
        family=FAMILY,
        version=version,
        sensors=list(sensors),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        grid=GRID,
        lengths=[len(s) for s in raw],
        diffusion_steps=DIFFUSION_STEPS,
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(weights),
        training_data={n: series_sha256(s) for n, s in zip(names, raw)},
        gate=gate,
        gate_reference=(
            f"{len(reference)} held-out entities" if held_out is not None else f"the {len(reference)} training entities (in-sample)"
        ),
        metrics=metrics,
        training={"steps": steps, "seed": seed, "gate_splits": gate_splits, "gate_samples": len(fake)},
    )
    (out / TRAJECTORY_MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest


@dataclass
class TrajectoryGenerator:
    """A verified, gated trajectory generator: samples in raw sensor units."""

    manifest: TrajectoryGeneratorManifest
    model: TrajectoryDiffusion

    def sample(self, n: int, rng: np.random.Generator, prefix: np.ndarray | None = None) -> list[np.ndarray]:
        """``n`` raw-unit run-to-failure trajectories ``(T, D)`` (columns = ``manifest.sensors``; last row fails)."""
        mean, std = np.asarray(self.manifest.mean), np.asarray(self.manifest.std)
        z_prefix = None if prefix is None else (np.asarray(prefix, dtype=float) - mean) / std
        return [z * std + mean for z in self.model.sample(n, rng, prefix=z_prefix)]


def load_trajectory_generator(
    directory: Path | str, gate: TrajectoryGateThresholds | None = None, sensors: Sequence[str] | None = None
) -> TrajectoryGenerator:
    """Load, verify (schema, sha256, sensors) and gate an artifact; raises :class:`TrajectoryGeneratorRejected`."""
    directory = Path(directory)
    gate = TrajectoryGateThresholds() if gate is None else gate
    path = directory / TRAJECTORY_MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"trajectory generator {directory}: no {TRAJECTORY_MANIFEST_FILE}")
    try:
        manifest = TrajectoryGeneratorManifest.model_validate_json(path.read_bytes())
    except ValueError as exc:
        raise TrajectoryGeneratorRejected(f"trajectory generator {directory}: manifest does not match the schema: {exc}") from None
    weights = directory / manifest.weights_file
    if not weights.is_file():
        raise FileNotFoundError(f"trajectory generator {directory}: weights file {manifest.weights_file} is missing")
    actual = sha256_file(weights)
    if actual != manifest.weights_sha256:
        raise TrajectoryGeneratorRejected(
            f"trajectory generator {directory}: weights sha256 mismatch: {manifest.weights_file} "
            f"has {actual}, manifest says {manifest.weights_sha256}"
        )
    if sensors is not None and list(sensors) != manifest.sensors:
        raise TrajectoryGeneratorRejected(
            f"trajectory generator {directory}: sensors {manifest.sensors} are not the expected {list(sensors)}"
        )
    failures = gate.failures(manifest.gate)
    if failures:
        raise TrajectoryGeneratorRejected(
            f"trajectory generator {manifest.generator_version} ({directory}) fails the quality "
            f"gate ({manifest.gate_reference}): {'; '.join(failures)}"
        )
    with np.load(weights, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    try:
        model = TrajectoryDiffusion.from_arrays(arrays)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise TrajectoryGeneratorRejected(f"trajectory generator {directory}: weights do not load: {exc}") from None
    if model.net.dims != len(manifest.sensors):
        raise TrajectoryGeneratorRejected(
            f"trajectory generator {directory}: network generates {model.net.dims} sensors, manifest lists {len(manifest.sensors)}"
        )
    return TrajectoryGenerator(manifest, model)


def synthetic_trajectories(
    directory: Path | str,
    n: int,
    rng: np.random.Generator,
    gate: TrajectoryGateThresholds | None = None,
    sensors: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """``n`` raw-unit trajectories for a prior's training set, only from a generator that loads and passes its gate."""
    return load_trajectory_generator(directory, gate, sensors).sample(n, rng)
