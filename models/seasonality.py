"""Detect a season (a repeating cycle) in one twin's own history, for an h-step forecaster.

Why the autocorrelation of *h-step changes* and not of the levels: levels of a random
walk or of a trending series are correlated at every lag, so a peak in their
autocorrelation says nothing about a cycle. What an h-step forecaster needs to know is
whether the change over the next h samples repeats one season later, i.e. whether
``y[t+h] - y[t]`` correlates with ``y[t+h-s] - y[t-s]``. For white noise, a random walk or
a step-like series that correlation is about zero at every lag ``s >= h``; for a daily
cycle it peaks at the period. So the same statistic decides both "is there a season"
and "does a seasonal feature help at this horizon".

>>> import math, random
>>> rng = random.Random(0)
>>> cycle = [math.sin(2 * math.pi * t / 48) + 0.1 * rng.gauss(0, 1) for t in range(48 * 8)]
>>> abs(detect_season(cycle, horizon=4, max_season=100) - 48) <= 1
True
>>> walk = [0.0]
>>> for _ in range(600):
...     walk.append(walk[-1] + rng.gauss(0, 1))
>>> detect_season(walk, horizon=4, max_season=100) is None
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MIN_CYCLES = 3.0  # a season must be seen this many times in the history before it is believed
DEFAULT_THRESHOLD = 0.3


def change_autocorrelation(values: Sequence[float] | np.ndarray, horizon: int, max_lag: int) -> np.ndarray:
    """Autocorrelation of the h-step changes at lags ``0..max_lag`` (NaN-aware: gaps count as zero change).

    Computed with one FFT, so a detection over a few thousand samples costs well under a
    millisecond. Lags with too little overlap (fewer than ``MIN_CYCLES``-worth of samples)
    are returned as NaN.
    """
    y = np.asarray(values, dtype=float)
    k = max(1, int(horizon))
    if y.size <= k + 2:
        return np.full(max_lag + 1, np.nan)
    change = y[k:] - y[:-k]
    ok = np.isfinite(change)
    change = np.where(ok, change - (change[ok].mean() if ok.any() else 0.0), 0.0)
    n = change.size
    size = 1 << int(np.ceil(np.log2(n + max_lag + 1)))  # zero padding: no circular wrap-around
    spectrum = np.fft.rfft(change, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: max_lag + 1]
    mask_spec = np.fft.rfft(ok.astype(float), size)
    counts = np.rint(np.fft.irfft(mask_spec * np.conj(mask_spec), size)[: max_lag + 1])
    out = np.full(max_lag + 1, np.nan)
    denom = acov[0] / max(counts[0], 1.0)
    if denom <= 0.0:
        return out
    usable = counts >= 8
    out[usable] = (acov[usable] / counts[usable]) / denom
    lags = np.arange(max_lag + 1)
    out[lags * MIN_CYCLES > n] = np.nan
    return out


def detect_season(
    values: Sequence[float] | np.ndarray,
    horizon: int,
    max_season: int,
    min_season: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> int | None:
    """The season length (in samples) whose h-step changes repeat most strongly, or None.

    A lag ``s`` qualifies when ``s >= max(2h, 4)`` (shorter lags overlap the change itself),
    at least ``MIN_CYCLES`` seasons fit in ``values``, its autocorrelation is a local
    maximum and at least ``threshold``. The shortest qualifying lag wins unless a longer
    one correlates at least 10% more strongly (a daily cycle also peaks at two days).
    """
    lo = max(2 * horizon, 4) if min_season is None else max(min_season, 2)
    if max_season < lo:
        return None
    acf = change_autocorrelation(values, horizon, max_season + 1)
    best: int | None = None
    best_r = threshold
    for s in range(lo, max_season + 1):
        r = acf[s]
        if not np.isfinite(r) or r < threshold:
            continue
        left, right = acf[s - 1], acf[s + 1]
        if (np.isfinite(left) and left > r) or (np.isfinite(right) and right > r):
            continue
        if best is None:
            best, best_r = s, r
        elif r > best_r * 1.1:
            best, best_r = s, r
    return best
