"""Recursive least squares with forgetting, and the forecast prior built from it.

Why RLS: it solves the exponentially weighted least-squares problem exactly after every
sample, with no learning rate to tune and no divergence on badly scaled inputs (the
failure mode of plain SGD on raw lags). Cost is O(d^2) per update for d inputs; with the
dozen inputs of a forecaster that is a few microseconds.

Covariance windup (the classic RLS failure under forgetting: an input that stays zero
lets its covariance grow without bound) is capped: the diagonal of ``P`` is kept at or
below ``p_max``.

>>> r = RLS(2, forgetting=1.0, p0=1e4)
>>> for i in range(50):
...     r.update([1.0, float(i % 5)], 3.0 + 2.0 * (i % 5))
>>> [round(float(v), 3) for v in r.w]
[3.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twinstream.models.domain import DomainBounds

P0 = 10.0
HOUSEKEEPING_EVERY = 16  # symmetrize and cap P this often: per update it cost as much as the update itself


class RLS:
    """Exponentially weighted recursive least squares: ``y ~ w . x``."""

    __slots__ = ("w", "P", "forgetting", "p0", "p_max", "n")

    def __init__(self, dim: int, forgetting: float = 0.999, p0: float = P0, p_max: float = 1e4) -> None:
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        self.w = np.zeros(dim)
        self.P = np.eye(dim) * p0
        self.forgetting, self.p0, self.p_max = float(forgetting), float(p0), float(p_max)
        self.n = 0

    def predict(self, x: np.ndarray) -> float:
        return float(self.w @ x)

    def update(self, x: np.ndarray | Sequence[float], y: float) -> None:
        x = np.asarray(x, dtype=float)
        px = self.P @ x
        denom = self.forgetting + float(x @ px)
        if not (denom > 0.0 and denom < np.inf):  # also catches NaN
            self.reset_inputs(range(len(self.w)))
            return
        gain = px / denom
        err = y - float(self.w @ x)
        if not -np.inf < err < np.inf:
            self.reset_inputs(range(len(self.w)))
            return
        P = self.P - np.outer(gain, px)
        P *= 1.0 / self.forgetting
        self.n += 1
        if self.n % HOUSEKEEPING_EVERY == 0 and not self._housekeeping(P):
            return
        self.w = self.w + gain * err
        self.P = P

    def _housekeeping(self, P: np.ndarray) -> bool:
        """Every few updates: symmetrize P, cap its diagonal (windup), start over on numerical trouble."""
        if not (np.isfinite(self.w).all() and np.isfinite(P).all()):
            self.reset_inputs(range(len(self.w)))  # numerical trouble: start over rather than publish garbage
            return False
        P += P.T
        P *= 0.5
        diag = np.diag(P)
        if diag.max() > self.p_max:
            shrink = np.sqrt(np.minimum(1.0, self.p_max / np.maximum(diag, 1e-300)))
            P *= shrink[:, None] * shrink[None, :]
        return True

    def reset_inputs(self, indices: Sequence[int] | range) -> None:
        """Forget what was learned about these inputs (their weights and covariance)."""
        idx = list(indices)
        self.w[idx] = 0.0
        self.P[idx, :] = 0.0
        self.P[:, idx] = 0.0
        self.P[idx, idx] = self.p0

    def copy(self, forgetting: float | None = None) -> RLS:
        out = RLS(len(self.w), self.forgetting if forgetting is None else forgetting, self.p0, self.p_max)
        out.w, out.P, out.n = self.w.copy(), self.P.copy(), self.n
        return out


@dataclass(frozen=True)
class ForecastPrior:
    """What a forecaster learned on history, reused as the starting point of new twins.

    ``rls`` holds the regression weights (in scale units, so they transfer between
    entities whose values differ in level and spread), ``season`` the season found in the
    history, ``domain`` the ranges of the inputs seen in training, and the training errors
    (scaled) of the regression and of persistence seed the divergence guard.
    """

    rls: RLS
    season: int | None
    domain: DomainBounds
    train_mae_scaled: float
    train_persistence_mae_scaled: float
    version: str = "history-v1"
    rls_extended: RLS | None = None  # the extended regression (slow-mean gap, seasonal inputs for ``season``)
