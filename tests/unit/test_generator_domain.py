"""The generator keeps its diffusion network inside the domain it was trained on (cold starts, long forecasts)."""

from __future__ import annotations

import numpy as np

from twinstream.datasets.series import cmapss_dataset
from twinstream.models.generator import MAX_OPEN, MIN_OBSERVED_ROWS, load_generator, network_rows
from twinstream.schemas.generator import GateThresholds


def test_network_rows_need_context_and_stay_near_observed_rows() -> None:
    w = np.zeros((100, 3))
    w[MIN_OBSERVED_ROWS:] = np.nan
    rows = network_rows(w)
    assert rows[:MIN_OBSERVED_ROWS + MAX_OPEN].all() and not rows[MIN_OBSERVED_ROWS + MAX_OPEN:].any()
    w[:5] = np.nan  # too few observed rows: the network is used nowhere
    assert not network_rows(w).any()


def test_cold_start_samples_spread_like_the_kalman_predictive_distribution() -> None:
    import torch

    torch.set_num_threads(1)
    g = load_generator(gate=GateThresholds(max_mae_ratio=None, max_discriminative=None))
    data = cmapss_dataset("FD001", limit_engines=20)
    windows = []
    for s in data.test:
        if len(s) >= 40:
            w = s[:40].copy()
            w[10:] = np.nan  # 10 cycles seen, 30 to continue
            windows.append(w)
    levels, variances = g.trend_many(windows)
    samples = g.sample_many_z(windows, 16, np.random.default_rng(0))
    r = np.asarray(g.kalman.r)
    z = np.concatenate([((s[:, 10:] - lv[None, 10:]) / np.sqrt(v[None, 10:] + r)).ravel()
                        for s, lv, v in zip(samples, levels, variances)])
    assert 0.9 < float(z.std()) < 1.1  # the network's own residuals here spread ~3x the sensor noise
    points = g.impute_many_z(windows)
    for p, lv in zip(points, levels):
        assert np.allclose(p[10:], lv[10:])  # point estimate: the level, no out-of-domain residual mean
