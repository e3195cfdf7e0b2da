"""The online forecaster on synthetic series with known structure (prequential, seeded draws).

Protocol (fixed before scoring): horizon 12, nominal coverage 0.9, 4000 samples, scores
on the last three quarters (the first quarter is warm-up), three seeds per series.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from twinstream.models.anomaly import ResidualAnomaly
from twinstream.models.forecast import OnlineForecaster
from twinstream.models.forecast_prior import fit_forecast_prior

H, N, PERIOD = 12, 4000, 48
SEEDS = (0, 1, 2)


def series(kind: str, seed: int, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    if kind == "cycle":  # a "daily" cycle of 48 samples plus noise
        return 10.0 + 3.0 * np.sin(2 * np.pi * t / PERIOD) + rng.normal(0.0, 0.3, n)
    if kind == "steps":  # level shifts every 200 samples
        return np.repeat(rng.normal(0.0, 5.0, n // 200 + 1), 200)[:n] + rng.normal(0.0, 0.2, n)
    if kind == "walk":
        return np.cumsum(rng.normal(0.0, 1.0, n))
    raise ValueError(kind)


def replay(ys: np.ndarray, **params: object) -> dict[str, float]:
    fc = OnlineForecaster(H, max_season=200, **params)  # type: ignore[arg-type]
    made = {}
    for t, y in enumerate(ys):
        made[t + H] = fc.step(t, float(y))
        assert made[t + H].target_seq == t + H
    idx = range(len(ys) // 4, len(ys))
    twin = np.array([abs(ys[t] - made[t].value) for t in idx])
    last = np.array([abs(ys[t] - ys[t - H]) for t in idx])
    naive = np.array([abs(ys[t] - ys[t - PERIOD]) for t in idx])
    covered = np.mean([made[t].lower <= ys[t] <= made[t].upper for t in idx])
    return {"ratio": twin.mean() / last.mean(), "naive_ratio": naive.mean() / last.mean(), "coverage": float(covered),
            "max_err": float(twin.max()), "max_last": float(last.max()), "season": fc.season or 0}


@pytest.mark.parametrize("seed", SEEDS)
def test_learns_the_season_where_there_is_one(seed: int) -> None:
    r = replay(series("cycle", seed))
    assert r["season"] in (PERIOD - 1, PERIOD, PERIOD + 1)
    assert r["ratio"] < 0.3  # persistence is a quarter period off; the twin is not
    assert r["ratio"] < r["naive_ratio"]  # and it does at least as well as repeating the last cycle
    assert abs(r["coverage"] - 0.9) < 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_does_not_blow_up_on_steps(seed: int) -> None:
    r = replay(series("steps", seed))
    assert r["ratio"] < 1.05
    assert r["max_err"] <= 1.5 * r["max_last"]  # never far worse than persistence at its worst
    assert abs(r["coverage"] - 0.9) < 0.05


@pytest.mark.parametrize("seed", SEEDS)
def test_random_walk_falls_back_to_persistence(seed: int) -> None:
    r = replay(series("walk", seed))
    assert r["season"] == 0
    assert r["ratio"] < 1.02  # nothing to learn: the guard keeps it at persistence
    assert abs(r["coverage"] - 0.9) < 0.05


def test_divergence_guard_publishes_persistence_when_the_regression_is_worse() -> None:
    fc = OnlineForecaster(H, max_season=0)
    ys = series("walk", 5)
    sources = [fc.step(t, float(y)).source for t, y in enumerate(ys)]
    fc.rls.w[:] = 50.0  # a broken regression that stays broken
    fc.learn = False
    later = series("walk", 6) + ys[-1]
    made = {}
    for t, y in enumerate(later):
        made[t + H] = fc.step(N + t, float(y)).value
    idx = range(N // 2, N)
    twin = np.mean([abs(later[t] - made[t]) for t in idx])
    last = np.mean([abs(later[t] - later[t - H]) for t in idx])
    assert sources[0] == "persistence"
    assert twin < 1.02 * last  # shrunk to nothing, or replaced by persistence


def test_prequential_order_the_label_comes_from_the_later_sample() -> None:
    fc = OnlineForecaster(3, max_season=0)
    for t in range(100):
        fc.step(t, float(t))  # a straight line: its h-step change is always 3
    assert fc.labels == 100 - 3 - 3  # forecasts from seq 3 (first scale) to 96 have been settled
    fc.step(100, 100.0)
    assert abs(fc.pending[-1][4]["model"] - 103.0) < 0.01  # and its regression has learned the slope


def test_gaps_are_not_labels_and_pending_stays_bounded() -> None:
    fc = OnlineForecaster(4, max_season=0, pending_max=8)
    for t in range(200):
        fc.step(t, None if t % 5 == 0 else float(np.sin(t / 7.0)))
    assert len(fc.pending) <= 8
    labels = fc.labels
    for t in range(200, 260, 3):  # skipped seqs: samples that never arrived
        fc.step(t, 1.0)
    assert len(fc.pending) <= 8 and fc.labels >= labels


def test_state_pickles_and_continues_identically() -> None:
    ys = series("cycle", 3, 800)
    a = OnlineForecaster(H, max_season=100)
    for t, y in enumerate(ys[:600]):
        a.step(t, float(y))
    b = pickle.loads(pickle.dumps(a))
    for t, y in enumerate(ys[600:], start=600):
        assert a.step(t, float(y)) == b.step(t, float(y))


def test_a_prior_from_history_starts_ahead_of_a_fresh_twin() -> None:
    history = [series("cycle", s, 1500) for s in (10, 11)]
    prior = fit_forecast_prior(history, H, max_season=200)
    assert prior.season in (PERIOD - 1, PERIOD, PERIOD + 1)
    ys = series("cycle", 12, 300)
    fresh, started = OnlineForecaster(H, max_season=200), OnlineForecaster(H, max_season=200, prior=prior)
    err = {"fresh": [], "prior": []}
    made: dict[int, tuple] = {}
    for t, y in enumerate(ys):
        if t in made:
            err["fresh"].append(abs(y - made[t][0].value))
            err["prior"].append(abs(y - made[t][1].value))
        made[t + H] = (fresh.step(t, float(y)), started.step(t, float(y)))
    assert np.mean(err["prior"]) < 0.7 * np.mean(err["fresh"])  # measured: 0.70 vs 1.27 on this draw


def test_anomaly_score_flags_a_spike_and_not_the_usual() -> None:
    det = ResidualAnomaly(horizon=1, threshold=0.995, max_season=0)
    ys = series("cycle", 4, 1500)
    scores = [det.step(t, float(y))[0] for t, y in enumerate(ys)]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert np.mean(np.array(scores[500:]) >= 0.995) < 0.02
    score, flagged = det.step(1500, float(ys[-1]) + 20.0)
    assert flagged and score > 0.995


def test_a_huge_jump_in_seq_is_a_gap_not_a_loop() -> None:
    fc = OnlineForecaster(2, max_season=0)
    for t in range(50):
        fc.step(t, float(t % 3))
    out = fc.step(10**12, 1.0)
    assert out.target_seq == 10**12 + 2 and out.source == "persistence"
    assert fc.step(10**12 + 1, 2.0).value == 2.0  # history is gone: no regression inputs until it refills


def test_prior_survives_an_npz_file_and_starts_twins_identically(tmp_path) -> None:
    from twinstream.models.forecast_prior import forecast_prior_arrays, forecast_prior_from_arrays

    prior = fit_forecast_prior([series("cycle", 20, 1200)], H, max_season=200)
    np.savez(tmp_path / "prior.npz", **forecast_prior_arrays(prior))
    with np.load(tmp_path / "prior.npz") as data:
        loaded = forecast_prior_from_arrays(dict(data))
    a, b = OnlineForecaster(H, max_season=200, prior=prior), OnlineForecaster(H, max_season=200, prior=loaded)
    for t, y in enumerate(series("cycle", 21, 300)):
        assert a.step(t, float(y)) == b.step(t, float(y))
