"""Choosing a gap filler per column on pseudo-gaps of the series' own measured values (plain arrays)."""

from __future__ import annotations

import numpy as np

from twinstream.evaluation.adaptive_fill import AdaptiveFill
from twinstream.models import fill_select
from twinstream.models.imputation import KalmanLLT, LastValue, LinearInterpolation, hidden_error


def runners(smoother: KalmanLLT | None = None) -> dict:
    smoother = smoother or KalmanLLT(q_level=1e-3, q_slope=1e-6, r=1.0)
    return {fill_select.KALMAN: lambda arrs, _o: smoother.impute_many(arrs),
            fill_select.LINEAR: lambda arrs, _o: LinearInterpolation().impute_many(arrs),
            fill_select.LAST_VALUE: lambda arrs, _o: LastValue().impute_many(arrs)}


def test_pseudo_gaps_hide_only_measured_values_in_the_real_gaps_shape() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(80, 3))
    y[50:57, 0] = np.nan  # interior gap of 7
    y[75:, 1] = np.nan  # open gap of 5 at the end
    y[::3, 2] = np.nan  # no target for column 2 below: never hidden
    targets = np.isnan(y)
    targets[:, 2] = False
    p = fill_select.plan(y, targets)
    assert len(p.copies) == fill_select.COPIES
    for copy, hidden in zip(p.copies, p.hidden):
        assert not (hidden & np.isnan(y)).any()  # only measured values are scored
        assert np.isnan(copy[hidden]).all() and np.isnan(copy[np.isnan(y)]).all()
        assert hidden[:, 0].sum() in (0, 7) and hidden[:, 1].sum() in (0, 5) and not hidden[:, 2].any()
        rows = np.flatnonzero(hidden[:, 1])
        if rows.size:
            assert np.isnan(copy[rows[0]:, 1]).all()  # an open gap is validated with no data after it
        rows = np.flatnonzero(hidden[:, 0])
        if rows.size:
            assert not np.isnan(copy[rows[-1] + 1, 0])  # an interior one with data after it
    assert sum(h[:, 0].any() for h in p.hidden) == fill_select.COPIES


def test_the_choice_never_depends_on_the_values_to_fill() -> None:
    rng = np.random.default_rng(1)
    y = np.cumsum(rng.normal(size=(100, 2)), axis=0)
    a, b = y.copy(), y.copy()
    a[40:50] = np.nan
    b[40:50] = np.nan
    plans_a, choices_a = fill_select.choose_many([a], runners())
    truth_changed = y.copy()
    truth_changed[40:50] += 100.0  # what was hidden differs; the masked inputs are the same
    plans_b, choices_b = fill_select.choose_many([np.where(np.isnan(b), np.nan, truth_changed)], runners())
    assert choices_a == choices_b


def test_step_sensor_gets_a_filler_that_does_not_overshoot_and_drift_keeps_kalman() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(120)
    step = np.where((t // 20) % 2 == 0, 0.0, 10.0)  # a valve: open / closed
    drift = 0.02 * t + rng.normal(0, 1.0, len(t))  # slow trend in noise: the smoother's home ground
    y = np.column_stack([step, drift])
    masked = y.copy()
    masked[36:45] = np.nan  # the gap spans a step (at 40)
    _, (choices,) = fill_select.choose_many([masked], runners())
    assert choices[0].step_like and choices[0].method in fill_select.NO_OVERSHOOT and choices[0].cells > 0
    assert choices[1].method == fill_select.KALMAN and not choices[1].step_like
    assert choices[1].mae is not None and choices[1].mae > 0
    fills = {name: run([masked], [0])[0] for name, run in runners().items()}
    out = fill_select.combine(masked, choices, fills)
    assert 0.0 <= out[36:45, 0].min() and out[36:45, 0].max() <= 10.0  # never beyond the observed levels


def test_a_clearly_better_candidate_replaces_the_default_and_noise_does_not() -> None:
    base = np.array([1.0, 0.9, 1.1, 1.0])  # MAE of the default on each pseudo-gap
    assert fill_select.clearly_better(base * 0.3, base)
    assert not fill_select.clearly_better(base * [0.1, 1.5, 0.1, 1.5], base)  # better on average, but noisy
    assert not fill_select.clearly_better(np.array([0.0]), np.array([1.0]))  # one pseudo-gap is never enough


def test_no_room_for_a_pseudo_gap_takes_the_default() -> None:
    y = np.array([[1.0], [np.nan], [np.nan], [2.0]])
    _, (choices,) = fill_select.choose_many([y], runners())
    assert choices[0] == fill_select.Choice(fill_select.KALMAN, None, None, 0, False)


def test_adaptive_arm_is_at_least_as_good_as_the_best_single_filler_on_mixed_series() -> None:
    rng = np.random.default_rng(3)
    series, masks = [], []
    for _ in range(12):
        t = np.arange(300)
        step = np.where((t // rng.integers(15, 40)) % 2 == 0, 0.0, 5.0)
        smooth = np.sin(t / 30.0) * 3 + rng.normal(0, 0.8, len(t))
        series.append(np.column_stack([step, smooth]))
        m = np.zeros((300, 2), bool)
        for start in rng.choice(np.arange(20, 280, 30), 5, replace=False):
            m[start:start + 8] = True
        masks.append(m)
    smoother = KalmanLLT().fit(series)
    masked = [np.where(m, np.nan, s) for s, m in zip(series, masks)]
    scores = {imp.name: hidden_error(imp.impute_many(masked), series, masks)["mae"]
              for imp in (LinearInterpolation(), LastValue(), smoother)}
    adaptive = AdaptiveFill(smoother)
    mae = hidden_error(adaptive.impute_many(masked), series, masks)["mae"]
    assert mae < min(scores.values()), (mae, scores)  # each column gets its own best: beats every single filler
    assert adaptive.counts[fill_select.KALMAN] > 0 and adaptive.counts[fill_select.LINEAR] + adaptive.counts[fill_select.LAST_VALUE] > 0
