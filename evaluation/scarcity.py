"""Scarcity curve (``twinstream eval scarcity``): does generated data help a prior trained on few entities?

Protocol, fixed before any result was seen:

- ``k`` in :data:`KS` (``all`` = every training engine); :data:`DRAWS` draws per ``k``:
  draw ``d`` takes ``k`` training engines chosen by ``numpy default_rng([seed, k, d])``
  (for ``all`` the draws differ only in the training seed ``d``). Test engines are never
  used for any choice.
- Three arms per draw, each training the prior (:func:`~twinstream.models.prior_train.train_prior`,
  :data:`FOLDS` folds, a fixed budget of :data:`STEPS` gradient steps per member so that
  a bigger training set does not also mean more training) on:
  ``real``: the ``k`` real engines; ``real_synthetic``: those plus ``EXTRA_PER_REAL * k``
  trajectories from :class:`~twinstream.models.trajectory_gen.TrajectoryModel` fitted on
  the same ``k`` engines only (z-scored with their own statistics); ``real_jitter``:
  those plus as many copies of randomly chosen real engines with per-sensor scaling
  (sd :data:`SCALE_SD`) of their deviation from the mean and Gaussian jitter (sd
  :data:`JITTER_SD`, z units): the standard naive augmentation;
  ``real_diffusion``: those plus ``EXTRA_PER_REAL * k`` trajectories from the deep
  generator (:mod:`twinstream.models.trajectory_diffusion`) trained on the same ``k``
  engines only and written as an artifact with its gate metrics
  (:func:`~twinstream.models.trajectory_artifact.train_trajectory_generator`, gate
  measured against those ``k`` engines, in-sample); the trajectories are taken through
  :func:`~twinstream.models.trajectory_artifact.synthetic_trajectories`, so a generator
  failing its gate is refused, and then this draw's prior is the one trained on the
  real engines alone (what a user gets after the refusal; the draw is counted in
  ``refused``); ``real_diffusion_ungated``: the same generator's trajectories used
  whatever its gate says, to show what the gate protects from.
- Scoring: every arm's prior in a streaming prior + twin learner
  (:func:`~twinstream.evaluation.cmapss_eval.run_arm`, ``prior_twin``) on all FD001 test
  engines, RMSE and PHM08 score at each engine's last cycle against the true RUL
  (:func:`~twinstream.evaluation.cmapss_eval.score_arm`).

Synthetic engines carry the settings and non-informative sensors of a real engine of
the draw (cycled when the synthetic life is longer); the prior's features use only
the informative sensors.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets import cmapss
from twinstream.evaluation.cmapss_eval import arm_params, fleet_events, run_arm, score_arm
from twinstream.evaluation.synth_rul_tasks import SENSORS, engines, with_values, write_subset
from twinstream.models.trajectory_artifact import TrajectoryGeneratorRejected, synthetic_trajectories, train_trajectory_generator
from twinstream.models.trajectory_diffusion import TRAIN_STEPS
from twinstream.models.trajectory_gate import SPLITS, tstr
from twinstream.models.trajectory_gen import TrajectoryModel
from twinstream.schemas.trajectory_generator import TrajectoryGateThresholds

UNGATED = TrajectoryGateThresholds(max_discriminative=None, max_tstr_ratio=None)

KS: tuple[int | None, ...] = (3, 5, 10, 20, 50, None)
DRAWS = 3
FOLDS = 3
STEPS = 400
BATCH = 256  # the trainer's batch size
EXTRA_PER_REAL = 2
SCALE_SD = 0.1
JITTER_SD = 0.1
ARMS = ("real", "real_synthetic", "real_jitter", "real_diffusion", "real_diffusion_ungated")
TRAINED_ARMS = ("real", "real_synthetic", "real_jitter", "real_diffusion_ungated")  # real_diffusion reuses one of them
SYNTHETIC_UNIT0 = 10_000


def draw_units(units: Sequence[int], k: int | None, draw: int, seed: int) -> list[int]:
    """The ``k`` engines of one draw (all of them for ``k=None``).

    >>> draw_units(range(1, 11), 3, 0, 0) == draw_units(range(1, 11), 3, 0, 0), len(draw_units(range(1, 11), None, 1, 0))
    (True, 10)
    """
    units = sorted(units)
    if k is None or k >= len(units):
        return units
    return sorted(int(u) for u in np.random.default_rng([seed, k, draw]).choice(units, size=k, replace=False))


def epochs_for(rows: int, folds: int = FOLDS, steps: int = STEPS) -> int:
    """Epochs giving about ``steps`` gradient steps per fold member on ``rows`` training rows.

    >>> epochs_for(600), epochs_for(20_000)
    (200, 8)
    """
    per_epoch = max(1, math.ceil(rows * (folds - 1) / folds / BATCH))
    return max(1, math.ceil(steps / per_epoch))


def jitter(series: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` naive copies: a random real series, each sensor's deviation scaled, plus jitter (z units)."""
    out = []
    for _ in range(n):
        z = series[int(rng.integers(len(series)))]
        mean = z.mean(axis=0)
        scale = rng.normal(1.0, SCALE_SD, z.shape[1])
        out.append(mean + (z - mean) * scale + rng.normal(0.0, JITTER_SD, z.shape))
    return out


