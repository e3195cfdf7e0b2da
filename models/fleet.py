"""Fleet-level online learning: what the fleet learns from labels as they are released.

Why: a twin's own labels come late or never (an engine's remaining life is known only
when it fails). When a fleet member fails, its whole history becomes labelled; a shared
online model learns from it in one pass, and every twin that names the fleet model uses
it at once. With a prior it learns the prior's residual (correcting the prior for this
fleet); without one it learns the target itself.

Fleet models are process-level objects looked up by name, like the prior: a twin's
pickled state holds only the name, never the shared model.

>>> fleet = get_fleet("doc-example", residual=False, cap=125.0)
>>> for i in range(200):
...     fleet.learn_one({"age": float(i % 50)}, 125.0 - (i % 50), base=0.0)
>>> fleet.seen, 100.0 < fleet.predict_one({"age": 10.0}, base=0.0) <= 125.0
(200, True)
>>> drop_fleet("doc-example")
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

_FLEETS: dict[str, FleetModel] = {}


class FleetModel:
    """Exact online ridge regression on twin features, from sufficient statistics.

    Why not SGD: released histories arrive engine by engine, each sorted by time, which
    drags a one-pass SGD model toward the last engine seen. Accumulating ``sum x``,
    ``sum x x^T`` and ``sum x y`` makes the fit independent of arrival order, still one
    pass and O(d^2) memory, shared by the whole fleet (not per twin). Features are
    standardized from the same statistics when solving; a missing feature is imputed
    with its running mean.

    ``residual=True``: predicts a correction added to the base (the prior's prediction).
    ``residual=False``: predicts the target itself (cold: the ``cap``, i.e. "healthy").
    """

    def __init__(self, residual: bool, cap: float, alpha: float = 1.0, exclude: tuple[str, ...] = ("age", "base_rul")) -> None:
        self.residual = residual
        self.exclude = exclude
        self.cap = cap
        self.alpha = alpha
        self.names: list[str] | None = None
        self.seen = 0
        self._sx = self._sxx = self._sxy = None
        self._sy = 0.0
        self._solution: tuple[np.ndarray, np.ndarray, np.ndarray, float] | None = None

    def _vector(self, x: Mapping[str, float | None], base: float) -> np.ndarray:
        if self.names is None:
            self.names = sorted(k for k in x if k not in self.exclude)
        v = np.array([_num(x.get(k)) for k in self.names] + [base], dtype=np.float64)
        missing = np.isnan(v)
        if missing.any():
            v[missing] = (self._sx[missing] / self.seen) if self.seen else 0.0
        return v

    def _solve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        if self._solution is None:
            n = float(self.seen)
            mean = self._sx / n
            cov = self._sxx / n - np.outer(mean, mean)
            std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
            std[std < 1e-9] = np.inf  # constant feature: no weight
            ybar = self._sy / n
            czy = (self._sxy / n - mean * ybar) / std
            cz = cov / np.outer(std, std)
            w = np.linalg.solve(cz + (self.alpha / n) * np.eye(len(mean)) + 1e-9 * np.eye(len(mean)), czy)
            self._solution = (w / std, mean, std, ybar)
        return self._solution

    def predict_one(self, x: Mapping[str, float | None], base: float) -> float:
        """Prediction (residual mode: base + correction), clipped to [0, cap]."""
        if self.seen < 2:
            value = base if self.residual else self.cap
        else:
            w, mean, _, ybar = self._solve()
            out = float(w @ (self._vector(x, base) - mean)) + ybar
            value = base + out if self.residual else out
            if not math.isfinite(value):
                value = base if self.residual else self.cap
        return min(max(value, 0.0), self.cap)

    def learn_one(self, x: Mapping[str, float | None], y: float, base: float) -> None:
        target = min(y, self.cap) - (base if self.residual else 0.0)
        v = self._vector(x, base)
        if self._sx is None:
            d = len(v)
            self._sx, self._sxx, self._sxy = np.zeros(d), np.zeros((d, d)), np.zeros(d)
        self._sx += v
        self._sxx += np.outer(v, v)
        self._sxy += v * target
        self._sy += target
        self.seen += 1
        self._solution = None


def _num(v: float | None) -> float:
    return float(v) if v is not None and math.isfinite(v) else math.nan


def get_fleet(name: str, residual: bool = True, cap: float = 125.0) -> FleetModel:
    """The process's fleet model called ``name`` (created on first use)."""
    fleet = _FLEETS.get(name)
    if fleet is None:
        fleet = _FLEETS[name] = FleetModel(residual=residual, cap=cap)
    return fleet


def drop_fleet(name: str) -> None:
    """Forget a fleet model (tests, evaluation arms)."""
    _FLEETS.pop(name, None)
