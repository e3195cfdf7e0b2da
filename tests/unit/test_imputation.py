"""Imputation baselines against answers derived independently of the code under test.

Linear and last-value answers are written out by hand; the Kalman smoother is checked
against the posterior mean of the same Gaussian model computed by dense conditioning
(one big covariance matrix, no recursion), and, with no process noise, against an
ordinary least-squares line (``numpy.polyfit``).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from twinstream.models.imputation import BASELINES, DIFFUSE, KalmanLLT, LastValue, LinearInterpolation, mae_rmse

NAN = np.nan


def test_linear_interpolation_by_hand() -> None:
    y = np.array([[NAN, 10.0], [2.0, NAN], [NAN, NAN], [NAN, 16.0], [8.0, NAN]])
    want = np.array([[2.0, 10.0], [2.0, 12.0], [4.0, 14.0], [6.0, 16.0], [8.0, 16.0]])
    np.testing.assert_allclose(LinearInterpolation().impute(y), want)


def test_last_value_by_hand() -> None:
    y = np.array([NAN, NAN, 3.0, NAN, 5.0, NAN, NAN])
    np.testing.assert_array_equal(LastValue().impute(y), [3.0, 3.0, 3.0, 3.0, 5.0, 5.0, 5.0])
    assert LastValue.causal and not LinearInterpolation.causal


@pytest.mark.parametrize("imputer", [LinearInterpolation(), LastValue(), KalmanLLT(), KalmanLLT(smooth=False)])
def test_observed_values_kept_and_empty_column_stays_nan(imputer) -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(30, 3))
    y[rng.random((30, 3)) < 0.3] = NAN
    y[:, 2] = NAN
    out = imputer.impute(y)
    seen = ~np.isnan(y)
    assert out.shape == y.shape
    np.testing.assert_array_equal(out[seen], y[seen])
    assert not np.isnan(out[:, :2]).any() and np.isnan(out[:, 2]).all()


def dense_posterior(y: np.ndarray, ql: float, qs: float, r: float, slope_var0: float | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """E and Var of each level given the observed values, by conditioning one joint Gaussian.

    The initial state covariance is diffuse (``DIFFUSE * r``), or for the slope ``slope_var0``.
    """
    steps = len(y)
    trans = np.array([[1.0, 1.0], [0.0, 1.0]])
    powers = [np.linalg.matrix_power(trans, k) for k in range(steps)]
    p0 = np.diag([DIFFUSE * r, DIFFUSE * r if slope_var0 is None else slope_var0])
    q = np.diag([ql, qs])
    cov = np.empty((steps, steps))
    for t in range(steps):
        for u in range(steps):
            c = powers[t] @ p0 @ powers[u].T
            for s in range(min(t, u)):
                c = c + powers[t - 1 - s] @ q @ powers[u - 1 - s].T
            cov[t, u] = c[0, 0]
    obs = ~np.isnan(y)
    c_oo = cov[np.ix_(obs, obs)] + r * np.eye(obs.sum())
    c_ao = cov[:, obs]
    mean = c_ao @ np.linalg.solve(c_oo, y[obs])
    var = np.diag(cov) - np.einsum("ij,ji->i", c_ao, np.linalg.solve(c_oo, c_ao.T))
    return mean, var


def test_kalman_smoother_is_the_gaussian_posterior_mean() -> None:
    rng = np.random.default_rng(7)
    ql, qs, r = 0.05, 0.002, 0.3
    level, slope, y = 1.0, 0.1, []
    for _ in range(40):
        y.append(level + rng.normal(0.0, np.sqrt(r)))
        slope += rng.normal(0.0, np.sqrt(qs))
        level += slope + rng.normal(0.0, np.sqrt(ql))
    y = np.array(y)
    y[[3, 10, 11, 12, 13, 14, 15, 30, 39]] = NAN
    mean, var = dense_posterior(y, ql, qs, r)
    kf = KalmanLLT(ql, qs, r)
    missing = np.isnan(y)
    np.testing.assert_allclose(kf.impute(y)[missing], mean[missing], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(kf.impute_std(y)[missing], np.sqrt(var[missing] + r), rtol=1e-5)
    assert (kf.impute_std(y)[~missing] == 0).all()


def test_kalman_filter_is_causal_and_the_posterior_given_the_past() -> None:
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=25)) + rng.normal(size=25) * 0.3
    y[[8, 9, 20]] = NAN
    kf = KalmanLLT(0.1, 0.01, 0.09, smooth=False)
    assert kf.causal and kf.name == "kalman_filter"
    out = kf.impute(y)
    for t in (8, 9, 20):
        past = y.copy()
        past[t:] = NAN  # only samples before t are known
        mean, _ = dense_posterior(past, 0.1, 0.01, 0.09)
        assert out[t] == pytest.approx(mean[t], rel=1e-6)  # E[level_t | samples before t]
        changed = y.copy()
        changed[t + 1:] += 100.0
        assert kf.impute(changed)[t] == pytest.approx(out[t])  # the future does not matter


def test_kalman_without_process_noise_is_the_least_squares_line() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(60.0)
    y = 0.3 * t - 2.0 + rng.normal(0.0, 0.5, size=60)
    y[rng.random(60) < 0.3] = NAN
    seen = ~np.isnan(y)
    slope, intercept = np.polyfit(t[seen], y[seen], 1)
    filled = KalmanLLT(q_level=0.0, q_slope=0.0, r=0.25).impute(y)
    np.testing.assert_allclose(filled[~seen], slope * t[~seen] + intercept, atol=1e-3)


def simulate_llt(rng, n: int, steps: int, ql: float, qs: float, r: float) -> list[np.ndarray]:
    out = []
    for _ in range(n):
        level, slope, ys = rng.normal(), 0.0, []
        for _ in range(steps):
            ys.append(level + rng.normal(0.0, np.sqrt(r)))
            slope += rng.normal(0.0, np.sqrt(qs))
            level += slope + rng.normal(0.0, np.sqrt(ql))
        out.append(np.array(ys)[:, None])
    return out


def test_fit_recovers_the_simulated_parameters() -> None:
    rng = np.random.default_rng(11)
    series = simulate_llt(rng, 30, 150, ql=0.04, qs=4e-5, r=0.25)
    kf = KalmanLLT().fit(series)
    assert kf.r[0] == pytest.approx(0.25, rel=0.15)
    assert abs(np.log10(kf.q_level[0] / 0.04)) <= 0.5
    assert abs(np.log10(kf.q_slope[0] / 4e-5)) <= 1.0
    # a fitted smoother beats the baselines on held-out gaps of the same process
    test = simulate_llt(rng, 20, 150, ql=0.04, qs=4e-5, r=0.25)
    scores = {}
    for imputer in (LinearInterpolation(), LastValue(), kf):
        masked = [s.copy() for s in test]
        for s in masked:
            s[60:70] = NAN
        filled = imputer.impute_many(masked)
        scores[imputer.name] = np.mean([mae_rmse(f, s, np.isnan(m))[0] for f, s, m in zip(filled, test, masked)])
    assert scores["kalman"] < scores["linear"] < scores["last_value"]


def test_fitted_kalman_pickles_and_batches_like_single_calls() -> None:
    rng = np.random.default_rng(2)
    series = [rng.normal(size=(n, 2)).cumsum(axis=0) for n in (20, 35, 50)]
    kf = KalmanLLT().fit(series)
    copy = pickle.loads(pickle.dumps(kf))
    masked = [s.copy() for s in series]
    for s in masked:
        s[5:9] = NAN
    batch = copy.impute_many(masked)
    for b, m in zip(batch, masked):
        np.testing.assert_allclose(b, kf.impute(m), rtol=1e-9, atol=1e-9)
    assert set(BASELINES) == {"linear", "last_value", "kalman"}


def test_mae_rmse_by_hand() -> None:
    mae, rmse = mae_rmse(np.array([1.0, 2.0, 5.0]), np.array([1.0, 0.0, 1.0]), np.array([False, True, True]))
    assert (mae, rmse) == (3.0, pytest.approx(np.sqrt(10.0)))
