"""Anomaly score in [0, 1] per event from a twin's own forecast residuals.

Why residuals of the twin's own forecaster: "unusual" only means something relative to
what this entity usually does. The score of a sample is the share of the twin's recent
scaled residuals that are smaller than this sample's (an empirical CDF), so 0.99 means
"worse than 99% of the recent surprises"; ``threshold`` turns it into a flag. Before the
twin has residuals to compare with, the score is 0 and nothing is flagged.

>>> import math
>>> det = ResidualAnomaly(horizon=1, threshold=0.99)
>>> scores = [det.step(t, math.sin(t / 10.0)) for t in range(400)]
>>> score, flagged = det.step(400, 25.0)
>>> score > 0.99, flagged
(True, True)
"""

from __future__ import annotations

import numpy as np

from twinstream.models.forecast import Forecast, OnlineForecaster


class ResidualAnomaly:
    """Wraps an :class:`OnlineForecaster`; ``step`` scores the sample against the forecast made for it."""

    def __init__(self, horizon: int = 1, threshold: float = 0.99, **forecaster_params: object) -> None:
        self.threshold = float(threshold)
        self.forecaster = OnlineForecaster(horizon, **forecaster_params)  # type: ignore[arg-type]
        self.last: Forecast | None = None  # the forecast made at the latest step (carries in_domain)

    def step(self, seq: int, value: float | None) -> tuple[float, bool]:
        fc = self.forecaster
        score = 0.0
        if value is not None and np.isfinite(value) and fc.pending and fc.pending[0][0] <= seq:
            for entry in fc.pending:
                if entry[0] == seq:
                    _, _, base, scale, _, _, _, published = entry
                    guess = published if published is not None else base
                    n = fc.band.count
                    if n >= 30:
                        r = abs(value - guess) / scale
                        score = float(np.mean(fc.band._buf[:n] < r))
                    break
        self.last = fc.step(seq, value)
        return score, score >= self.threshold
