"""The sidecar's adaptive fills: filler chosen per entity and sensor, named with its measured error in each fill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from twinstream.models import fill_select
from twinstream.schemas import Gap, Telemetry
from twinstream.schemas.generator import GateThresholds
from twinstream.settings import Settings
from twinstream.streams.fill_method import BASELINE_VERSION, FillMethod, choose_fill_method
from twinstream.streams.filler import GapFiller

T0 = datetime(2026, 3, 1, tzinfo=UTC)
OPEN_GATE = GateThresholds(max_mae_ratio=None, max_discriminative=None)


def truth(seq: int, rng: np.random.Generator) -> dict[str, float]:
    """A valve (open/closed every 12 samples) and a slowly drifting noisy temperature."""
    return {"valve": 0.0 if (seq // 12) % 2 == 0 else 10.0, "temp": 50.0 + 0.05 * seq + float(rng.normal(0, 1.0))}


def test_fills_name_their_filler_and_error_and_a_step_sensor_is_never_overshot() -> None:
    rng = np.random.default_rng(0)
    filler = GapFiller(FillMethod.baseline("test", adaptive=True), window=64)
    for seq in range(60):
        filler.on_telemetry(Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=seq), seq=seq,
                                      metrics=truth(seq, rng)))
    for seq in range(60, 66):  # both sensors drop out for six samples, then come back
        filler.on_telemetry(Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=seq), seq=seq,
                                      metrics={"valve": None, "temp": None}))
    for seq in range(66, 70):
        filler.on_telemetry(Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=seq), seq=seq,
                                      metrics=truth(seq, rng)))
    filler.on_gap(Gap(entity_id="e", kind="missing_sensor", sensors=["valve", "temp"], first_seq=60, last_seq=65,
                      start_time=T0 + timedelta(seconds=60), end_time=T0 + timedelta(seconds=65), samples=6, open=False))
    fills = filler.produce()
    assert sorted(f.seq for f in fills) == list(range(60, 66))
    for f in fills:
        assert set(f.fill) == {"valve", "temp"} and f.generator == BASELINE_VERSION
        valve, temp = f.fill["valve"], f.fill["temp"]
        assert valve.step_like and valve.method in fill_select.NO_OVERSHOOT
        assert 0.0 <= f.metrics["valve"] <= 10.0  # within the levels the valve has: no overshoot
        assert not temp.step_like and temp.method == fill_select.KALMAN
        assert temp.validation_cells > 0 and temp.validation_mae is not None and 0.0 < temp.validation_mae < 3.0
        assert f.confidence["temp"] > 0.0
        assert Telemetry.model_validate_json(f.model_dump_json()) == f  # the metadata survives the wire


def test_a_clearly_better_filler_is_chosen_for_a_linear_ramp() -> None:
    y = np.column_stack([np.arange(60, dtype=float) * 2.0 + 1.0])  # noise-free ramp: linear interpolation is exact
    y[30:35] = np.nan
    value, std, used, picks = FillMethod.baseline("t", adaptive=True).fill_choosing([y], [["ramp"]])[0]
    assert picks["ramp"].method == fill_select.LINEAR and picks["ramp"].mae == pytest.approx(0.0, abs=1e-9)
    assert np.allclose(value[30:35, 0], np.arange(30, 35) * 2.0 + 1.0) and used == set()
    assert (std[30:35, 0] >= 0).all() and (std[~np.isnan(y)] == 0).all()


def test_non_adaptive_fills_carry_no_choice() -> None:
    filler = GapFiller(FillMethod.baseline("test"), window=16)
    rng = np.random.default_rng(1)
    for seq in range(10):
        filler.on_telemetry(Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=seq), seq=seq, metrics=truth(seq, rng)))
    filler.on_telemetry(Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=10), seq=10,
                                  metrics={"valve": 0.0, "temp": None}))
    filler.on_gap(Gap(entity_id="e", kind="missing_sensor", sensors=["temp"], first_seq=10, last_seq=10,
                      start_time=T0 + timedelta(seconds=10), end_time=T0 + timedelta(seconds=10), samples=1, open=True))
    (f,) = filler.produce()
    assert f.fill == {}


def test_setting_turns_adaptive_fills_on_by_default() -> None:
    assert choose_fill_method(Settings()).adaptive
    assert not choose_fill_method(Settings(sidecar_adaptive_fill=False)).adaptive


@pytest.fixture(scope="module")
def generator():
    from twinstream.models.generator import load_generator

    return load_generator(gate=OPEN_GATE)


def test_generator_is_a_candidate_for_its_own_sensors_only(generator) -> None:
    g = generator
    rng = np.random.default_rng(2)
    names = [*g.sensors[:3], "not_a_generator_sensor"]
    y = np.column_stack([np.array(g.mean[:3]) + rng.normal(size=(48, 3)) * np.array(g.std[:3]), np.linspace(0, 1, 48)])
    y[30:35] = np.nan
    method = FillMethod("generator", g.version, "test", generator=g, adaptive=True)
    value, std, used, picks = method.fill_choosing([y], [names], seed=0)[0]
    assert set(picks) == set(names) and np.isfinite(value).all() and (std[30:35] > 0).all()
    assert picks["not_a_generator_sensor"].method != fill_select.GENERATOR
    assert used == {n for n, c in picks.items() if c.method == fill_select.GENERATOR} and used <= set(names[:3])
    slow = FillMethod("generator", g.version, "test", generator=g, adaptive=True, budget_s=1e-6)
    _, _, used_slow, picks_slow = slow.fill_choosing([y], [names], seed=0)[0]
    assert used_slow == set() and all(c.method != fill_select.GENERATOR for c in picks_slow.values())
    assert sum(slow.fallbacks.values()) == 1
