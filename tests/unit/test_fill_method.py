"""The sidecar's fill method: generator point estimates with a predictive confidence, and its time budget."""

from __future__ import annotations

import threading
import time
from datetime import UTC

import numpy as np
import pytest
from pydantic import ValidationError

from twinstream.schemas.generator import GateThresholds
from twinstream.settings import Settings
from twinstream.streams.fill_method import BASELINE_VERSION, FillMethod, choose_fill_method
from twinstream.streams.filler import GapFiller

OPEN_GATE = GateThresholds(max_mae_ratio=None, max_discriminative=None)


@pytest.fixture(scope="module")
def generator():
    from twinstream.models.generator import load_generator

    return load_generator(gate=OPEN_GATE)


def window(g, rows: int = 40, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Three generator sensors in their units plus a foreign column; gaps in a generator and the foreign column."""
    rng = np.random.default_rng(seed)
    names = [*g.sensors[:3], "not_a_generator_sensor"]
    y = np.column_stack([np.array(g.mean[:3]) + rng.normal(size=(rows, 3)) * np.array(g.std[:3]), np.linspace(0, 1, rows)])
    y[25:30, 0] = np.nan  # interior
    y[35:, 1] = np.nan  # open at the end
    y[30:, 3] = np.nan
    return y, names


def test_generator_value_is_its_point_estimate_and_confidence_its_predictive_sd(generator) -> None:
    g = generator
    method = FillMethod("generator", g.version, "test", generator=g)
    y, names = window(g)
    value, std, used = method.fill([y], [names], seed=3)[0]
    assert used == set(names[:3])
    missing = np.isnan(y)
    assert np.array_equal(value[~missing], y[~missing]) and np.isfinite(value).all()
    assert (std[missing] > 0).all() and (std[~missing] == 0).all()  # confidence only where a value was filled
    z = np.full((len(y), len(g.sensors)), np.nan)
    z[:, :3] = y[:, :3]
    z = g.to_z(z)
    point = g.from_z(g.impute_many_z([z], np.random.default_rng(3))[0])
    assert np.allclose(value[:, :3][missing[:, :3]], point[:, :3][missing[:, :3]])
    _, variances = g.trend_many([z])
    sd = np.sqrt(variances[0] + np.asarray(g.kalman.r)) * g.std
    assert np.allclose(std[:, :3][missing[:, :3]], sd[:, :3][missing[:, :3]])
    # the predictive sd includes the sensor's noise: never below sqrt(r) in z
    assert (std[missing[:, 0], 0] >= np.sqrt(g.kalman.r[0]) * g.std[0] - 1e-12).all()
    # deterministic for a seed: a redelivered gap gets the same value
    assert np.array_equal(method.fill([y], [names], seed=3)[0][0], value)


class SlowGenerator:
    """Wraps the real generator; its point estimate waits until ``release`` is set (or raises)."""

    def __init__(self, g, blocked: bool = True, fail: bool = False) -> None:
        self.g, self.fail = g, fail
        self.calls = 0
        self.release, self.done = threading.Event(), threading.Event()
        if not blocked:
            self.release.set()

    def __getattr__(self, name):
        return getattr(self.g, name)

    def point_many_z(self, windows, rng=None):
        self.calls += 1
        self.release.wait(30.0)
        self.done.set()
        if self.fail:
            raise RuntimeError("broken network")
        return self.g.point_many_z(windows, rng)


def test_over_budget_batch_is_filled_by_the_baseline_within_the_budget(generator) -> None:
    slow = SlowGenerator(generator)  # never finishes until released
    method = FillMethod("generator", generator.version, "test", generator=slow, budget_s=0.05)
    y, names = window(generator)
    baseline = FillMethod.baseline("t").fill([y], [names])[0]
    started = time.monotonic()
    value, std, used = method.fill([y], [names], seed=1)[0]
    assert time.monotonic() - started < 5.0  # the budget (plus a loaded machine's slack), not the generator
    assert not slow.done.is_set()  # returned while the generator call is still running
    assert used == set()  # nothing by the generator: the fills carry the baseline's version
    assert np.allclose(value, baseline[0], equal_nan=True) and np.allclose(std, baseline[1])
    assert method.fallbacks == {"timeout": 1, "busy": 0, "error": 0}
    assert "timeout" in method.last_fallback and "budget 0.05 s" in method.last_fallback
    # while the abandoned call runs, the next batch does not start another one
    assert method.fill([y], [names], seed=1)[0][2] == set()
    assert method.fallbacks["busy"] == 1 and slow.calls == 1 and not slow.done.is_set()
    slow.release.set()
    assert slow.done.wait(10.0)
    deadline = time.monotonic() + 10.0
    while method._calls.running is not None and not method._calls.running.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    # once it has ended, the next batch starts a generator call again (its result may still be over 0.05 s)
    method.fill([y], [names], seed=1)
    assert slow.calls == 2
    method_ok = FillMethod("generator", generator.version, "test", generator=slow, budget_s=30.0)
    assert method_ok.fill([y], [names], seed=1)[0][2] == set(names[:3])


def test_a_budget_of_a_microsecond_through_the_filler_gives_baseline_fills(generator, monkeypatch) -> None:
    """End to end through GapFiller: the fills of an over-budget batch say the baseline's version."""
    from datetime import datetime, timedelta

    from twinstream.schemas import Gap, Telemetry
    from twinstream.streams import fill_method

    real_point = fill_method.generator_point

    def slow_point(*args, **kwargs):  # over any budget: a small window can finish before the wait begins
        time.sleep(0.2)
        return real_point(*args, **kwargs)

    monkeypatch.setattr(fill_method, "generator_point", slow_point)
    g = generator
    method = FillMethod("generator", g.version, "test", generator=g, budget_s=1e-6)
    filler = GapFiller(method, window=32)
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rng = np.random.default_rng(0)
    sensors = g.sensors[:4]
    for seq in range(24):
        metrics = {s: float(g.mean[i] + rng.normal() * g.std[i]) for i, s in enumerate(sensors)}
        if seq >= 20:
            metrics[sensors[0]] = None
        filler.on_telemetry(Telemetry(entity_id="e", event_time=t0 + timedelta(seconds=seq), seq=seq, metrics=metrics))
    filler.on_gap(Gap(entity_id="e", kind="missing_sensor", sensors=[sensors[0]], first_seq=20, last_seq=20,
                      start_time=t0 + timedelta(seconds=20), end_time=t0 + timedelta(seconds=20), samples=1, open=True))
    started = time.monotonic()
    fills = filler.produce()
    assert time.monotonic() - started < 10.0  # bounded (the real generator takes ~50 ms here anyway)
    assert [f.seq for f in fills] == [20, 21, 22, 23]
    assert {f.generator for f in fills} == {BASELINE_VERSION}
    assert all(f.confidence[sensors[0]] > 0 for f in fills)
    assert method.fallbacks["timeout"] + method.fallbacks["busy"] == 1


def test_a_failing_generator_falls_back_to_the_baseline(generator) -> None:
    broken = SlowGenerator(generator, blocked=False, fail=True)
    method = FillMethod("generator", generator.version, "test", generator=broken, budget_s=5.0)
    y, names = window(generator)
    value, std, used = method.fill([y], [names])[0]
    assert used == set() and np.isfinite(value).all()
    assert method.fallbacks["error"] == 1 and "broken network" in method.last_fallback


def test_budget_setting_is_validated_and_reaches_the_fill_method(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().sidecar_generator_budget_s == 2.0
    for bad in (0, -1.0):
        with pytest.raises(ValidationError):
            Settings(sidecar_generator_budget_s=bad)
    monkeypatch.setenv("TWINSTREAM_SIDECAR_GENERATOR_BUDGET_S", "0")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("TWINSTREAM_SIDECAR_GENERATOR_BUDGET_S", "0.5")
    settings = Settings(synth_gate_max_mae_ratio=None, synth_gate_max_discriminative=None)
    assert settings.sidecar_generator_budget_s == 0.5
    method = choose_fill_method(settings)
    assert method.kind == "generator" and method.budget_s == 0.5


def test_sidecar_counts_and_logs_fallbacks_with_the_entities(generator, caplog: pytest.LogCaptureFixture) -> None:
    from datetime import datetime

    from twinstream.schemas import Telemetry
    from twinstream.streams.metrics import WorkerMetrics
    from twinstream.streams.sidecar import Sidecar

    sidecar = Sidecar.__new__(Sidecar)  # only the reporting, no app
    sidecar.method = FillMethod("generator", generator.version, "test", generator=generator, budget_s=1.0)
    sidecar.metrics = WorkerMetrics()
    sidecar._fallbacks_reported = {}
    sidecar.method._calls.fallback("timeout", "timeout: budget 1 s, waited 1.00 s; 1 windows, 5 generator cells")
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    fills = [Telemetry(entity_id=e, event_time=t0, seq=1, metrics={s: 1.0}, synthetic=True, generator=BASELINE_VERSION,
                       confidence={s: 1.0}) for e, s in (("engine-7", generator.sensors[0]), ("pump-1", "flow"))]
    with caplog.at_level("INFO", logger="twinstream.streams.sidecar"):
        sidecar._report_fallbacks(fills)
        sidecar._report_fallbacks(fills)  # nothing new: counted once
    value = sidecar.metrics.registry.get_sample_value("twinstream_sidecar_generator_fallbacks_total", {"reason": "timeout"})
    assert value == 1.0
    [record] = [r for r in caplog.records if "not used" in r.getMessage()]
    assert record.levelname == "WARNING" and "engine-7" in record.getMessage() and "pump-1" not in record.getMessage()
    assert "budget 1 s" in record.getMessage()
