"""A simple generator of whole run-to-failure trajectories: a fitted degradation curve plus Kalman residuals.

Why this baseline: with only a handful of entities that ran to failure, a deep
generator has almost nothing to learn from; a small model of what the entities share
can still produce new, plausible ones. Each sensor (z-scored) is modelled against the
cycles left before failure ``tau``:

``z_d(t) = o_{e,d} + s_e * G_d(tau) + residual_d(t)``

- ``G_d`` is the fleet's mean degradation curve of sensor ``d``: the mean of all training
  entities' values in bins of ``BIN`` cycles of ``tau``, smoothed over neighbouring bins,
  interpolated, minus its value far from failure (so ``G = 0`` when healthy; beyond the
  longest observed life it stays 0). No functional form is assumed, so sensors that
  degrade late and those that drift all along are both followed;
- each training entity's offsets ``o_e`` (its sensors' levels when new) and amplitude
  ``s_e`` (how hard it degraded) are fitted by least squares; a new entity takes the
  offsets of a randomly chosen training entity plus a little noise and an amplitude
  drawn from the log-normal fitted to theirs;
- the residual is a local-linear-trend process (:class:`~twinstream.models.imputation.KalmanLLT`,
  the same model as the Kalman gap filler) whose variances are fitted by maximum
  likelihood on the residual series of the training entities, simulated forward;
- life lengths are drawn from the training entities' lengths with a log-normal spread
  of ``LENGTH_SPREAD``.

Labels come with the trajectory: a generated entity fails at its last cycle. Nothing
but the training entities given to :meth:`TrajectoryModel.fit` is used.

>>> rng = np.random.default_rng(0)
>>> lives = [np.column_stack([np.exp(-(n - np.arange(1, n + 1)) / 40.0) * 3 + rng.normal(0, 0.2, n)]) for n in (150, 200, 180)]
>>> model = TrajectoryModel.fit(lives)
>>> round(float(model.shape(np.array([0.0]))[0, 0]), 0), round(float(model.shape(np.array([300.0]))[0, 0]), 1)
(3.0, 0.0)
>>> fake = model.sample(2, np.random.default_rng(1))
>>> [f.shape[1] for f in fake], all(100 <= len(f) <= 300 for f in fake), bool(fake[0][-5:].mean() > 2)
([1, 1], True, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twinstream.models.imputation import KalmanLLT

BIN = 10  # cycles of tau per bin of the mean curve
LENGTH_SPREAD = 0.1  # sd of log life length around a training entity's length
OFFSET_NOISE = 0.1  # sd (z units) added to a borrowed offset vector
MIN_LENGTH = 20


def _tau(length: int) -> np.ndarray:
    return length - np.arange(1, length + 1, dtype=float)  # cycles left: 0 at the last (failure) cycle


@dataclass(frozen=True)
class TrajectoryModel:
    """Fitted degradation curve, per-entity variation and residual process (see the module doc)."""

    centers: np.ndarray  # (B,) tau at the bin centres
    curve: np.ndarray  # (B, D) smoothed mean curve minus its healthy level
    offsets: np.ndarray  # (E, D) of the training entities
    log_amp_mean: float
    log_amp_sd: float
    lengths: np.ndarray  # (E,)
    residual: KalmanLLT

    def shape(self, tau: np.ndarray) -> np.ndarray:
        """``G(tau)``, ``(len(tau), D)``: 0 when healthy (far from failure), the mean degradation near it."""
        return np.column_stack([np.interp(tau, self.centers, self.curve[:, d]) for d in range(self.curve.shape[1])])

    @staticmethod
    def fit(series: Sequence[np.ndarray]) -> TrajectoryModel:
        """Fit on whole run-to-failure series ``(T_e, D)`` (z-scored; last row = failure)."""
        series = [np.asarray(s, dtype=float) for s in series]
        if not series:
            raise ValueError("no training entities")
        taus = np.concatenate([_tau(len(s)) for s in series])
        z = np.vstack(series)
        bins = (taus // BIN).astype(int)
        present = np.unique(bins)
        means = np.array([z[bins == b].mean(axis=0) for b in present])
        kernel = np.array([1.0, 2.0, 1.0])
        padded = np.vstack([means[:1], means, means[-1:]])
        smooth = np.array([(kernel[:, None] * padded[i : i + 3]).sum(axis=0) / kernel.sum() for i in range(len(means))])
        curve = smooth - smooth[-1]  # healthy level: the bin farthest from failure
        model = TrajectoryModel(
            (present + 0.5) * BIN, curve, np.zeros((len(series), z.shape[1])), 0.0, 0.0, np.array([len(s) for s in series]), KalmanLLT()
        )
        offsets, amps, residuals = [], [], []
        for s in series:
            g = model.shape(_tau(len(s)))
            gc, sc = g - g.mean(axis=0), s - s.mean(axis=0)
            denom = float((gc**2).sum())
            amp = max(float((gc * sc).sum() / denom) if denom > 0 else 1.0, 0.05)
            off = (s - amp * g).mean(axis=0)
            offsets.append(off)
            amps.append(amp)
            residuals.append(s - off - amp * g)
        log_amps = np.log(np.array(amps))
        return TrajectoryModel(
            model.centers,
            curve,
            np.array(offsets),
            float(log_amps.mean()),
            float(log_amps.std()) if len(series) > 1 else 0.0,
            model.lengths,
            KalmanLLT().fit(residuals),
        )

    def _residual(self, length: int, rng: np.random.Generator) -> np.ndarray:
        """One residual series simulated from the fitted local-linear-trend model (level and slope start at 0)."""
        d = self.curve.shape[1]
        ql, qs, r = (
            np.broadcast_to(np.asarray(v, dtype=float), (d,)) for v in (self.residual.q_level, self.residual.q_slope, self.residual.r)
        )
        level, slope = np.zeros(d), np.zeros(d)
        out = np.empty((length, d))
        for t in range(length):
            out[t] = level + rng.normal(0.0, np.sqrt(r))
            level = level + slope + rng.normal(0.0, np.sqrt(ql))
            slope = slope + rng.normal(0.0, np.sqrt(qs))
        return out

    def sample(self, n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` new run-to-failure trajectories ``(T, D)`` in the training z units (last row = failure)."""
        out = []
        d = self.curve.shape[1]
        for _ in range(n):
            j = int(rng.integers(len(self.lengths)))
            length = max(MIN_LENGTH, int(round(self.lengths[j] * np.exp(rng.normal(0.0, LENGTH_SPREAD)))))
            offset = self.offsets[int(rng.integers(len(self.offsets)))] + rng.normal(0.0, OFFSET_NOISE, d)
            amp = float(np.exp(rng.normal(self.log_amp_mean, self.log_amp_sd)))
            out.append(offset + amp * self.shape(_tau(length)) + self._residual(length, rng))
        return out
