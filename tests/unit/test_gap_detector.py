"""The per-entity gap detector: each gap kind, no false alarms on clean data, bounded and picklable."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime, timedelta

import pytest

from twinstream.datasets import cmapss
from twinstream.models.gaps import GapDetector
from twinstream.schemas.gaps import GapKind

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def wavy(seq: int) -> dict[str, float | None]:
    return {"a": float(seq % 5), "b": float((3 * seq) % 11)}


def feed(det: GapDetector, seqs, times=None, metrics=wavy):
    out = []
    for i, seq in enumerate(seqs):
        t = times[i] if times is not None else at(10.0 * seq)
        out.extend(det.observe_one(seq, t, metrics(seq), detected_at=T0))
    return out


def test_sequence_jump_is_missed_samples_with_seq_and_time_range() -> None:
    det = GapDetector("e")
    gaps = feed(det, [0, 1, 2, 7, 8])
    assert len(gaps) == 1
    g = gaps[0]
    assert (g.kind, g.first_seq, g.last_seq, g.samples, g.sensors, g.open) == (GapKind.MISSED_SAMPLES, 3, 6, 4, [], False)
    assert (g.start_time, g.end_time) == (at(20.0), at(70.0))
    assert det.cadence_s == 10.0


def test_silence_without_seq_jump_uses_learned_cadence() -> None:
    det = GapDetector("e", min_steps=5)
    times = [at(10.0 * i) for i in range(10)] + [at(90.0 + 40.0)]  # 40 s silence where 10 s is usual
    gaps = feed(det, range(11), times)
    assert [(g.kind, g.first_seq, g.samples) for g in gaps] == [(GapKind.MISSED_SAMPLES, None, 3)]
    assert det.cadence_s == 10.0  # the silence does not inflate the cadence


def test_no_cadence_gap_before_enough_steps_and_jitter_is_tolerated() -> None:
    det = GapDetector("e", min_steps=5)
    assert feed(det, range(3), [at(0.0), at(10.0), at(60.0)]) == []  # too early to call
    det = GapDetector("e")
    jitter = [at(10.0 * i + (3.0 if i % 2 else -3.0)) for i in range(50)]
    assert feed(det, range(50), jitter) == []


def test_missing_sensor_opens_and_closes_grouped() -> None:
    det = GapDetector("e")

    def drop(seq: int) -> dict[str, float | None]:
        return {"a": None if 5 <= seq <= 7 else 1.0 + seq, "b": float("nan") if 5 <= seq <= 7 else 2.0 * seq}

    gaps = feed(det, range(10), metrics=drop)
    assert [(g.kind, g.sensors, g.first_seq, g.last_seq, g.samples, g.open) for g in gaps] == [
        (GapKind.MISSING_SENSOR, ["a", "b"], 5, 5, 1, True),
        (GapKind.MISSING_SENSOR, ["a", "b"], 5, 7, 3, False),
    ]
    assert gaps[1].start_time == at(50.0) and gaps[1].end_time == at(70.0)


def test_absent_sensor_counts_as_missing_only_once_seen_or_expected() -> None:
    det = GapDetector("e")
    gaps = feed(det, range(4), metrics=lambda s: {"a": float(s)} if s != 2 else {})
    assert [(g.kind, g.sensors, g.first_seq, g.open) for g in gaps] == [
        (GapKind.MISSING_SENSOR, ["a"], 2, True), (GapKind.MISSING_SENSOR, ["a"], 2, False)]
    expected = GapDetector("e", sensors=("a", "z"))
    gaps = feed(expected, range(2), metrics=lambda s: {"a": float(s)})
    assert [(g.sensors, g.open) for g in gaps] == [(["z"], True)]  # one open gap, not one per sample
    assert expected.open_gaps() == {"z": GapKind.MISSING_SENSOR}


def test_flatline_of_a_varying_sensor_but_not_of_a_constant_one() -> None:
    det = GapDetector("e", flat_window=5)

    def frozen(s: int) -> dict[str, float | None]:
        return {"a": float(s % 5) if s < 40 else 9.0, "const": 3.0, "b": float(s % 3) if s < 80 else 4.0}

    gaps = feed(det, range(100), metrics=frozen)
    opened = [g for g in gaps if g.open]
    assert [(g.kind, g.sensors, g.first_seq) for g in opened] == [(GapKind.FLATLINE, ["a"], 40), (GapKind.FLATLINE, ["b"], 80)]
    assert opened[0].last_seq - opened[0].first_seq + 1 <= 20  # found within 20 repeats
    assert det.open_gaps() == {"a": GapKind.FLATLINE, "b": GapKind.FLATLINE}
    closed = feed(det, [100], metrics=lambda s: {"a": 1.0, "const": 3.0, "b": 4.0})
    assert [(g.kind, g.sensors, g.first_seq, g.last_seq, g.open) for g in closed] == [(GapKind.FLATLINE, ["a"], 40, 99, False)]


def test_duplicates_late_and_naive_times() -> None:
    det = GapDetector("e")
    feed(det, range(5))
    assert det.observe_one(3, at(30.0), wavy(3)) == [] and det.last_seq == 4
    with pytest.raises(ValueError):
        det.observe_one(5, datetime(2026, 1, 1), wavy(5))


def test_pickle_mid_stream_gives_the_same_future() -> None:
    det = GapDetector("e", flat_window=5)

    def frozen(s: int) -> dict[str, float | None]:
        return {"a": float(s % 5) if s < 40 else 9.0, "b": None if s in (30, 31) else float(s % 3)}

    feed(det, range(35), metrics=frozen)
    copy = pickle.loads(pickle.dumps(det))
    seqs = [35, 36, 39, 40, *range(41, 70)]
    assert feed(copy, seqs, metrics=frozen) == feed(det, seqs, metrics=frozen)


def test_memory_is_bounded() -> None:
    det = GapDetector("e", max_sensors=8)
    feed(det, range(100), metrics=lambda s: {f"x{i}": float((s * (i + 1)) % 7) for i in range(20)})
    small = det.state_bytes()
    feed(det, range(100, 5000), metrics=lambda s: {f"x{i}": float((s * (i + 1)) % 7) for i in range(20)})
    assert len(det.sensors) == 8 and len(det.steps) <= 31
    assert det.state_bytes() <= small + 64


def test_clean_cmapss_raises_nothing_and_a_frozen_sensor_is_found() -> None:
    fd = cmapss.load_subset("FD001")
    start = time.perf_counter()
    detectors: dict[int, GapDetector] = {}
    found = []
    for r in fd.test:
        det = detectors.setdefault(r.unit, GapDetector(f"test-{r.unit}"))
        metrics = dict(r.sensors)
        if r.unit == 49 and r.cycle >= 100:
            metrics["s11"] = 47.5  # dead sensor from cycle 100
        if r.unit == 91 and 50 <= r.cycle < 60:
            metrics["s2"] = None  # sensor dropped for 10 cycles
        found.extend((r.unit, g.kind, tuple(g.sensors), g.first_seq, g.last_seq, g.open)
                     for g in det.observe_one(r.cycle, at(600.0 * r.cycle), metrics, detected_at=T0))
    assert time.perf_counter() - start < 10.0
    flat = [f for f in found if f[1] is GapKind.FLATLINE]
    assert [f[:4] for f in flat] == [(49, GapKind.FLATLINE, ("s11",), 100)] and flat[0][4] < 120
    assert [f for f in found if f[1] is GapKind.MISSING_SENSOR] == [
        (91, GapKind.MISSING_SENSOR, ("s2",), 50, 50, True), (91, GapKind.MISSING_SENSOR, ("s2",), 50, 59, False)]
    assert not [f for f in found if f[1] is GapKind.MISSED_SAMPLES]


def test_a_lasting_change_of_cadence_is_learned() -> None:
    det = GapDetector("e")
    times = [at(10.0 * i) for i in range(40)] + [at(390.0 + 60.0 * i) for i in range(1, 41)]
    gaps = feed(det, range(80), times)
    assert 0 < len(gaps) <= 16  # the first slow samples look like silences, then it is the new cadence
    assert det.cadence_s == 60.0
