"""Non-generative gap filling: linear interpolation, last value, Kalman local-linear-trend.

These are the always-available baselines of the synthetic-data path: the
fallback when no generator passes its quality gate, and the yardstick a generator must
beat. One small interface, :class:`Imputer`: ``fit`` on complete training series
(learns parameters, if any), ``impute`` a ``(T,)`` or ``(T, D)`` float array in which
NaN marks the missing values. Observed values are returned unchanged; every NaN is
filled (unless a column has no observed value at all, which stays NaN).

Online use: :class:`LastValue` and ``KalmanLLT(smooth=False)`` are causal (a fill uses
only earlier samples), so they can fill a sample as soon as it is missing; linear
interpolation and the Kalman smoother also use the first sample after the gap, so they
fill a gap when it has closed. All of them work on a bounded window of recent samples.

The local-linear-trend model (Durbin & Koopman, *Time Series Analysis by State Space
Methods*, ch. 3) is, per column, ``y_t = level_t + eps``, ``level_{t+1} = level_t +
slope_t + eta``, ``slope_{t+1} = slope_t + zeta``, with variances ``r``, ``q_level`` and
``q_slope``. The filter skips the update at a missing value and the Rauch-Tung-Striebel
smoother carries information back from after the gap. :meth:`KalmanLLT.fit` picks the
two signal-to-noise ratios per column by maximum (concentrated) likelihood on a grid,
and the noise variance in closed form.

The initial level is diffuse (unknown); the initial slope is diffuse too unless a
prior is given (``slope_sd0``, which :meth:`KalmanLLT.fit` derives from the training
series): with a diffuse slope, a window holding only two or three observed samples
gets its slope from those noisy points alone and the smoother extrapolates it across
the gap.

>>> import numpy as np
>>> y = np.array([0.0, 1.0, np.nan, np.nan, 4.0, np.nan])
>>> LinearInterpolation().impute(y).tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 4.0]
>>> LastValue().impute(y).tolist()
[0.0, 1.0, 1.0, 1.0, 4.0, 4.0]
>>> kf = KalmanLLT(q_level=1e-9, q_slope=1e-9, r=1.0)
>>> kf.impute(y).round(3).tolist()
[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from twinstream.models.llt import DIFFUSE, concentrated_loglik, llt_filter  # noqa: F401  (DIFFUSE: part of this API)


def as_2d(y: np.ndarray) -> tuple[np.ndarray, bool]:
    """``(T, D)`` float copy of ``y`` and whether it was one-dimensional."""
    arr = np.array(y, dtype=float, copy=True)
    if arr.ndim == 1:
        return arr[:, None], True
    if arr.ndim != 2:
        raise ValueError(f"expected a (T,) or (T, D) array, got shape {arr.shape}")
    return arr, False


class Imputer(abc.ABC):
    """Fills NaNs in a multivariate series; observed values are never changed."""

    name: ClassVar[str] = "abstract"
    causal: ClassVar[bool] = False  # True: a fill depends only on earlier samples

    def fit(self, series: Sequence[np.ndarray]) -> Imputer:
        """Learn parameters from complete (or partly missing) training series of shape ``(T, D)``."""
        return self

    def impute(self, y: np.ndarray) -> np.ndarray:
        """``y`` with every NaN filled (same shape)."""
        arr, flat = as_2d(y)
        out = self._impute(arr)
        out[~np.isnan(arr)] = arr[~np.isnan(arr)]
        return out[:, 0] if flat else out

    def impute_many(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Fill several independent series (subclasses may batch)."""
        return [self.impute(y) for y in series]

    @abc.abstractmethod
    def _impute(self, y: np.ndarray) -> np.ndarray:
        """Fill a ``(T, D)`` array."""


class LinearInterpolation(Imputer):
    """Straight line between the observed values on either side; the nearest value at the ends."""

    name = "linear"

    def _impute(self, y: np.ndarray) -> np.ndarray:
        out = y.copy()
        t = np.arange(len(y), dtype=float)
        for d in range(y.shape[1]):
            seen = ~np.isnan(y[:, d])
            if seen.any():
                out[:, d] = np.interp(t, t[seen], y[seen, d])
        return out


