"""Quality gate of gap filling (``twinstream eval synth``): hide known values, fill, score.

Protocol. C-MAPSS: the 14 informative sensors of the test engines, z-scored
with the training engines' mean and standard deviation (so errors are in training
standard deviations, comparable across sensors). Two seeded masks hide values whose
truth is known:

- ``random``: every (cycle, sensor) value independently with probability 0.3;
- ``block``: for every engine with at least 40 cycles, one block of 10 consecutive
  cycles, all sensors (a whole-sample outage), placed uniformly at random with at least
  one observed cycle before and after it; shorter engines are not masked.

Each method fills the masked series of every engine; MAE and RMSE are taken over the
hidden values only. Parameters that are learned (the Kalman smoother's variances) are
fitted on the complete training engines, never on test data. The reference row
``kalman_on_complete_series`` smooths the unmasked test series and scores the smoothed
level at the same hidden positions: the error left by sensor noise alone, near the
floor for any point estimate.

A user's CSV goes through the same code: rows sorted by the time column (treated as
one entity, one sample per row), the first ``train_fraction`` of the rows give the
z-score statistics and the fitted parameters, the rest is masked and scored; the block
mask places one 10-sample block in each consecutive run of 100 rows.

The ``adaptive`` arm (:mod:`twinstream.evaluation.adaptive_fill`) picks a filler per
series segment and column on pseudo-gaps cut from the observed values around the
masked ones (never the hidden values); ``choices`` counts what it picked.

Only the non-generative baselines exist so far: no generator, discriminative score,
TSTR or RUL-with-missing number is produced, and the report lists them as not measured.

Modules: :mod:`twinstream.datasets.series` (data sets and masks, re-exported here),
this one (scoring), :mod:`twinstream.evaluation.synth_docs` (the generated page).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from twinstream.datasets.series import (  # noqa: F401 (re-exported)
    BLOCK,
    CSV_BLOCK_EVERY,
    MIN_BLOCK_SERIES,
    RANDOM_RATE,
    Dataset,
    block_mask,
    cmapss_dataset,
    csv_dataset,
    make_masks,
    random_mask,
    zscore,
)
from twinstream.evaluation.adaptive_fill import AdaptiveFill
from twinstream.evaluation.synth_docs import write_docs  # noqa: F401 (re-exported)
from twinstream.models.imputation import Imputer, KalmanLLT, LastValue, LinearInterpolation, hidden_error

NOT_MEASURED = ["generator", "discriminative_score", "tstr_rmse", "rul_rmse_ratio_missing30"]


class GeneratorOnData(Imputer):
    """A generator artifact scored on a data set's z-scores (converted to the generator's own normalization)."""

    name = "generator"

    def __init__(self, generator: Any, data: Dataset) -> None:
        if list(generator.sensors) != list(data.columns):
            raise ValueError(f"generator {generator.version} fills {generator.sensors}, the data has {data.columns}")
        self.generator, self.version = generator, generator.version
        self.scale = data.std / generator.std
        self.shift = (data.mean - generator.mean) / generator.std

    def _to(self, z: np.ndarray) -> np.ndarray:
        return z * self.scale + self.shift

    def _back(self, g: np.ndarray) -> np.ndarray:
        return (g - self.shift) / self.scale

    def _impute(self, y: np.ndarray) -> np.ndarray:
        return self.impute_many([y])[0]

    def impute_many(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._back(f) for f in self.generator.impute_many_z([self._to(s) for s in series])]

    def sample_one(self, series: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """One sample of every series (the fills a consumer of synthetic data actually sees)."""
        return [self._back(f[0]) for f in self.generator.sample_many_z([self._to(s) for s in series], 1, rng)]


def kalman_noise(smoother: KalmanLLT, series: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Kalman smoother level plus Gaussian noise of the fill's predictive variance (level variance + r)."""
    levels, variances = smoother._run(list(series))
    r = np.broadcast_to(smoother.r, (series[0].shape[1],)) if series else smoother.r
    return [np.where(np.isnan(s), lv + rng.normal(size=s.shape) * np.sqrt(np.maximum(v, 0.0) + r), s)
            for s, lv, v in zip(series, levels, variances)]


def sample_errors(data: Dataset, smoother: KalmanLLT, generator: GeneratorOnData | None, masks: dict[str, list[np.ndarray]],
                  seed: int) -> dict[str, dict[str, dict[str, float]]]:
    """MAE/RMSE of single samples (not point estimates): Kalman + noise, and the generator's."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mask_name, mask in masks.items():
        masked = [np.where(m, np.nan, s) for s, m in zip(data.test, mask)]
        out[mask_name] = {"kalman_noise": hidden_error(kalman_noise(smoother, masked, np.random.default_rng([seed, 8])), data.test, mask)}
        if generator is not None:
            sample = generator.sample_one(masked, np.random.default_rng([seed, 9]))
            out[mask_name]["generator_sample"] = hidden_error(sample, data.test, mask)
    return out


def baselines(smoother: KalmanLLT) -> list[Imputer]:
    """The methods scored: linear, last value, the fitted Kalman smoother and its causal filter."""
    causal = KalmanLLT(smoother.q_level, smoother.q_slope, smoother.r, smooth=False, slope_sd0=smoother.slope_sd0)
    return [LinearInterpolation(), LastValue(), smoother, causal]


def noise_floor_mae(smoother: KalmanLLT, masks: Sequence[np.ndarray]) -> float:
    """MAE a perfect trend estimate would still make: E|noise| = sqrt(2 r / pi) per column, over the hidden cells.

    Why: a hidden value is trend plus sensor noise, and no fill can know the noise of a
    value it never saw. With the fitted (maximum-likelihood) noise variance ``r`` of each
    column and Gaussian noise, this is the floor of any point estimate's MAE.

    >>> k = KalmanLLT(r=[1.0, 4.0])
    >>> round(noise_floor_mae(k, [np.array([[True, False], [False, True]])]), 4)  # (0.7979 + 1.5958) / 2
    1.1968
    """
    per_col = np.sqrt(2.0 * np.broadcast_to(smoother.r, (masks[0].shape[1],)) / math.pi)
    hidden = np.concatenate(masks).astype(float)
    return float((hidden * per_col).sum() / max(hidden.sum(), 1.0))


def score(imputer: Imputer, truth: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, float]:
    """Fill the masked series with ``imputer`` and score the fills against the truth."""
    return hidden_error(imputer.impute_many([np.where(m, np.nan, s) for s, m in zip(truth, masks)]), truth, masks)


def score_all(data: Dataset, smoother: KalmanLLT, masks: dict[str, list[np.ndarray]],
              say: Callable[[str], None] = lambda _: None, extra: Sequence[Imputer] = ()) -> dict[str, dict[str, dict[str, float]]]:
    """``{mask: {method: {"mae", "rmse"}}}`` of every baseline (and the ``extra`` methods, e.g. the generator)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for mask_name, mask in masks.items():
        out[mask_name] = {}
        adaptive = AdaptiveFill(smoother, next((e for e in extra if e.name == "generator"), None))
        for imputer in [*extra, *baselines(smoother), adaptive]:
            say(f"{mask_name} mask: {imputer.name}")
            out[mask_name][imputer.name] = score(imputer, data.test, mask)
        out[mask_name]["adaptive"]["choices"] = dict(sorted(adaptive.counts.items()))
    return out


def evaluate_imputation(data: Dataset, seed: int = 0, progress: Callable[[str], None] | None = None,
                        seeds: int = 1, generator: Any = None) -> dict[str, Any]:
    """Fit on ``data.train``, mask ``data.test`` with both masks, score every baseline (and ``generator``).

    With ``seeds > 1`` the masks are also drawn with seeds ``seed .. seed + seeds - 1``
    and the spread of each MAE over them is reported (``seed_spread``). The errors of
    single samples (``sample_errors``: generator, Kalman + noise) use the first seed only.
    """
    say = progress or (lambda _: None)
    start = time.perf_counter()
    say("fitting the Kalman local-linear-trend parameters on the training series")
    smoother = KalmanLLT().fit(data.train)
    masks = make_masks(data, seed)
    extra = [GeneratorOnData(generator, data)] if generator is not None else []
    imputation = score_all(data, smoother, masks, say, extra)
    say("errors of single samples")
    samples = sample_errors(data, smoother, extra[0] if extra else None, masks, seed)
    levels = smoother.levels_many(data.test)  # the complete series, truth included
    reference = {mask_name: hidden_error(levels, data.test, mask) for mask_name, mask in masks.items()}
    floor = {mask_name: noise_floor_mae(smoother, mask) for mask_name, mask in masks.items()}
    residuals = np.concatenate([s - lv for s, lv in zip(data.train, smoother.levels_many(data.train))])
    residuals = residuals[np.isfinite(residuals).all(axis=1)]
    corr = np.corrcoef(residuals.T) if residuals.shape[1] > 1 else np.ones((1, 1))
    cross = float(np.abs(corr[~np.eye(len(corr), dtype=bool)]).mean()) if len(corr) > 1 else math.nan
    spread: dict[str, dict[str, dict[str, float]]] = {}
    if seeds > 1:
        runs = [imputation]
        for other in range(seed + 1, seed + seeds):
            say(f"masks of seed {other}")
            runs.append(score_all(data, smoother, make_masks(data, other), extra=extra))
        for mask_name in imputation:
            spread[mask_name] = {}
            for method in imputation[mask_name]:
                maes = np.array([run[mask_name][method]["mae"] for run in runs])
                spread[mask_name][method] = {"mae_mean": float(maes.mean()), "mae_std": float(maes.std(ddof=1)),
                                             "mae_min": float(maes.min()), "mae_max": float(maes.max())}
    return {
        "data": data.name,
        "columns": data.columns,
        "train_series": len(data.train),
        "test_series": len(data.test),
        "seed": seed,
        "masks": {
            "random": {"rate": RANDOM_RATE, "rng": f"numpy default_rng([{seed}, 0])", "hidden": int(sum(m.sum() for m in masks["random"]))},
            "block": {"length": BLOCK, "min_series_length": MIN_BLOCK_SERIES, "every": data.test_block_every,
                      "rng": f"numpy default_rng([{seed}, 1])", "hidden": int(sum(m.sum() for m in masks["block"])),
                      "blocks": int(sum(m.any(axis=1).sum() for m in masks["block"]) // BLOCK)},
        },
        "units": "z-scores (training mean and standard deviation per column)",
        "imputation": imputation,
        "sample_errors": samples,
        "reference": {"kalman_on_complete_series": reference, "noise_floor_mae": floor,
                      "train_residual_mean_abs_cross_correlation": cross},
        "seeds": list(range(seed, seed + seeds)),
        "seed_spread": spread,
        "kalman_params": {c: {"q_level": float(a), "q_slope": float(b), "r": float(r), "slope_sd0": float(sd)}
                          for c, a, b, r, sd in zip(data.columns, *np.broadcast_arrays(
                              smoother.q_level, smoother.q_slope, smoother.r,
                              np.inf if smoother.slope_sd0 is None else smoother.slope_sd0))},
        "not_measured": [k for k in NOT_MEASURED if not (k == "generator" and extra)],
        "seconds": time.perf_counter() - start,
    }
