"""Prediction intervals from a twin's own recent residuals, kept calibrated online.

Why not a Gaussian band: residuals of real series are heavy-tailed and their scale moves
(a machine that heats up is noisier). The interval here is a quantile of the twin's own
recent *scaled* absolute residuals (``|error| / scale`` with the scale the forecaster had
when it predicted), multiplied back by the current scale, so it widens when the series
gets noisier. A quantile of past residuals alone under-covers after a change; adaptive
conformal inference (Gibbs & Candes, 2021) moves the quantile level after every scored
forecast: up after a miss, down after a hit, so that the long-run share of misses tends
to the nominal one whatever the series does.

>>> band = ConformalBand(coverage=0.9, window=200)
>>> for i in range(400):
...     band.update(abs(((i * 7919) % 100) / 50.0 - 1.0), covered=None)
>>> round(band.halfwidth(1.0), 2)
0.9
"""

from __future__ import annotations

import numpy as np

DEFAULT_WINDOW = 1000
DEFAULT_GAMMA = 0.005
RESORT_EVERY = 16  # a quantile of 1,000 residuals barely moves in 16 more; sorting each event cost ~60% of a step


class ConformalBand:
    """Bounded window of scaled absolute residuals + an adaptive miss-rate target.

    ``update(r, covered)`` records one scored forecast: ``r`` its scaled absolute residual,
    ``covered`` whether the interval that was published contained the truth (None when no
    interval was published, e.g. before warm-up). ``halfwidth(scale)`` is the current
    interval half-width in the series' units.
    """

    __slots__ = ("coverage", "window", "gamma", "alpha", "_buf", "_n", "_pos", "_sorted", "_sorted_at")

    def __init__(self, coverage: float = 0.9, window: int = DEFAULT_WINDOW, gamma: float = DEFAULT_GAMMA) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        self.coverage = float(coverage)
        self.window = int(window)
        self.gamma = float(gamma)
        self.alpha = 1.0 - self.coverage
        self._buf = np.zeros(self.window, dtype=np.float32)
        self._n = 0
        self._pos = 0
        self._sorted: np.ndarray | None = None  # the window sorted, refreshed every RESORT_EVERY residuals
        self._sorted_at = 0

    @property
    def count(self) -> int:
        return min(self._n, self.window)

    def update(self, scaled_residual: float, covered: bool | None) -> None:
        if np.isfinite(scaled_residual):
            self._buf[self._pos] = scaled_residual
            self._pos = (self._pos + 1) % self.window
            self._n += 1
        if covered is not None:
            target = 1.0 - self.coverage
            self.alpha += self.gamma * (target - (0.0 if covered else 1.0))
            self.alpha = min(max(self.alpha, -0.5), 1.0)

    def quantile(self) -> float:
        """The scaled residual quantile at the current adaptive level (an order statistic; capped at 2x the max)."""
        n = self.count
        if n == 0:
            return float("nan")
        if self._sorted is None or self._n - self._sorted_at >= RESORT_EVERY or self._sorted.size != n:
            self._sorted = np.sort(self._buf[:n])
            self._sorted_at = self._n
        data = self._sorted
        level = 1.0 - self.alpha
        if level >= 1.0:
            return 2.0 * float(data[-1])
        if level <= 0.0:
            return 0.0
        return float(data[min(int(np.ceil(level * data.size)) - 1, data.size - 1)] if level * data.size >= 1 else data[0])

    def halfwidth(self, scale: float) -> float:
        q = self.quantile()
        return q * scale if np.isfinite(q) else float("nan")
