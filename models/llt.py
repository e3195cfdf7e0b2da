"""The local-linear-trend state-space recursions behind :class:`~twinstream.models.imputation.KalmanLLT`.

The model (Durbin & Koopman, *Time Series Analysis by State Space Methods*, ch. 3) is,
per series, ``y_t = level_t + eps``, ``level_{t+1} = level_t + slope_t + eta``,
``slope_{t+1} = slope_t + zeta``, with variances ``r``, ``q_level`` and ``q_slope``. The
filter skips the update at a missing value and the Rauch-Tung-Striebel smoother carries
information back from after the gap. Here only the vectorised recursions over a batch of
series and the likelihood they give; the imputer (fitting, windows, columns) is
:class:`~twinstream.models.imputation.KalmanLLT`.

>>> level, var, _ = llt_filter(np.array([[0.0, 1.0, np.nan, 3.0]]), 1e-9, 1e-9, 1.0)
>>> level.round(2).tolist()
[[0.0, 1.0, 2.0, 3.0]]
"""

from __future__ import annotations

import numpy as np

DIFFUSE = 1e4  # initial state variance, in units of the observation noise variance


def llt_filter(
    y: np.ndarray, q_level: np.ndarray, q_slope: np.ndarray, r: np.ndarray, mode: str = "smooth",
    slope_var0: np.ndarray | float | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Kalman filter (and RTS smoother) of a batch of local-linear-trend series.

    ``y`` has shape ``(N, T)`` with NaN for missing; the variances broadcast to ``(N,)``.
    ``slope_var0`` (broadcast to ``(N,)``) is the prior variance of the initial slope
    around 0; ``None``, or a non-finite entry, keeps the diffuse start (``DIFFUSE * r``)
    for it. The initial level is always diffuse.
    ``mode`` is ``"smooth"`` (level given all samples), ``"filter"`` (given the samples up
    to each one: causal) or ``"loglik"`` (likelihood statistics only, no stored states).
    Returns the level mean and variance, each ``(N, T)`` (``None`` in ``"loglik"`` mode),
    and per series the sum of squared standardised innovations, the sum of log
    innovation variances and their count, over the observed values after the first two
    (the diffuse start), for :func:`concentrated_loglik`.
    """
    if mode not in ("smooth", "filter", "loglik"):
        raise ValueError(f"unknown mode {mode!r}")
    n, steps = y.shape
    ql, qs, rr = (np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in (q_level, q_slope, r))
    a = np.zeros((n, 2))
    p = np.zeros((n, 2, 2))
    p[:, 0, 0] = p[:, 1, 1] = DIFFUSE * rr
    if slope_var0 is not None:
        sv = np.broadcast_to(np.asarray(slope_var0, dtype=float), (n,))
        # a finite prior replaces the diffuse slope; floored so the smoother's predicted covariance stays invertible
        p[:, 1, 1] = np.where(np.isfinite(sv), np.maximum(sv, 1e-12 * rr), p[:, 1, 1])
    smooth = mode == "smooth"
    if smooth:
        a_pred = np.empty((steps, n, 2))
        p_pred = np.empty((steps, n, 2, 2))
        a_filt = np.empty((steps, n, 2))
        p_filt = np.empty((steps, n, 2, 2))
    if mode != "loglik":
        level = np.empty((steps, n))
        var = np.empty((steps, n))
    sum_v2f = np.zeros(n)
    sum_logf = np.zeros(n)
    count = np.zeros(n)
    seen_before = np.zeros(n)
    for t in range(steps):
        if smooth:
            a_pred[t], p_pred[t] = a, p
        obs = ~np.isnan(y[:, t])
        f = p[:, 0, 0] + rr
        v = np.where(obs, y[:, t] - a[:, 0], 0.0)
        gain = p[:, :, 0] / f[:, None]  # (N, 2)
        a_upd = a + np.where(obs[:, None], gain * v[:, None], 0.0)
        p_upd = p - np.where(obs[:, None, None], gain[:, :, None] * p[:, 0, :][:, None, :], 0.0)
        counted = obs & (seen_before >= 2)
        sum_v2f += np.where(counted, v * v / f, 0.0)
        sum_logf += np.where(counted, np.log(f), 0.0)
        count += counted
        seen_before += obs
        if smooth:
            a_filt[t], p_filt[t] = a_upd, p_upd
        if mode != "loglik":
            level[t], var[t] = a_upd[:, 0], p_upd[:, 0, 0]
        # predict with the transition [[1, 1], [0, 1]]
        a = np.stack([a_upd[:, 0] + a_upd[:, 1], a_upd[:, 1]], axis=1)
        p00 = p_upd[:, 0, 0] + 2 * p_upd[:, 0, 1] + p_upd[:, 1, 1] + ql
        p01 = p_upd[:, 0, 1] + p_upd[:, 1, 1]
        p11 = p_upd[:, 1, 1] + qs
        p = np.stack([np.stack([p00, p01], 1), np.stack([p01, p11], 1)], 1)
    stats = np.stack([sum_v2f, sum_logf, count])
    if mode == "loglik":
        return None, None, stats
    if smooth:
        a_s, p_s = a_filt[-1].copy(), p_filt[-1].copy()
        trans = np.array([[1.0, 1.0], [0.0, 1.0]])
        for t in range(steps - 2, -1, -1):
            pf, pp = p_filt[t], p_pred[t + 1]
            gain = pf @ trans.T @ np.linalg.inv(pp)  # (N, 2, 2)
            a_s = a_filt[t] + np.einsum("nij,nj->ni", gain, a_s - a_pred[t + 1])
            p_s = pf + gain @ (p_s - pp) @ np.transpose(gain, (0, 2, 1))
            level[t], var[t] = a_s[:, 0], p_s[:, 0, 0]
    return level.T, var.T, stats


def concentrated_loglik(stats: np.ndarray) -> np.ndarray:
    """Log-likelihood with the noise variance profiled out, from :func:`llt_filter` stats run with ``r=1``."""
    sum_v2f, sum_logf, count = stats
    sigma2 = sum_v2f / np.maximum(count, 1)
    return -0.5 * (count * np.log(np.maximum(sigma2, 1e-300)) + sum_logf + count)
