"""The generator's part of ``eval synth``: load or train it, discriminative scores, the gate, RUL effects.

C-MAPSS runs score the bundled artifact (or ``--generator-dir``), which was trained on
the training engines only; a CSV run trains a generator on the CSV's first part (the
same rows the baselines are fitted on) and scores it on the rest. Either way the
artifact is loaded with the gate *off*: this command measures the gate, it does not
assume it. The discriminative scores of the baselines are reported next to the
generator's so a reader can see that the classifier is not blind.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets.series import Dataset
from twinstream.models.imputation import KalmanLLT, LinearInterpolation
from twinstream.schemas.generator import DISCRIMINATIVE, MAE_RATIO, GateThresholds

OPEN = GateThresholds(max_mae_ratio=None, max_discriminative=None)


def load_or_train(data: Dataset, csv_path: Path | None, generator_dir: Path | None, tmp: Path, epochs: int, windows: int,
                  seed: int, progress: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """(generator, description) for this run: trained on ``data.train`` for a CSV, else the artifact."""
    import torch

    torch.set_num_threads(1)  # cores are shared with the platform's own processes
    from twinstream.models.generator import bundled_generator_dir, load_generator, sha256_file
    from twinstream.settings import Settings

    if csv_path is not None:
        from twinstream.models.generator_fit import train_generator

        progress("training a generator on the CSV's first part")
        out = tmp / "generator"
        _, timing = train_generator(data, out, training_data={csv_path.name: sha256_file(csv_path)}, epochs=epochs,
                                    windows=windows, seed=seed, progress=progress)
        where = f"trained by this run on the first part of {csv_path.name} ({timing['total_s']:.0f} s)"
    else:
        out = generator_dir or bundled_generator_dir()
        where = str(generator_dir) if generator_dir else "bundled (models/generators/fd001)"
    gen = load_generator(out, OPEN, sensors=data.columns)
    failures = Settings().synth_gate().failures(gen.manifest.gate)
    return gen, {"version": gen.version, "artifact": where, "recorded_gate": dict(gen.manifest.gate),
                 "recorded_gate_passes": not failures, "recorded_gate_failures": failures,
                 "training": dict(gen.manifest.training), "training_data": dict(gen.manifest.training_data),
                 "weights_sha256": gen.manifest.weights_sha256}


def fillers(data: Dataset, smoother: KalmanLLT, generator: Any, seed: int) -> dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]]:
    """Fill functions (masked z-scored series -> filled) compared by the discriminative score."""
    from twinstream.evaluation.synthetic import GeneratorOnData, kalman_noise

    out: dict[str, Callable[[list[np.ndarray]], list[np.ndarray]]] = {}
    if generator is not None:
        on_data = GeneratorOnData(generator, data)
        rng_g = np.random.default_rng([seed, 10])
        out["generator"] = lambda masked: on_data.sample_one(masked, rng_g)
    rng_k = np.random.default_rng([seed, 11])
    out["kalman_noise"] = lambda masked: kalman_noise(smoother, masked, rng_k)
    out["kalman"] = smoother.impute_many
    out["linear"] = LinearInterpolation().impute_many
    return out


def add_generator_results(report: dict[str, Any], data: Dataset, generator: Any, info: dict[str, Any], *, seed: int, draws: int,
                          discriminative: bool, rul: bool, subset: str, data_dir: Path | None, quick: bool,
                          progress: Callable[[str], None]) -> None:
    """Add ``generator``, ``discriminative``, ``discriminative_score``, ``gate`` and the RUL keys to ``report``."""
    from twinstream.models.discriminative import compare
    from twinstream.settings import Settings

    not_measured = set(report["not_measured"])
    if generator is not None:
        report["generator"] = info
    if discriminative:
        params = report["kalman_params"].values()
        smoother = KalmanLLT([p["q_level"] for p in params], [p["q_slope"] for p in params], [p["r"] for p in params],
                             slope_sd0=[p.get("slope_sd0", np.inf) for p in params])
        table = compare(data.test, fillers(data, smoother, generator, seed), draws=draws, seed=seed,
                        every=data.test_block_every, progress=progress)
        report["discriminative"] = table
        if generator is not None:
            report["discriminative_score"] = table["generator"]["score"]
            not_measured.discard("discriminative_score")
    if generator is not None:
        block = report["imputation"]["block"]
        first = block["generator"]["mae"] / block["linear"]["mae"]
        spread = (report.get("seed_spread") or {}).get("block") or {}
        # like the manifest's gate: with several mask draws, the ratio of the MAEs averaged over the draws
        mean = spread["generator"]["mae_mean"] / spread["linear"]["mae_mean"] if spread else first
        measured = {MAE_RATIO: mean}
        report["mae_ratio_block_draws"] = {"first_seed": first, "mean_over_seeds": mean, "seeds": len(report["seeds"])}
        if "discriminative_score" in report:
            measured[DISCRIMINATIVE] = report["discriminative_score"]
        gate = Settings().synth_gate()
        failures = gate.failures(measured)
        report["gate"] = {"thresholds": gate.model_dump(), "measured": measured, "passes": not failures, "failures": failures}
    if rul and generator is not None:
        try:
            from twinstream.evaluation.synth_rul import rul_effects
        except ImportError as exc:
            report["rul_note"] = f"not measured: {exc}"
        else:
            progress("RUL effects (twinstream.evaluation.synth_rul)")
            effects = rul_effects(generator, subset=subset, data_dir=data_dir, seed=seed, quick=quick, progress=progress)
            report["rul"] = effects
            for key in ("tstr_rmse", "rul_rmse_ratio_missing30"):
                if effects.get(key) is not None:
                    report[key] = effects[key]
                    not_measured.discard(key)
    report["not_measured"] = [k for k in report["not_measured"] if k in not_measured]
