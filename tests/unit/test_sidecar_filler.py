"""The sidecar's pure parts (no broker): what gets filled, with what, and which offsets are held."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import numpy as np
import pytest

from twinstream.schemas import Gap, Telemetry
from twinstream.settings import Settings
from twinstream.streams.fill_method import FillMethod, choose_fill_method
from twinstream.streams.filler import GapFiller
from twinstream.streams.sidecar import Sidecar

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def truth(seq: int) -> dict[str, float]:
    """Two smooth sensors with a little deterministic wiggle."""
    return {"a": 10.0 + 0.5 * seq + 0.05 * math.sin(seq), "b": 100.0 - 0.2 * seq + 0.05 * math.cos(seq)}


def sample(seq: int, **missing: None) -> Telemetry:
    metrics: dict[str, float | None] = {**truth(seq), **missing}
    return Telemetry(entity_id="e", event_time=T0 + timedelta(seconds=10 * seq), seq=seq, metrics=metrics)


def sensor_gap(first: int, last: int, is_open: bool, sensors: list[str] | None = None, kind: str = "missing_sensor") -> Gap:
    return Gap(entity_id="e", kind=kind, sensors=sensors or ["a"], first_seq=first, last_seq=last,
               start_time=T0 + timedelta(seconds=10 * first), end_time=T0 + timedelta(seconds=10 * last),
               samples=last - first + 1, open=is_open)


@pytest.fixture
def filler() -> GapFiller:
    return GapFiller(FillMethod.baseline("test"), window=32, max_missed=5)


def test_open_sensor_gap_fills_each_sample_lacking_it_once(filler: GapFiller) -> None:
    for seq in range(20):
        filler.on_telemetry(sample(seq))
    filler.on_telemetry(sample(20, a=None))
    filler.on_gap(sensor_gap(20, 20, True))
    filler.on_telemetry(sample(21, a=None))
    fills = filler.produce()
    assert [(f.seq, set(f.metrics)) for f in fills] == [(20, {"a"}), (21, {"a"})]
    for f in fills:
        assert f.synthetic and f.generator == "kalman-llt-window-v1" and f.source == "twinstream-sidecar"
        assert f.event_time == T0 + timedelta(seconds=10 * f.seq)
        assert abs(f.metrics["a"] - truth(f.seq)["a"]) < 0.5  # a trend of 0.5 per step, continued
        assert f.confidence["a"] > 0
    filler.on_gap(sensor_gap(20, 21, True))  # redelivered open gap: nothing new to fill
    assert filler.produce() == []
    filler.on_telemetry(sample(22, a=None))
    assert [f.seq for f in filler.produce()] == [22]
    filler.on_gap(sensor_gap(20, 22, False))  # closed: rows of the range already filled
    filler.on_telemetry(sample(23))
    filler.on_telemetry(sample(24, a=None))  # missing again, but no gap is open (the detector will say)
    assert filler.produce() == []


def test_gap_message_before_its_sample_and_measured_values_are_never_filled(filler: GapFiller) -> None:
    for seq in range(10):
        filler.on_telemetry(sample(seq))
    filler.on_gap(sensor_gap(10, 10, True, sensors=["a", "b"]))
    filler.on_telemetry(sample(10, a=None))  # b was measured at seq 10
    (fill,) = filler.produce()
    assert fill.seq == 10 and set(fill.metrics) == {"a"}


def test_missed_samples_are_filled_whole_up_to_the_limit(filler: GapFiller) -> None:
    for seq in [*range(0, 20), 28]:
        filler.on_telemetry(sample(seq))
    gap = Gap(entity_id="e", kind="missed_samples", first_seq=20, last_seq=27, samples=8,
              start_time=T0 + timedelta(seconds=190), end_time=T0 + timedelta(seconds=280))
    filler.on_gap(gap)
    fills = filler.produce()
    assert [f.seq for f in fills] == [20, 21, 22, 23, 24]  # max_missed = 5
    assert filler.unfilled["missed_over_limit"] == 3
    for f in fills:
        assert set(f.metrics) == {"a", "b"}
        assert gap.start_time < f.event_time < gap.end_time
        assert abs(f.metrics["a"] - truth(f.seq)["a"]) < 0.5 and abs(f.metrics["b"] - truth(f.seq)["b"]) < 0.5
    assert [f.event_time for f in fills] == sorted(f.event_time for f in fills)


def test_flatline_and_unconditioned_sensors_are_not_filled(filler: GapFiller) -> None:
    for seq in range(10):
        filler.on_telemetry(sample(seq))
    filler.on_gap(sensor_gap(5, 9, True, kind="flatline"))
    assert filler.produce() == [] and filler.unfilled["flatline"] == 1
    other = GapFiller(FillMethod.baseline("test"), window=8)
    for seq in range(10):  # the window (8 samples) never saw a value of a
        other.on_telemetry(sample(seq, a=None))
    other.on_gap(sensor_gap(2, 2, True))
    assert other.produce() == [] and other.unfilled["no_context"] >= 1


def test_prime_merges_context_by_seq(filler: GapFiller) -> None:
    for seq in range(10, 20):
        filler.on_telemetry(sample(seq, a=None))
    for seq in range(0, 12):  # read back after a restart, partly overlapping
        filler.prime(sample(seq))
    rows = filler.entities["e"].rows
    assert [row[0] for row in rows] == list(range(0, 20))
    filler.on_gap(sensor_gap(10, 10, True))
    assert [f.seq for f in filler.produce()] == list(range(10, 20))


def test_baseline_confidence_grows_into_a_gap() -> None:
    y = np.array([[float(i)] for i in range(20)] + [[np.nan]] * 5)
    value, std, _ = FillMethod.baseline("t").fill([y], [["a"]])[0]
    assert np.all(std[:20] == 0) and np.all(np.diff(std[20:, 0]) > 0)
    assert np.allclose(value[20:, 0], np.arange(20, 25), atol=0.5)


def test_generator_is_used_for_its_sensors_when_the_gate_allows_it() -> None:
    method = choose_fill_method(Settings(synth_gate_max_mae_ratio=None, synth_gate_max_discriminative=None))
    assert method.kind == "generator", method.reason
    g = method.generator
    names = [*g.sensors[:3], "not_a_generator_sensor"]
    rng = np.random.default_rng(0)
    y = np.column_stack([np.array(g.mean[:3]) + rng.normal(size=(40, 3)) * np.array(g.std[:3]), np.linspace(0, 1, 40)])
    y[30:, 0] = np.nan
    y[30:, 3] = np.nan
    value, std, by_generator = method.fill([y], [names], seed=1)[0]
    assert np.isfinite(value).all() and (std[30:, 0] > 0).all() and (std[30:, 3] > 0).all()
    assert np.array_equal(value[~np.isnan(y)], y[~np.isnan(y)])
    assert by_generator == set(names[:3])  # its own sensors, in its units; the other one: baseline
    # a sensor that only shares a name (other units, far from the training data) goes to the baseline
    shifted = y.copy()
    shifted[:, 0] -= 50 * g.std[0]
    assert method.fill([shifted], [names], seed=1)[0][2] == set(names[1:3])
    refused = choose_fill_method(Settings(synth_gate_max_mae_ratio=1e-9))
    assert refused.kind == "baseline" and "mae_ratio" in refused.reason


def _event(offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(offset=offset))


def test_open_gaps_are_acked_only_when_closed() -> None:
    sidecar = Sidecar.__new__(Sidecar)  # only the offset-holding logic, no app
    sidecar.held, sidecar.unacked_by_event = {}, {}
    opened = _event(1)
    assert sidecar._hold_or_release(opened, sensor_gap(5, 5, True, sensors=["a", "b"])) == []
    closed_a = _event(2)
    assert sidecar._hold_or_release(closed_a, sensor_gap(5, 7, False, sensors=["a"])) == [closed_a]
    closed_b = _event(3)
    assert sidecar._hold_or_release(closed_b, sensor_gap(5, 9, False, sensors=["b"])) == [closed_b, opened]
    flat = _event(4)
    assert sidecar._hold_or_release(flat, sensor_gap(5, 9, True, kind="flatline")) == [flat]


def test_a_large_batch_does_not_push_the_context_out_before_filling() -> None:
    """Fills pending for an entity are computed before a new row would evict their context."""
    filler = GapFiller(FillMethod.baseline("test"), window=8)
    for seq in range(8):
        filler.on_telemetry(sample(seq))
    filler.on_gap(sensor_gap(8, 8, True))
    for seq in range(8, 30):  # one batch: 22 samples lacking a, produce() only at the end
        filler.on_telemetry(sample(seq, a=None))
    fills = filler.produce()
    assert [f.seq for f in fills][:3] == [8, 9, 10]
    assert abs(fills[0].metrics["a"] - truth(8)["a"]) < 0.5


def test_context_of_a_dropped_sensor_survives_a_late_gap_message() -> None:
    """The gap message arrives after the window moved past the sensor's last values."""
    filler = GapFiller(FillMethod.baseline("test"), window=8)
    for seq in range(8):
        filler.on_telemetry(sample(seq))
    for seq in range(8, 30):
        filler.on_telemetry(sample(seq, a=None))
    filler.on_gap(sensor_gap(8, 8, True))  # late: rows 8..21 already left the window
    fills = filler.produce()
    assert [f.seq for f in fills] == list(range(22, 30))
    assert all(abs(f.metrics["a"] - truth(f.seq)["a"]) < 1.0 for f in fills)
    filler.on_telemetry(sample(30))  # a is back: its anchored context is dropped
    assert "a" not in filler.entities["e"].anchors
