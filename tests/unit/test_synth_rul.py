"""RUL effects of synthetic data (twinstream.evaluation.synth_rul): masks, gap windows, oracle fills, TSTR plumbing, cold start.

The oracle filler used here knows the real series and returns the truth for any window
it is given (it finds the window by its observed values), so every pipeline stage that
fills or samples must reproduce the complete-data numbers exactly with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from twinstream.datasets import cmapss
from twinstream.evaluation.synth_rul import KEYS, fill_gaps, filled_events, gap_runs, missing30, missing_mask, rul_effects
from twinstream.evaluation.synth_rul_tasks import KalmanSampler, cold_start, engines, tstr, zscore_stats
from twinstream.models.imputation import KalmanLLT, LinearInterpolation

LIMIT = 8


class Oracle:
    """Fills and samples with the true values: it looks each window up in the real series by its observed rows."""

    name = "oracle"

    def __init__(self, series: list[np.ndarray]) -> None:
        self.truth = np.concatenate(series)
        self.index: dict[bytes, list[int]] = {}
        for i, row in enumerate(self.truth):
            self.index.setdefault(row.tobytes(), []).append(i)

    def impute(self, y: np.ndarray) -> np.ndarray:
        seen = ~np.isnan(y)
        first = int(np.flatnonzero(seen.any(axis=1))[0])
        for at in self.index.get(np.ascontiguousarray(y[first]).tobytes(), []):
            start = at - first
            if 0 <= start and start + len(y) <= len(self.truth):
                candidate = self.truth[start:start + len(y)]
                if np.array_equal(candidate[seen], y[seen]):
                    return candidate.copy()
        raise LookupError("window not in the real series")

    def sample(self, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.repeat(self.impute(y)[None], n, axis=0)


@pytest.fixture(scope="module")
def fd001():
    fd = cmapss.load_subset("FD001")
    mean, std = zscore_stats(fd)
    return fd, mean, std


@pytest.fixture(scope="module")
def oracle(fd001):
    fd, mean, std = fd001
    series = list(engines(fd.train, mean, std, LIMIT).series.values()) + list(engines(fd.test, mean, std, LIMIT).series.values())
    return Oracle(series)


def test_missing_mask_hides_about_30_percent_seeded_and_never_the_last_cycle(fd001):
    fd, mean, std = fd001
    lengths = {u: len(z) for u, z in engines(fd.test, mean, std).series.items()}
    a = missing_mask(lengths, np.random.default_rng([0, 30]))
    b = missing_mask(lengths, np.random.default_rng([0, 30]))
    c = missing_mask(lengths, np.random.default_rng([1, 30]))
    share = np.concatenate(list(a.values())).mean()
    # 13096 samples: the share's standard deviation is about 0.004, the last cycle of 100 engines is kept
    assert 0.28 < share < 0.32
    assert all(np.array_equal(a[u], b[u]) for u in a)
    assert any(not np.array_equal(a[u], c[u]) for u in a)
    assert not any(m[-1] for m in a.values())


def test_gap_windows_see_only_measured_values_up_to_the_closing_sample():
    z = np.repeat(np.arange(50, dtype=float)[:, None], 2, axis=1)  # value = index: a window shows which samples it holds
    hidden = np.zeros(50, dtype=bool)
    hidden[[0, 5, 6, 7, 20, 33, 34]] = True
    seen: list[np.ndarray] = []

    class Spy:
        def impute(self, y: np.ndarray) -> np.ndarray:
            seen.append(y.copy())
            return np.zeros_like(y)

    filled = fill_gaps(Spy(), {1: z}, {1: hidden}, window=8)
    assert len(seen) == len(gap_runs(hidden)) == 4
    for w in seen:
        observed = w[~np.isnan(w[:, 0]), 0].astype(int)
        assert not hidden[observed].any()  # never the hidden truth
        assert not np.isnan(w[-1, 0])  # the window ends at the measured sample that closes the gap
        gap_stop = int(w[-1, 0])
        assert hidden[gap_stop - 1] and observed.max() == gap_stop  # nothing after it
    assert np.array_equal(filled[1][hidden], np.zeros((hidden.sum(), 2)))
    assert np.array_equal(filled[1][~hidden], z[~hidden])


def test_filling_with_the_truth_reproduces_the_complete_run(fd001, oracle):
    fd, mean, std = fd001
    report = missing30(oracle, fd, mean, std, limit=LIMIT, seeds=[0])
    assert report["engines"] == LIMIT
    assert report["runs"][0]["fill_mae"] == 0.0
    # unflagged fills in cycle order are exactly the complete run
    assert report["variants"]["filled_unflagged"]["ratio"] == pytest.approx(1.0, abs=1e-9)
    assert report["variants"]["filled_unflagged"]["ratio_observed_cycles"] == pytest.approx(1.0, abs=1e-9)
    # the headline is the worker's order (flagged fills, absorbed late): on 8 engines its ratio is noise-dominated,
    # so only its bookkeeping is checked here (the event order has its own test below)
    assert report["headline_variant"] == "filled_late" and report["ratio"] == report["variants"]["filled_late"]["ratio"]
    # and withholding the samples does change the twin's estimates (otherwise the ratio would say nothing)
    assert report["no_fill"]["skip"]["ratio_observed_cycles"] != pytest.approx(1.0, abs=1e-3)


def test_filled_events_flag_fills_and_absorb_them_after_the_closing_cycle(fd001):
    fd, mean, std = fd001
    test = engines(fd.test, mean, std, LIMIT)
    masks = missing_mask({u: len(z) for u, z in test.series.items()}, np.random.default_rng([0, 30]))
    fleet = [r for r in fd.train if r.unit <= LIMIT]
    hidden = sum(int(m.sum()) for m in masks.values())
    in_order = filled_events(fleet, test.rows, masks, late=False)
    late = filled_events(fleet, test.rows, masks, late=True)
    leading = {f"test-{u}": int(np.argmin(m)) for u, m in masks.items()}  # hidden cycles before the first measured one
    assert sum(leading.values()) > 0  # the mask used here has some (else this test checks less)
    assert sorted((e.entity, e.cycle) for e in in_order if e.cycle > leading.get(e.entity, 0)) == \
        sorted((e.entity, e.cycle) for e in late)
    assert sum(bool(e.synthetic) for e in in_order) == hidden and not any(e.absorb for e in in_order)
    absorbed = [e for e in late if e.absorb]
    assert len(absorbed) == hidden - sum(leading.values()) and all(e.synthetic for e in absorbed)
    last_measured: dict[str, int] = {}
    for e in late:
        if e.entity.startswith("test-") and not e.absorb:
            last_measured[e.entity] = e.cycle
        elif e.absorb:  # absorbed right after the measured cycle that closed its gap
            assert last_measured[e.entity] > e.cycle
            unit = int(e.entity.split("-")[1])
            assert not masks[unit][last_measured[e.entity] - 1] and masks[unit][e.cycle - 1:last_measured[e.entity] - 1].all()


def test_tstr_with_a_generator_that_returns_the_real_data_equals_trtr(fd001, oracle):
    fd, mean, std = fd001
    # Identical training files (same writer, same 4-decimal rounding) and a seeded single-thread
    # trainer give the same prior, so the two RMSEs agree up to float noise.
    report = tstr(oracle, fd, mean, std, limit=LIMIT, anchor_every=10, epochs=2, folds=2, seed=0)
    assert report["synthetic_vs_real_mae"] == 0.0
    assert 0.85 < report["synthetic_share"] < 0.95
    assert report["tstr_rmse"] == pytest.approx(report["trtr_rmse"], rel=1e-6)


def test_cold_start_with_the_true_continuation_equals_the_real_look_ahead(fd001, oracle):
    fd, mean, std = fd001
    report = cold_start(oracle, fd, mean, std, limit=LIMIT, ks=[10], horizon=10, samples=2, weight=0.5, seed=0)
    k10 = report["by_k"]["10"]
    assert k10["engines"] == LIMIT
    assert k10["rmse_augmented"] == pytest.approx(k10["rmse_real_lookahead"], abs=1e-6)


def test_kalman_sampler_keeps_observed_values_and_bounded_noise_at_a_leading_gap():
    # A gap at a window's start with one measured sample after it (a real case of the
    # missing-30 windows): the smoother's own standard deviation there is about 22.
    y = np.array([[np.nan, 1.0], [0.5, 0.0]])
    smoother = KalmanLLT(q_level=1e-6, q_slope=1e-6, r=0.1)
    assert smoother.impute_std(y)[0, 0] > 10
    draws = KalmanSampler(smoother).sample(y, 400, np.random.default_rng(0))
    assert draws.shape == (400, 2, 2)
    assert np.array_equal(draws[:, 1, 0], np.full(400, 0.5))
    assert np.array_equal(draws[:, :, 1], np.broadcast_to(y[:, 1], (400, 2)))
    assert draws[:, 0, 0].std() <= math.sqrt(0.1 + KalmanSampler.VAR_CAP) * 1.2


def test_rul_effects_quick_report_has_the_documented_keys(fd001):
    report = rul_effects(LinearInterpolation(), quick=True)
    assert set(KEYS) <= set(report)
    for key in ("rul_rmse_ratio_missing30", "tstr_rmse", "trtr_rmse", "tstr_ratio"):
        assert math.isfinite(report[key]) and report[key] > 0
    assert set(report["missing30"]["no_fill"]) == {"nan", "skip"}
    assert set(report["cold_start"]["by_k"]) == {"10"}
    assert report["imputer"]["has_sample"] is False


def test_synthetic_engines_keep_their_anchors_and_sample_full_windows():
    from twinstream.evaluation.synth_rul_tasks import anchors, synthetic_series

    lengths: list[int] = []

    class Spy:
        def sample(self, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
            lengths.append(len(y))
            return np.full((n, *y.shape), -7.0)

    z = np.arange(150.0 * 2).reshape(150, 2)
    out = synthetic_series(Spy(), {1: z, 2: z[:30]}, anchor_every=10, window=64, rng=np.random.default_rng(0))
    keep = anchors(150, 10) > 0
    assert np.array_equal(out[1][keep], z[keep]) and (out[1][~keep] == -7.0).all()
    assert sorted(lengths) == [30, 64, 64, 64]  # 150 = 64 + 64 + a full last window overlapping the second
    assert (out[2][anchors(30, 10) == 0] == -7.0).all()