class LastValue(Imputer):
    """Carry the last observed value forward (the first observed one back, before any)."""

    name = "last_value"
    causal = True

    def _impute(self, y: np.ndarray) -> np.ndarray:
        out = y.copy()
        for d in range(y.shape[1]):
            seen = np.flatnonzero(~np.isnan(y[:, d]))
            if seen.size:
                idx = np.maximum.accumulate(np.where(~np.isnan(y[:, d]), np.arange(len(y)), 0))
                filled = y[idx, d]
                filled[: seen[0]] = y[seen[0], d]
                out[:, d] = filled
        return out


class KalmanLLT(Imputer):
    """Kalman local-linear-trend smoother (or, with ``smooth=False``, causal filter), per column.

    Scalar variances apply to every column; :meth:`fit` learns one set per column.
    ``slope_sd0`` is the prior standard deviation of the initial slope (per column or
    scalar; ``None`` or a non-finite entry: diffuse, the slope is learned from the window
    alone); :meth:`fit` sets it from the training series.
    :meth:`impute_std` gives the standard deviation of each fill (a per-value confidence).
    """

    name = "kalman"

    # log10 signal-to-noise ratios searched by fit: a coarse grid, then a finer one around each column's best
    LEVEL_RANGE: ClassVar[tuple[float, float]] = (-10.0, 1.0)
    SLOPE_RANGE: ClassVar[tuple[float, float]] = (-11.0, -1.0)
    REFINE: ClassVar[tuple[float, ...]] = (-0.5, -0.25, 0.0, 0.25, 0.5)

    def __init__(self, q_level: float | Sequence[float] = 1e-3, q_slope: float | Sequence[float] = 1e-6,
                 r: float | Sequence[float] = 1.0, smooth: bool = True,
                 slope_sd0: float | Sequence[float] | None = None) -> None:
        self.q_level = np.atleast_1d(np.asarray(q_level, dtype=float))
        self.q_slope = np.atleast_1d(np.asarray(q_slope, dtype=float))
        self.r = np.atleast_1d(np.asarray(r, dtype=float))
        self.slope_sd0 = None if slope_sd0 is None else np.atleast_1d(np.asarray(slope_sd0, dtype=float))
        self.smooth = smooth
        self.name = "kalman" if smooth else "kalman_filter"  # type: ignore[misc]

    @property
    def causal(self) -> bool:  # type: ignore[override]
        return not self.smooth

    def fit(self, series: Sequence[np.ndarray]) -> KalmanLLT:
        """Per column: maximum likelihood of (q_level/r, q_slope/r) on a log grid over all series, then r and the slope prior.

        The series of one column share the parameters (their likelihoods add up); the
        noise variance ``r`` is profiled out, so only the two ratios are searched (with a
        diffuse start, so the prior below does not enter the likelihood).

        ``slope_sd0``, per column: twice the root-mean-square of the training series'
        least-squares slopes (:func:`slope_prior_sd`). Why: a window with only one to
        three observed samples (a gap at the start of a series closed by one measured
        sample) must not extrapolate a slope estimated from two noisy points across the
        gap; the fleet's own slopes bound what is plausible, and the factor 2 leaves room
        for a steeper entity. Windows with many samples are hardly affected: their own
        data outweigh the prior.

        >>> rng = np.random.default_rng(0)
        >>> train = [0.01 * np.arange(100) + rng.normal(0.0, 0.3, 100) for _ in range(20)]
        >>> kf = KalmanLLT().fit(train)
        >>> round(float(kf.slope_sd0[0]), 3)
        0.02
        >>> few = np.r_[np.full(6, np.nan), 1.0, 1.6]  # two noisy samples after a gap at the start
        >>> diffuse = KalmanLLT(kf.q_level, kf.q_slope, kf.r)  # no slope prior
        >>> diffuse.impute(few)[:6].round(1).tolist()  # extrapolates the slope 0.6 from two points
        [-2.6, -2.0, -1.4, -0.8, -0.2, 0.4]
        >>> kf.impute(few)[:6].round(1).tolist()  # stays near the observed values
        [1.3, 1.3, 1.3, 1.3, 1.3, 1.3]
        """
        cols = [as_2d(s)[0] for s in series]
        dims = {c.shape[1] for c in cols}
        if len(dims) != 1:
            raise ValueError("all training series need the same columns")
        (d,) = dims
        steps = max(len(c) for c in cols)
        padded = np.full((len(cols), steps, d), np.nan)
        for i, c in enumerate(cols):
            padded[i, : len(c)] = c
        per_col = padded.transpose(2, 0, 1).reshape(d * len(cols), steps)  # rows: column-major, then series
        lo_l, hi_l = self.LEVEL_RANGE
        lo_s, hi_s = self.SLOPE_RANGE
        coarse = [(np.full(d, a), np.full(d, b)) for a, b in
                  itertools.product(np.arange(lo_l, hi_l + 0.01), np.arange(lo_s, hi_s + 0.01))]
        best_ll, best_l, best_s, best_r = self._search(per_col, d, len(cols), coarse)
        fine = [(best_l + a, best_s + b) for a, b in itertools.product(self.REFINE, self.REFINE)]
        ll, lvl, slp, r = self._search(per_col, d, len(cols), fine)
        better = ll >= best_ll
        best_l, best_s, best_r = np.where(better, lvl, best_l), np.where(better, slp, best_s), np.where(better, r, best_r)
        self.q_level, self.q_slope, self.r = 10.0**best_l * best_r, 10.0**best_s * best_r, best_r
        self.slope_sd0 = slope_prior_sd(cols)
        return self

    @staticmethod
    def _search(per_col: np.ndarray, d: int, n_series: int, grid: list[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Best (log-likelihood, log10 level ratio, log10 slope ratio, r) per column over ``grid``."""
        best = np.full(d, -np.inf)
        out_l, out_s, out_r = np.zeros(d), np.zeros(d), np.ones(d)
        chunk = max(1, 20000 // per_col.shape[0])
        for start in range(0, len(grid), chunk):
            block = grid[start:start + chunk]
            ys = np.tile(per_col, (len(block), 1))
            ql = np.concatenate([np.repeat(10.0**g[0], n_series) for g in block])
            qs = np.concatenate([np.repeat(10.0**g[1], n_series) for g in block])
            _, _, stats = llt_filter(ys, ql, qs, 1.0, mode="loglik")
            stats = stats.reshape(3, len(block), d, n_series).sum(axis=3)  # pool the series of a column
            ll = concentrated_loglik(stats)  # (len(block), d)
            for k, (lr, sr) in enumerate(block):
                better = ll[k] > best
                best = np.where(better, ll[k], best)
                out_l, out_s = np.where(better, lr, out_l), np.where(better, sr, out_s)
                out_r = np.where(better, stats[0, k] / np.maximum(stats[2, k], 1), out_r)
        return best, out_l, out_s, out_r

    def _params(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = []
        for v in (self.q_level, self.q_slope, self.r):
            if v.size not in (1, d):
                raise ValueError(f"{v.size} fitted columns, the series has {d}")
            out.append(np.broadcast_to(v, (d,)))
        return out[0], out[1], out[2]

    def _slope_var0(self, d: int) -> np.ndarray | None:
        """Initial slope variance per column (inf: diffuse), or ``None`` for an all-diffuse start."""
        sd = getattr(self, "slope_sd0", None)  # instances pickled before the prior existed have none
        if sd is None:
            return None
        if sd.size not in (1, d):
            raise ValueError(f"{sd.size} slope priors, the series has {d} columns")
        return np.where(np.isfinite(sd), np.broadcast_to(sd, (d,)) ** 2, np.inf)

    def _run(self, series: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        cols = [as_2d(s)[0] for s in series]
        if not cols:
            return [], []
        d = cols[0].shape[1]
        steps = max(len(c) for c in cols)
        padded = np.full((len(cols), steps, d), np.nan)
        for i, c in enumerate(cols):
            padded[i, : len(c)] = c
        ql, qs, r = self._params(d)
        sv = self._slope_var0(d)
        flat = padded.transpose(0, 2, 1).reshape(len(cols) * d, steps)
        level, var, _ = llt_filter(flat, np.tile(ql, len(cols)), np.tile(qs, len(cols)), np.tile(r, len(cols)),
                                   "smooth" if self.smooth else "filter", None if sv is None else np.tile(sv, len(cols)))
        level = level.reshape(len(cols), d, steps).transpose(0, 2, 1)
        var = var.reshape(len(cols), d, steps).transpose(0, 2, 1)
        none_seen = np.isnan(padded).all(axis=1)  # (N, d)
        level[np.broadcast_to(none_seen[:, None, :], level.shape)] = np.nan
        return [level[i, : len(c)] for i, c in enumerate(cols)], [var[i, : len(c)] for i, c in enumerate(cols)]

    def _impute(self, y: np.ndarray) -> np.ndarray:
        return self._run([y])[0][0]

    def impute_many(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        levels, _ = self._run(series)
        out = []
        for y, level in zip(series, levels):
            arr, flat = as_2d(y)
            filled = np.where(np.isnan(arr), level, arr)
            out.append(filled[:, 0] if flat else filled)
        return out

    def levels_many(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The estimated level of every sample, observed ones included (the denoised series), ``(T, D)`` each."""
        return self._run(series)[0]

    def impute_with_std(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`impute` and :meth:`impute_std` from one smoother run."""
        arr, flat = as_2d(y)
        (level,), (var,) = self._run([arr])
        _, _, r = self._params(arr.shape[1])
        missing = np.isnan(arr)
        filled = np.where(missing, level, arr)
        std = np.where(missing, np.sqrt(np.maximum(var, 0.0) + r), 0.0)
        return (filled[:, 0], std[:, 0]) if flat else (filled, std)

    def impute_std(self, y: np.ndarray) -> np.ndarray:
        """Standard deviation of each fill around the true value (0 where observed)."""
        return self.impute_with_std(y)[1]


def slope_prior_sd(series: Sequence[np.ndarray], factor: float = 2.0) -> np.ndarray:
    """Per column: ``factor`` x the root-mean-square least-squares slope (per sample) of the series.

    Each series' slope is fitted on its observed values (at least two); a column with no
    such series gets ``inf`` (no prior: diffuse).

    >>> t = np.arange(10.0)
    >>> slope_prior_sd([np.c_[0.1 * t, -t], np.c_[0.3 * t, np.full(10, np.nan)]]).round(3).tolist()
    [0.447, 2.0]
    """
    cols = [as_2d(s)[0] for s in series]
    if not cols:
        raise ValueError("no series to derive a slope prior from")
    d = cols[0].shape[1]
    sum_sq, count = np.zeros(d), np.zeros(d)
    for c in cols:
        t = np.arange(len(c), dtype=float)
        for j in range(d):
            seen = ~np.isnan(c[:, j])
            if seen.sum() < 2:
                continue
            tc = t[seen] - t[seen].mean()
            slope = float(tc @ (c[seen, j] - c[seen, j].mean()) / (tc @ tc))
            sum_sq[j] += slope * slope
            count[j] += 1
    rms = np.sqrt(sum_sq / np.maximum(count, 1))
    return np.where(count > 0, factor * rms, np.inf)


BASELINES: dict[str, type[Imputer]] = {cls.name: cls for cls in (LinearInterpolation, LastValue, KalmanLLT)}


def mae_rmse(filled: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """MAE and RMSE over the masked (hidden) entries only."""
    err = (np.asarray(filled) - np.asarray(truth))[np.asarray(mask, dtype=bool)]
    if err.size == 0:
        return math.nan, math.nan
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2)))


def hidden_error(estimates: Sequence[np.ndarray], truth: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict[str, float]:
    """MAE and RMSE over the hidden values of all series together."""
    pred = np.concatenate([e[m] for e, m in zip(estimates, masks)])
    true = np.concatenate([t[m] for t, m in zip(truth, masks)])
    mae, rmse = mae_rmse(pred, true, np.ones(pred.shape, dtype=bool))
    return {"mae": mae, "rmse": rmse}
