"""``twinstream synth train``: fit, train, gate and write a generator artifact.

Steps: split the training series into *fit* and *validation* parts (C-MAPSS: whole
engines, seeded; a single CSV series: its last rows); fit the Kalman
local-linear-trend parameters on the fit part; build residual training windows with
every gap kind (:func:`twinstream.models.generator_train.residual_pool`); train the
residual diffusion model; write the artifact; then measure the gate metrics on the
validation part (never seen in training) and record them in the manifest:

- ``mae_ratio_block``: MAE of the generator's point estimate over linear
  interpolation's, block mask (one 10-sample block, all sensors, per series of at least
  40 samples; ``default_rng([seed + k, 1])``), each MAE averaged over ``gate_draws``
  mask draws because one draw holds only one block per validation series;
- ``discriminative_score``: of the generator's samples (see
  :mod:`twinstream.models.discriminative`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets.series import MIN_BLOCK_SERIES, Dataset, block_mask
from twinstream.models.discriminative import discriminative_score
from twinstream.models.generator import Generator, load_generator
from twinstream.models.generator_train import record_gate, residual_pool, train_denoiser, write_generator
from twinstream.models.imputation import KalmanLLT, LinearInterpolation, hidden_error
from twinstream.schemas.generator import DISCRIMINATIVE, MAE_RATIO, GateThresholds, GeneratorManifest

FAMILY = "llt-diffusion"
OPEN = GateThresholds(max_mae_ratio=None, max_discriminative=None)


def split_fit_validation(data: Dataset, fraction: float, seed: int) -> tuple[list[np.ndarray], list[np.ndarray], str]:
    """Fit and validation series, and a description of the split."""
    if len(data.train) >= 5:
        order = np.random.default_rng([seed, 5]).permutation(len(data.train))
        n_val = max(1, int(round(len(data.train) * fraction)))
        val = sorted(order[:n_val].tolist())
        fit = [s for i, s in enumerate(data.train) if i not in set(val)]
        return fit, [data.train[i] for i in val], f"{len(fit)} fit series, {n_val} validation series (default_rng([{seed}, 5]))"
    series = data.train[0]
    n_val = max(MIN_BLOCK_SERIES, int(len(series) * fraction))
    if len(series) - n_val < 20:
        return [series], [], "one series, too short to hold validation rows out: no gate metrics"
    return [series[:-n_val]], [series[-n_val:]], f"one series: first {len(series) - n_val} rows fit, last {n_val} rows validate"


def gate_metrics(gen: Generator, series: list[np.ndarray], seed: int, draws: int = 10,
                 say: Callable[[str], None] = lambda _: None) -> tuple[dict[str, float], dict[str, float]]:
    """(gate, other metrics) of ``gen`` on z-scored ``series`` (already in the generator's normalization)."""
    errors: dict[str, list[float]] = {"generator": [], "linear": [], "kalman": []}
    for k in range(draws):  # one draw places only one block per series: average the MAEs over draws
        masks = block_mask(series, np.random.default_rng([seed + k, 1]))
        if not any(m.any() for m in masks):
            return {}, {}
        masked = [np.where(m, np.nan, s) for s, m in zip(series, masks)]
        say(f"gate: block-mask MAE on the validation series, draw {k + 1}/{draws}")
        errors["generator"].append(hidden_error(gen.impute_many_z(masked), series, masks)["mae"])
        errors["linear"].append(hidden_error(LinearInterpolation().impute_many(masked), series, masks)["mae"])
        errors["kalman"].append(hidden_error(gen.kalman.impute_many(masked), series, masks)["mae"])
    gen_err, lin_err, kal_err = ({"mae": float(np.mean(errors[n]))} for n in ("generator", "linear", "kalman"))
    say("gate: discriminative score of the generator's samples on the validation series")
    rng = np.random.default_rng([seed, 6])
    gate = {MAE_RATIO: gen_err["mae"] / lin_err["mae"]}
    metrics = {"val_block_mae_generator": gen_err["mae"], "val_block_mae_linear": lin_err["mae"],
               "val_block_mae_kalman": kal_err["mae"]}
    try:
        disc = discriminative_score(series, lambda ms: [s[0] for s in gen.sample_many_z(ms, 1, rng)], draws=draws, seed=seed)
    except ValueError as exc:  # too little validation data to hold windows out: the score stays unrecorded
        say(f"no discriminative score: {exc}")
        return gate, metrics
    gate[DISCRIMINATIVE] = disc["score"]
    metrics.update({"val_discriminative_accuracy": disc["accuracy"], "val_discriminative_test_windows": float(disc["test_windows"])})
    return gate, metrics


def train_generator(data: Dataset, out: Path, *, training_data: dict[str, str], version: str = "1", epochs: int = 8,
                    windows: int = 6000, window: int = 64, steps: int = 50, channels: int = 48, seed: int = 0,
                    validation_fraction: float = 0.2, gate_draws: int = 10,
                    progress: Callable[[str], None] = lambda _: None) -> tuple[GeneratorManifest, dict[str, Any]]:
    """Train on ``data.train`` (z-scored), write the artifact to ``out``, record the gate; returns (manifest, timings)."""
    import torch

    torch.set_num_threads(1)
    start = time.perf_counter()
    fit, val, split = split_fit_validation(data, validation_fraction, seed)
    window = min(window, min(len(s) for s in fit))
    progress("fitting the Kalman local-linear-trend parameters")
    kalman = KalmanLLT().fit(fit)
    t_kalman = time.perf_counter() - start
    pool = residual_pool(fit, kalman, window, windows, np.random.default_rng([seed, 7]), progress)
    t_pool = time.perf_counter() - start
    scale = np.sqrt(np.broadcast_to(kalman.r, (len(data.columns),)))
    denoiser = train_denoiser(*pool, scale=scale, steps=steps, epochs=epochs, channels=channels, seed=seed, progress=progress)
    t_train = time.perf_counter() - start
    write_generator(out, family=FAMILY, version=version, sensors=data.columns, mean=data.mean, std=data.std, window=window,
                    kalman=kalman, net=denoiser.to_arrays(), diffusion_steps=steps, training_data=training_data, gate={},
                    training={"data": data.name, "split": split, "epochs": epochs, "windows": windows, "channels": channels,
                              "seed": seed, "validation_fraction": validation_fraction})
    gen = load_generator(out, OPEN)
    gate, metrics = gate_metrics(gen, val, seed, gate_draws, progress) if val else ({}, {})
    seconds = time.perf_counter() - start
    metrics["train_seconds"] = t_train
    manifest = record_gate(out, gate, metrics)
    return manifest, {"kalman_fit_s": t_kalman, "windows_s": t_pool - t_kalman, "diffusion_s": t_train - t_pool,
                      "gate_s": seconds - t_train, "total_s": seconds}
