"""A one-factor trend across sensors: the sensors of a degrading machine move together.

Why: a per-sensor Kalman smoother estimates each sensor's level across a gap from that
sensor's own noisy neighbours only. In C-MAPSS (and most degrading plants) the sensors
share one degradation path, so their levels can be estimated together, borrowing
strength across sensors: the common path is seen through every sensor at once.

Model, per window (z-scored), a linear Gaussian state space (Durbin & Koopman):
``y[t, d] = lambda_d * h[t] + u[t, d] + eps``, ``eps ~ N(0, r_d)``; ``h`` is a local
linear trend (level noise ``q_h``, slope noise ``q_slope``) shared by all sensors, with
fleet loadings ``lambda`` (first principal direction of the training engines' level
changes); ``u[., d]`` is each sensor's own offset, a random walk with variance
``q_u[d]`` (the entity's own level and any drift of its own). Missing values are
skipped (sequential univariate updates); a Rauch-Tung-Striebel pass smooths.

>>> rng = np.random.default_rng(0)
>>> h = np.linspace(0, 3, 80)
>>> lam = np.array([1.0, -0.5, 0.8])
>>> y = h[:, None] * lam + rng.normal(0, 0.3, (80, 3))
>>> y[30:40] = np.nan
>>> ft = FactorTrend(lam, r=np.full(3, 0.09), q_h=1e-6, q_slope=1e-8, q_u=np.zeros(3))
>>> level, var = ft.run([y])
>>> float(np.abs(level[0][30:40] - (h[30:40, None] * lam)).max()) < 0.15
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DIFFUSE = 1e4


class FactorTrend:
    """One shared local-linear-trend factor plus per-sensor random-walk offsets; see the module docstring."""

    def __init__(self, loadings: np.ndarray, r: np.ndarray, q_h: float, q_slope: float, q_u: np.ndarray) -> None:
        self.loadings = np.asarray(loadings, dtype=float)
        self.r = np.asarray(r, dtype=float)
        self.q_h, self.q_slope = float(q_h), float(q_slope)
        self.q_u = np.asarray(q_u, dtype=float)

    @property
    def dims(self) -> int:
        return len(self.loadings)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"factor_loadings": self.loadings, "factor_r": self.r, "factor_q": np.array([self.q_h, self.q_slope]),
                "factor_q_u": self.q_u}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "FactorTrend":
        return cls(a["factor_loadings"], a["factor_r"], float(a["factor_q"][0]), float(a["factor_q"][1]), a["factor_q_u"])

    def run(self, windows: Sequence[np.ndarray], chunk: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Smoothed level ``lambda h + u`` and its variance, ``(T, D)`` each, per window."""
        levels: list[np.ndarray] = []
        variances: list[np.ndarray] = []
        for start in range(0, len(windows), chunk):
            part = list(windows[start:start + chunk])
            steps = max(len(w) for w in part)
            y = np.full((len(part), steps, self.dims), np.nan)
            for i, w in enumerate(part):
                y[i, : len(w)] = w
            lv, var = self._smooth(y)
            levels.extend(lv[i, : len(w)] for i, w in enumerate(part))
            variances.extend(var[i, : len(w)] for i, w in enumerate(part))
        return levels, variances

    def _smooth(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, steps, d = y.shape
        s = d + 2  # state: h, slope, u_1..u_d
        z = np.zeros((d, s))
        z[:, 0] = self.loadings
        z[np.arange(d), 2 + np.arange(d)] = 1.0
        trans = np.eye(s)
        trans[0, 1] = 1.0
        q = np.diag(np.concatenate([[self.q_h, self.q_slope], self.q_u]))
        a = np.zeros((n, s))
        p = np.broadcast_to(np.eye(s) * DIFFUSE * max(float(self.r.mean()), 1e-6), (n, s, s)).copy()
        a_pred = np.empty((steps, n, s))
        p_pred = np.empty((steps, n, s, s))
        a_filt = np.empty((steps, n, s))
        p_filt = np.empty((steps, n, s, s))
        for t in range(steps):
            a_pred[t], p_pred[t] = a, p
            for k in range(d):
                obs = ~np.isnan(y[:, t, k])
                if not obs.any():
                    continue
                zk = z[k]
                pz = p @ zk  # (n, s)
                f = pz @ zk + self.r[k]
                v = np.where(obs, np.nan_to_num(y[:, t, k]) - a @ zk, 0.0)
                gain = pz / f[:, None]
                a = a + np.where(obs[:, None], gain * v[:, None], 0.0)
                p = p - np.where(obs[:, None, None], gain[:, :, None] * pz[:, None, :], 0.0)
            a_filt[t], p_filt[t] = a, p
            a = a @ trans.T
            p = trans @ p @ trans.T + q
        a_s, p_s = a_filt[-1], p_filt[-1]
        level = np.empty((n, steps, d))
        var = np.empty((n, steps, d))
        level[:, -1] = a_s @ z.T
        var[:, -1] = np.einsum("ks,nst,kt->nk", z, p_s, z)
        for t in range(steps - 2, -1, -1):
            gain = p_filt[t] @ trans.T @ np.linalg.pinv(p_pred[t + 1], hermitian=True)
            a_s = a_filt[t] + np.einsum("nij,nj->ni", gain, a_s - a_pred[t + 1])
            p_s = p_filt[t] + gain @ (p_s - p_pred[t + 1]) @ np.transpose(gain, (0, 2, 1))
            level[:, t] = a_s @ z.T
            var[:, t] = np.einsum("ks,nst,kt->nk", z, p_s, z)
        return level, np.maximum(var, 0.0)


def fleet_loadings(levels: Sequence[np.ndarray]) -> np.ndarray:
    """First principal direction of the level changes from each series' start (unit norm, largest entry positive)."""
    changes = np.concatenate([lv - lv[: min(10, len(lv))].mean(axis=0) for lv in levels])
    changes = changes[np.isfinite(changes).all(axis=1)]
    _, _, vt = np.linalg.svd(changes, full_matrices=False)
    lam = vt[0]
    return lam if lam[np.argmax(np.abs(lam))] > 0 else -lam
