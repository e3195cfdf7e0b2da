"""A batch observed at once gives the same histogram as observing each value."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from twinstream.streams.metrics import observe_many


def samples(h: Histogram) -> list[tuple[str, tuple, float]]:
    return [(s.name, tuple(sorted(s.labels.items())), s.value) for m in h.collect() for s in m.samples if not s.name.endswith("_created")]


def test_batch_equals_one_by_one_including_bounds_and_nan() -> None:
    rng = random.Random(3)
    buckets = (0.5, 1, 2.5, 5, 10, 25, 50)
    values = [rng.expovariate(0.1) for _ in range(500)] + list(buckets) + [0.0, -1.0, 1e9, math.nan]
    one, many = (Histogram("err", "e", ["target"], buckets=buckets, registry=CollectorRegistry()) for _ in range(2))
    for v in values:
        one.labels("rul").observe(v)
    observe_many(many.labels("rul"), values)
    left, right = samples(one), samples(many)
    assert [s[:2] for s in left] == [s[:2] for s in right]
    for (name, labels, a), (_, _, b) in zip(left, right, strict=True):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12), (name, labels, a, b)
