"""Writing a generator artifact (``twinstream synth train``): Kalman fit, residual diffusion, manifest.

Why here and not in the command: the artifact layout (``manifest.json`` + one ``npz``
whose sha256 the manifest pins) must be written by exactly one function, so that what
:func:`twinstream.models.generator.load_generator` verifies is what training wrote.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twinstream.models.generator import KALMAN_KEYS, NET_PREFIX, sha256_file
from twinstream.models.imputation import KalmanLLT
from twinstream.schemas.generator import GENERATOR_MANIFEST_FILE, GeneratorManifest

WEIGHTS_FILE = "weights.npz"


def write_generator(out: Path, *, family: str, version: str, sensors: Sequence[str], mean: np.ndarray, std: np.ndarray,
                    window: int, kalman: KalmanLLT, net: dict[str, np.ndarray] | None, diffusion_steps: int,
                    training_data: dict[str, str], gate: dict[str, float], metrics: dict[str, float] | None = None,
                    training: dict[str, float | int | str] | None = None) -> GeneratorManifest:
    """Write weights (float32 net, float64 Kalman parameters) and the manifest pinning their sha256."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = len(sensors)
    arrays = {key: np.broadcast_to(np.asarray(v, dtype=np.float64), (d,)).copy()
              for key, v in zip(KALMAN_KEYS, (kalman.q_level, kalman.q_slope, kalman.r))}
    for name, value in (net or {}).items():
        arrays[NET_PREFIX + name] = np.asarray(value, dtype=np.float32)
    weights = out / WEIGHTS_FILE
    np.savez_compressed(weights, **arrays)
    manifest = GeneratorManifest(
        family=family, version=version, sensors=list(sensors), mean=[float(x) for x in mean], std=[float(x) for x in std],
        window=window, diffusion_steps=diffusion_steps, weights_file=WEIGHTS_FILE, weights_sha256=sha256_file(weights),
        training_data=training_data, gate=gate, metrics=metrics or {}, training=training or {},
    )
    (out / GENERATOR_MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest
