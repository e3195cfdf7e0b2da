"""Gate metrics of a whole-trajectory generator: discriminative score and TSTR.

Why these two: synthetic trajectories are only worth adding to a prior's training set
if they look like real ones (a classifier cannot tell them apart) and carry the same
relation between sensors and remaining life (a RUL model trained on them predicts real
entities about as well as one trained on real ones). Both are cheap enough to run at
every training, so the numbers go into the artifact's manifest and the trainer's gate
(:class:`~twinstream.schemas.trajectory_generator.TrajectoryGateThresholds`) reads them.

- **Discriminative score** of whole trajectories: each trajectory becomes a
  fixed-size summary over ``GRID`` life-fraction bins (per sensor the bin mean and the
  sd of first differences inside the bin, i.e. course and noise, plus the
  normalised log life as a channel); the 1-D CNN of
  :func:`twinstream.models.discriminative.classify` is trained on a random half of the
  real and of the synthetic trajectories and tested on the other halves (the smaller
  class repeated so that accuracy is balanced), over ``SPLITS`` seeded splits. Score:
  ``|mean accuracy - 0.5|``.
- **TSTR**: a ridge regression from per-cycle features (means of the last 5 and last 30
  cycles per sensor, their squares, and the cycle count) to the RUL capped at ``CAP``,
  trained on the synthetic trajectories (TSTR) or on the real training ones (TRTR),
  scored by RMSE over every cycle of the reference entities; ``tstr_ratio`` = TSTR / TRTR.
  When the reference entities are the training ones (no held-out entity available, as
  with a handful of entities), TRTR is in-sample and so optimistic: the ratio is then
  conservative (harder to pass), never lenient.

>>> rng = np.random.default_rng(0)
>>> lives = [np.column_stack([np.exp(-(n - np.arange(1, n + 1)) / 30.0) * 3 + rng.normal(0, 0.2, n)] * 2)
...          for n in rng.integers(120, 250, 12)]
>>> twins = [s + rng.normal(0, 0.01, s.shape) for s in lives]
>>> flat = [rng.normal(0, 1.0, s.shape) for s in lives]  # no degradation: says nothing about remaining life
>>> round(tstr(lives, twins, lives)["tstr_ratio"], 1), tstr(lives, flat, lives)["tstr_ratio"] > 1.5
(1.0, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from twinstream.models.discriminative import classify
from twinstream.models.trajectory_diffusion import GRID

SPLITS = 3
CAP = 125.0
RIDGE = 1.0


def summary(series: np.ndarray, grid: int = GRID) -> np.ndarray:
    """``(grid, 2D + 1)``: per life-fraction bin the sensor means, the sd of first differences, log life."""
    series = np.asarray(series, dtype=float)
    life, dims = series.shape
    idx = np.minimum(np.arange(life) * grid // life, grid - 1)
    diffs = np.vstack([np.zeros((1, dims)), np.diff(series, axis=0)])
    means, noise = np.zeros((grid, dims)), np.zeros((grid, dims))
    for b in range(grid):
        rows = idx == b
        if rows.any():
            means[b] = series[rows].mean(axis=0)
            noise[b] = diffs[rows].std(axis=0) if rows.sum() > 1 else 0.0
        elif b > 0:
            means[b], noise[b] = means[b - 1], noise[b - 1]
    return np.hstack([means, noise, np.full((grid, 1), np.log(life) - 5.0)]).astype(np.float32)


def discriminative(
    real: Sequence[np.ndarray], fake: Sequence[np.ndarray], seed: int = 0, splits: int = SPLITS, epochs: int = 40
) -> dict[str, Any]:
    """``{"score", "accuracy", "splits"}``: can a classifier tell whole synthetic trajectories from real ones?"""
    xr = np.stack([summary(s) for s in real])
    xf = np.stack([summary(s) for s in fake])
    if len(xr) < 2 or len(xf) < 2:
        raise ValueError("need at least two real and two synthetic trajectories")
    accs = []
    for k in range(splits):
        rng = np.random.default_rng([seed, 21, k])
        r, f = rng.permutation(len(xr)), rng.permutation(len(xf))
        r_tr, r_te = r[: (len(r) + 1) // 2], r[(len(r) + 1) // 2 :]
        f_tr, f_te = f[: (len(f) + 1) // 2], f[(len(f) + 1) // 2 :]

        def balanced(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            n = max(len(a), len(b))
            a_rep, b_rep = np.resize(a, n), np.resize(b, n)  # the smaller class repeated
            return np.concatenate([xr[a_rep], xf[b_rep]]), np.concatenate([np.zeros(n), np.ones(n)])

        x_train, y_train = balanced(r_tr, f_tr)
        x_test, y_test = balanced(r_te, f_te)
        accs.append(classify(x_train, y_train, x_test, y_test, epochs=epochs, seed=seed + k))
    acc = float(np.mean(accs))
    return {"score": abs(acc - 0.5), "accuracy": acc, "splits": splits, "accuracies": [float(a) for a in accs]}


def rul_features(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-cycle features (last-5 and last-30 means, their squares, cycle count / 100) and capped RUL labels."""
    series = np.asarray(series, dtype=float)
    life = len(series)
    csum = np.vstack([np.zeros((1, series.shape[1])), np.cumsum(series, axis=0)])
    t = np.arange(1, life + 1)
    feats = []
    for w in (5, 30):
        lo = np.maximum(t - w, 0)
        feats.append((csum[t] - csum[lo]) / (t - lo)[:, None])
    x = np.hstack([*feats, *(f**2 for f in feats), (t / 100.0)[:, None]])
    return x, np.minimum(life - t, CAP).astype(float)


def _fit_ridge(series: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys = zip(*(rul_features(s) for s in series))
    x, y = np.vstack(xs), np.concatenate(ys)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    xz = np.hstack([(x - mu) / sd, np.ones((len(x), 1))])
    coef = np.linalg.solve(xz.T @ xz + RIDGE * np.eye(xz.shape[1]), xz.T @ y)
    return coef, mu, sd


def _rmse(model: tuple[np.ndarray, np.ndarray, np.ndarray], series: Sequence[np.ndarray]) -> float:
    coef, mu, sd = model
    errs = []
    for s in series:
        x, y = rul_features(s)
        pred = np.hstack([(x - mu) / sd, np.ones((len(x), 1))]) @ coef
        errs.append(np.clip(pred, 0.0, CAP) - y)
    return float(np.sqrt(np.mean(np.concatenate(errs) ** 2)))


def tstr(train: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], reference: Sequence[np.ndarray]) -> dict[str, float]:
    """RUL RMSE on ``reference`` of a ridge trained on ``synthetic`` (TSTR) and on ``train`` (TRTR), and their ratio."""
    tstr_rmse = _rmse(_fit_ridge(synthetic), reference)
    trtr_rmse = _rmse(_fit_ridge(train), reference)
    return {"tstr_rmse": tstr_rmse, "trtr_rmse": trtr_rmse, "tstr_ratio": tstr_rmse / max(trtr_rmse, 1e-9)}


def gate_metrics(
    train: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], reference: Sequence[np.ndarray], seed: int = 0, splits: int = SPLITS
) -> dict[str, float]:
    """The gate's numbers: ``discriminative_score`` (synthetic vs ``reference``), ``tstr_ratio`` and the two RMSEs."""
    disc = discriminative(reference, synthetic, seed=seed, splits=splits)
    return {"discriminative_score": disc["score"], "discriminative_accuracy": disc["accuracy"], **tstr(train, synthetic, reference)}
