"""Synthetic gap fills move a twin's smoothing state but never its personal baseline."""

from __future__ import annotations

import math

from twinstream.models.features import RulFeatures
from twinstream.models.river_linear import RiverLinearTwin
from twinstream.models.twin import SeqStatus, Twin


def test_synthetic_values_stay_out_of_the_baseline_which_waits_for_measured_ones() -> None:
    fx = RulFeatures(sensors=("a",), baseline_n=2)
    fx.update({"a": 1.0})
    fx.update({"a": 100.0}, synthetic={"a"})  # a fill: moves the means, not the baseline
    x = fx.update({"a": 3.0})  # the second measured reading completes the baseline (1 + 3) / 2
    baseline = x["a_ew"] - x["a_dev"]
    assert math.isclose(baseline, 2.0)
    assert x["a_ew"] > 3.0  # the fill did move the fast mean
    x = fx.update({"a": 50.0})  # baseline is full now: later readings do not change it
    assert math.isclose(x["a_ew"] - x["a_dev"], 2.0)


def test_without_synthetic_flags_the_baseline_is_the_first_readings() -> None:
    fx = RulFeatures(sensors=("a",), baseline_n=2)
    fx.update({"a": 1.0})
    x = fx.update({"a": 100.0})
    assert math.isclose(x["a_ew"] - x["a_dev"], 50.5)


def test_absorb_applies_a_missed_sample_once_and_keeps_a_late_measured_one_reportable() -> None:
    twin = Twin(entity_id="e", learner=RiverLinearTwin())
    twin.step(0, {"s1": 1.0}, None)
    twin.step(3, {"s1": 1.3}, None)
    assert twin.updates == 2 and twin.missing == [1, 2]
    assert twin.absorb(2, {"s1": 1.2}) and twin.updates == 3
    assert not twin.absorb(2, {"s1": 1.2}) and twin.updates == 3  # at most once
    assert not twin.absorb(5, {"s1": 1.5})  # never missed: refused, nothing changes
    assert twin.classify(2) is SeqStatus.LATE and twin.classify(1) is SeqStatus.LATE
    restored = Twin.from_bytes(twin.to_bytes())
    assert restored.absorbed == [2] and restored.missing == [1]
