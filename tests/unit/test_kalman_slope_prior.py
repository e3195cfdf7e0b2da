"""The Kalman slope prior: the exact Gaussian posterior with a proper initial slope, fitted from the fleet, stored in the artifact.

Why: with a diffuse initial slope a window with only two or three observed samples
extrapolates the slope of two noisy points across the gap (FD001 windows whose first 6
of 8 rows were missing: Kalman fill MAE 2.1 z). The prior is checked against dense
conditioning of one joint Gaussian, like the diffuse smoother in ``test_imputation``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_imputation import dense_posterior  # one dense-conditioning reference for both smoothers

from twinstream.models.generator import KALMAN_KEYS, bundled_generator_dir, load_generator
from twinstream.models.imputation import KalmanLLT, llt_filter, slope_prior_sd
from twinstream.models.prior import sha256_file
from twinstream.schemas.generator import GateThresholds

NAN = np.nan
OPEN = GateThresholds(max_mae_ratio=None, max_discriminative=None)


@pytest.mark.parametrize("smooth", [True, False])
def test_slope_prior_is_the_gaussian_posterior(smooth: bool) -> None:
    rng = np.random.default_rng(4)
    y = 0.05 * np.arange(20.0) + rng.normal(0.0, 0.4, 20)
    y[[0, 1, 2, 3, 4, 9, 10, 15]] = NAN
    ql, qs, r, sd0 = 0.01, 1e-4, 0.16, 0.03
    kf = KalmanLLT(ql, qs, r, smooth=smooth, slope_sd0=sd0)
    out = kf.impute(y)
    for t in np.flatnonzero(np.isnan(y)):
        known = y if smooth else np.where(np.arange(20) < t, y, NAN)
        if smooth or (~np.isnan(known)).any():
            assert out[t] == pytest.approx(dense_posterior(known, ql, qs, r, sd0**2)[0][t], rel=1e-6, abs=1e-6)


def test_none_and_inf_keep_the_diffuse_start_and_columns_get_their_own_prior() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(12, 2)).cumsum(axis=0)
    y[:7] = NAN
    diffuse = KalmanLLT(0.01, 1e-5, 0.2).impute(y)
    np.testing.assert_array_equal(KalmanLLT(0.01, 1e-5, 0.2, slope_sd0=np.inf).impute(y), diffuse)
    mixed = KalmanLLT(0.01, 1e-5, 0.2, slope_sd0=[0.01, np.inf]).impute(y)
    np.testing.assert_array_equal(mixed[:, 1], diffuse[:, 1])
    np.testing.assert_allclose(mixed[:, 0], KalmanLLT(0.01, 1e-5, 0.2, slope_sd0=0.01).impute(y[:, :1])[:, 0])
    # llt_filter: None is exactly the diffuse start (what fit's likelihood search uses)
    flat = y.T.copy()
    a, b = llt_filter(flat, 0.01, 1e-5, 0.2), llt_filter(flat, 0.01, 1e-5, 0.2, slope_var0=None)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(ValueError, match="slope priors"):
        KalmanLLT(0.01, 1e-5, 0.2, slope_sd0=[0.1, 0.1, 0.1]).impute(y)


def test_fit_derives_the_prior_from_the_fleet_slopes_and_few_points_stay_put() -> None:
    rng = np.random.default_rng(9)
    slopes = rng.normal(0.0, 0.01, 25)
    series = [np.c_[b * np.arange(150) + rng.normal(0.0, 0.5, 150)] for b in slopes]
    kf = KalmanLLT().fit(series)
    fitted = [np.polyfit(np.arange(150), s[:, 0], 1)[0] for s in series]
    assert kf.slope_sd0[0] == pytest.approx(2 * np.sqrt(np.mean(np.square(fitted))), rel=1e-9)
    np.testing.assert_allclose(slope_prior_sd(series), kf.slope_sd0)
    # windows of 8 whose first 6 are missing: the prior keeps the fill near the two observed values
    diffuse = KalmanLLT(kf.q_level, kf.q_slope, kf.r)
    err_prior, err_diffuse = [], []
    for s in series:
        for start in range(0, 140, 20):
            w = s[start:start + 8].copy()
            w[:6] = NAN
            err_prior.append(np.abs(kf.impute(w)[:6] - s[start:start + 6]).mean())
            err_diffuse.append(np.abs(diffuse.impute(w)[:6] - s[start:start + 6]).mean())
    assert np.mean(err_prior) < 0.6 < np.mean(err_diffuse)
    # long windows: the data outweigh the prior
    w = series[0][:100].copy()
    w[40:50] = NAN
    np.testing.assert_allclose(kf.impute(w), diffuse.impute(w), atol=0.05)


def copy_artifact(dest: Path) -> Path:
    shutil.copytree(bundled_generator_dir(), dest)
    return dest


def test_artifact_without_the_slope_prior_still_loads_diffuse(tmp_path: Path) -> None:
    out = copy_artifact(tmp_path / "old")
    weights = out / "weights.npz"
    with np.load(weights, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "kalman_slope_sd0"}
    np.savez_compressed(weights, **arrays)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["weights_sha256"] = sha256_file(weights)
    (out / "manifest.json").write_text(json.dumps(manifest))
    old = load_generator(out, OPEN)
    assert old.kalman.slope_sd0 is None
    bundled = load_generator(None, OPEN)
    assert "kalman_slope_sd0" in KALMAN_KEYS
    assert bundled.kalman.slope_sd0 is not None and bundled.kalman.slope_sd0.shape == (len(bundled.sensors),)
    assert np.isfinite(bundled.kalman.slope_sd0).all() and (bundled.kalman.slope_sd0 > 0).all()
