"""Writing a generator artifact (``twinstream synth train``): Kalman fit, residual diffusion, manifest.

Why here and not in the command: the artifact layout (``manifest.json`` + one ``npz``
whose sha256 the manifest pins) must be written by exactly one function, so that what
:func:`twinstream.models.generator.load_generator` verifies is what training wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from twinstream.models.generator import KALMAN_KEYS, NET_PREFIX, sha256_file
from twinstream.models.imputation import KalmanLLT
from twinstream.schemas.generator import GENERATOR_MANIFEST_FILE, GeneratorManifest

if TYPE_CHECKING:
    from twinstream.models.diffusion import Denoiser

WEIGHTS_FILE = "weights.npz"


def write_generator(out: Path, *, family: str, version: str, sensors: Sequence[str], mean: np.ndarray, std: np.ndarray,
                    window: int, kalman: KalmanLLT, net: dict[str, np.ndarray] | None, diffusion_steps: int,
                    training_data: dict[str, str], gate: dict[str, float], metrics: dict[str, float] | None = None,
                    training: dict[str, float | int | str] | None = None) -> GeneratorManifest:
    """Write weights (float32 net, float64 Kalman parameters incl. the slope prior) and the manifest pinning their sha256."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    d = len(sensors)
    values = (kalman.q_level, kalman.q_slope, kalman.r, kalman.slope_sd0)
    arrays = {key: np.broadcast_to(np.asarray(v, dtype=np.float64), (d,)).copy()
              for key, v in zip(KALMAN_KEYS, values) if v is not None}  # no slope prior: the key is left out (diffuse)
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


def record_gate(out: Path, gate: dict[str, float], metrics: dict[str, float]) -> GeneratorManifest:
    """Put held-out gate metrics into an artifact's manifest (the weights, and so their sha256, stay)."""
    path = Path(out) / GENERATOR_MANIFEST_FILE
    manifest = GeneratorManifest.model_validate_json(path.read_bytes())
    manifest = manifest.model_copy(update={"gate": gate, "metrics": {**manifest.metrics, **metrics}})
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return manifest


def training_mask(steps: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """One training mask (True = hidden) of the four kinds the generator must fill, drawn at random.

    random values (10-60 %); 1-3 blocks of 2-20 samples (all sensors, or some); 1-4 sensors
    missing over a span or the whole window; the last 1-25 samples (an open gap: forecast).
    """
    m = np.zeros((steps, dims), dtype=bool)
    kind = rng.integers(4)
    if kind == 0:
        m = rng.random((steps, dims)) < rng.uniform(0.1, 0.6)
    elif kind == 1:
        for _ in range(rng.integers(1, 4)):
            length = int(rng.integers(2, 21))
            at = int(rng.integers(1, max(2, steps - length - 1)))
            cols = np.ones(dims, dtype=bool) if rng.random() < 0.7 else rng.random(dims) < 0.5
            m[at:at + length, cols] = True
    elif kind == 2:
        cols = rng.choice(dims, size=min(dims, int(rng.integers(1, 5))), replace=False)
        if rng.random() < 0.5:
            m[:, cols] = True
        else:
            length = int(rng.integers(10, max(11, steps // 2)))
            at = int(rng.integers(0, max(1, steps - length)))
            m[at:at + length, cols] = True
    else:
        cols = np.ones(dims, dtype=bool) if rng.random() < 0.7 else rng.random(dims) < 0.5
        m[steps - int(rng.integers(1, 26)):, cols] = True
    if m.all(axis=0).all():
        m[0] = False  # keep something observed
    return m


def residual_pool(series: Sequence[np.ndarray], kalman: KalmanLLT, window: int, size: int, rng: np.random.Generator,
                  progress: Callable[[str], None] = lambda _: None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training examples: (x0 residual (N, D, L), conditions (N, 4D, L), missing (N, D, L)), float32/bool.

    Each example: a training series, cut at a random point (so tails are open gaps),
    masked with :func:`training_mask` on its last ``window`` samples; the Kalman trend is
    fitted on the observed values of the whole cut series, or (half the time) of the
    window alone, as a sidecar with a short memory would.
    """
    from twinstream.models.diffusion import conditions
    from twinstream.models.generator import Generator

    usable = [s for s in series if len(s) >= window]
    if not usable:
        raise ValueError(f"no training series of at least {window} samples")
    trend = Generator.trend_many_with
    x0s, conds, misses = [], [], []
    chunk = 256
    for start in range(0, size, chunk):
        items = []
        for _ in range(min(chunk, size - start)):
            s = usable[int(rng.integers(len(usable)))]
            cut = int(rng.integers(window, len(s) + 1))
            full = s[:cut].copy()
            mask = np.zeros(full.shape, dtype=bool)
            mask[-window:] = training_mask(window, full.shape[1], rng)
            mask &= ~np.isnan(full)
            masked = np.where(mask, np.nan, full)
            items.append((full, masked if rng.random() < 0.5 else masked[-window:], mask))
        levels, variances = trend(kalman, [masked for _, masked, _ in items])
        wins, lvls, vrs, truths = [], [], [], []
        for (full, masked, _mask), level, var in zip(items, levels, variances):
            wins.append(masked[-window:])
            lvls.append(level[-window:])
            vrs.append(var[-window:])
            truths.append(full[-window:])
        cond, missing = conditions(wins, lvls, vrs)
        x0 = (np.stack(truths) - np.stack(lvls)).transpose(0, 2, 1)
        x0s.append(np.nan_to_num(np.where(missing, x0, 0.0)).astype(np.float32))
        conds.append(cond)
        misses.append(missing)
        progress(f"training windows {start + len(items)}/{size}")
    return np.concatenate(x0s), np.concatenate(conds), np.concatenate(misses)


def train_denoiser(x0: np.ndarray, cond: np.ndarray, missing: np.ndarray, *, scale: np.ndarray | None = None, steps: int = 50,
                   epochs: int = 20, batch: int = 64, channels: int = 48, lr: float = 2e-3, seed: int = 0,
                   progress: Callable[[str], None] = lambda _: None) -> Denoiser:
    """Fit the residual network on a pool from :func:`residual_pool` (Adam, cosine-decayed learning rate).

    ``scale`` (per sensor, e.g. the Kalman noise ``sqrt(r)``) standardizes the residuals the network sees.
    """
    import torch

    from twinstream.models.diffusion import Denoiser, ResidualNet, schedule, train_step

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = ResidualNet(x0.shape[1], channels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    total = epochs * max(1, len(x0) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    _, abar = schedule(steps)
    scale = np.ones(x0.shape[1]) if scale is None else np.asarray(scale, dtype=float)
    x0 = (x0 / scale[None, :, None]).astype(np.float32)
    cond = cond.copy()
    cond[:, : x0.shape[1]] /= scale[None, :, None]
    tx, tc, tm = torch.from_numpy(x0), torch.from_numpy(cond), torch.from_numpy(missing)
    net.train()
    done = 0
    for epoch in range(epochs):
        order = torch.randperm(len(x0), generator=gen)
        losses = []
        for start in range(0, len(x0) - batch + 1, batch):
            idx = order[start:start + batch]
            losses.append(train_step(net, opt, abar, tx[idx], tc[idx], tm[idx], gen))
            sched.step()
            done += 1
        progress(f"epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}")
    return Denoiser(net, steps, scale)