def as_rows(
    extra: Sequence[np.ndarray], templates: Sequence[Sequence[cmapss.Cycle]], mean: np.ndarray, std: np.ndarray, rng: np.random.Generator
) -> list[cmapss.Cycle]:
    """Synthetic engines (z-scored informative sensors) as C-MAPSS rows with a real engine's other columns."""
    rows = []
    for i, z in enumerate(extra):
        template = templates[int(rng.integers(len(templates)))]
        for t, z_row in enumerate(z):
            base = template[t % len(template)]
            row = with_values(base, z_row, mean, std)
            rows.append(cmapss.Cycle(SYNTHETIC_UNIT0 + i, t + 1, row.settings, row.sensors))
    return rows


def _stats(values: list[float]) -> dict[str, Any]:
    arr = np.array(values, dtype=float)
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "draws": [float(v) for v in arr],
    }


def evaluate_scarcity(
    subset: str = "FD001",
    data_dir: Path | None = None,
    ks: Sequence[int | None] = KS,
    draws: int = DRAWS,
    steps: int = STEPS,
    seed: int = 0,
    gate: TrajectoryGateThresholds | None = None,
    generator_steps: int = TRAIN_STEPS,
    gate_splits: int = SPLITS,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The curve: ``curve[k][arm]`` with RMSE and PHM08 (mean, spread and each draw) over the draws."""
    say = progress or (lambda _: None)
    gate = TrajectoryGateThresholds() if gate is None else gate
    fd = cmapss.load_subset(subset, data_dir)
    everyone = engines(fd.train, np.zeros(len(SENSORS)), np.ones(len(SENSORS)))  # raw values; z-scored per draw
    events = fleet_events([], fd.test)  # prior + twin has no fleet model: training engines do not reach test twins
    started = time.perf_counter()
    curve: dict[str, Any] = {}
    for k in ks:
        key = "all" if k is None else str(k)
        per_arm: dict[str, dict[str, list[float]]] = {a: {"rmse": [], "phm_score": [], "rmse_capped_truth": []} for a in ARMS}
        drawn_units, extra_counts, seconds, gates = [], [], [], []
        for d in range(draws):
            t0 = time.perf_counter()
            units = draw_units(everyone.rows, k, d, seed)
            drawn_units.append(units)
            raw = [everyone.series[u] for u in units]
            stacked = np.vstack(raw)
            mean, std = stacked.mean(axis=0), stacked.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            z = [(s - mean) / std for s in raw]
            n_extra = EXTRA_PER_REAL * len(units)
            extra_counts.append(n_extra)
            rng = np.random.default_rng([seed, len(units), d, 1])
            model = TrajectoryModel.fit(z)
            templates = [everyone.rows[u] for u in units]
            real_rows = [r for u in units for r in everyone.rows[u]]
            baseline = model.sample(n_extra, rng)
            with tempfile.TemporaryDirectory(prefix="scarcity-gen-") as gen_dir:
                say(f"k={key} draw {d}: training the diffusion generator")
                manifest = train_trajectory_generator(
                    Path(gen_dir), {str(u): s for u, s in zip(units, raw)}, SENSORS, seed=d, steps=generator_steps, gate_splits=gate_splits
                )
                deep_raw = synthetic_trajectories(gen_dir, n_extra, np.random.default_rng([seed, len(units), d, 2]), UNGATED)
                try:
                    synthetic_trajectories(gen_dir, 1, np.random.default_rng(0), gate)
                    refusal = ""
                except TrajectoryGeneratorRejected as exc:
                    refusal = str(exc).split(": ", 1)[-1]
            deep = [(s - mean) / std for s in deep_raw]
            gates.append(
                {**manifest.gate, **manifest.metrics, "refused": refusal, "baseline_tstr_ratio": tstr(z, baseline, z)["tstr_ratio"]}
            )
            arms = {
                "real": [],
                "real_synthetic": as_rows(baseline, templates, mean, std, rng),
                "real_jitter": as_rows(jitter(z, n_extra, rng), templates, mean, std, rng),
                "real_diffusion_ungated": as_rows(deep, templates, mean, std, rng),
            }
            draw_scores: dict[str, dict[str, float]] = {}
            for arm, extra in arms.items():
                rows = real_rows + extra
                say(f"k={key} draw {d}: {arm}, {len(rows)} rows")
                with tempfile.TemporaryDirectory(prefix="scarcity-") as tmp:
                    data = write_subset(Path(tmp) / "data", fd.name, rows, fd.test, fd.test_rul)
                    from twinstream.models.prior_train import train_prior

                    train_prior(Path(tmp) / "prior", fd.name, data, epochs=epochs_for(len(rows), FOLDS, steps), folds=FOLDS, seed=d)
                    result = run_arm("prior_twin", arm_params(str(Path(tmp) / "prior"))["prior_twin"], events, seed=d)
                draw_scores[arm] = score_arm(result, fd)
            draw_scores["real_diffusion"] = draw_scores["real" if refusal else "real_diffusion_ungated"]
            for arm, scores in draw_scores.items():
                for metric in per_arm[arm]:
                    per_arm[arm][metric].append(float(scores[metric]))
            seconds.append(time.perf_counter() - t0)
        curve[key] = {arm: {m: _stats(v) for m, v in metrics.items()} for arm, metrics in per_arm.items()}
        curve[key]["train_engines"] = len(drawn_units[0])
        curve[key]["extra_engines"] = extra_counts[0]
        curve[key]["units"] = drawn_units
        curve[key]["seconds"] = float(sum(seconds))
        curve[key]["diffusion_gate"] = gates
        curve[key]["refused"] = sum(1 for g in gates if g["refused"])
    return {
        "subset": fd.name,
        "test_engines": len({r.unit for r in fd.test}),
        "protocol": {
            "ks": ["all" if k is None else k for k in ks],
            "draws": draws,
            "seed": seed,
            "folds": FOLDS,
            "steps_per_member": steps,
            "batch": BATCH,
            "extra_per_real": EXTRA_PER_REAL,
            "scale_sd": SCALE_SD,
            "jitter_sd": JITTER_SD,
            "units_rng": "numpy default_rng([seed, k, draw])",
            "training_seed": "draw",
            "diffusion_gate": gate.model_dump(),
            "generator_steps": generator_steps,
            "gate_splits": gate_splits,
            "diffusion_gate_reference": "the k training engines (in-sample)",
            "scoring": "prior_twin arm (cmapss_eval.run_arm), RMSE and PHM08 at each test engine's last cycle",
        },
        "curve": curve,
        "seconds": time.perf_counter() - started,
    }
