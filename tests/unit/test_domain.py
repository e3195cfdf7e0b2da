"""Domain checks: per-feature training quantiles flag inputs the model never saw."""

from __future__ import annotations

import json

import numpy as np

from twinstream.models.domain import DomainBounds, OnlineDomain


def test_training_rows_are_in_domain_and_far_shifts_are_not() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(5000, 3))
    bounds = DomainBounds.fit(train, ["a", "b", "c"])
    fresh = rng.normal(size=(2000, 3))
    share = np.mean([bounds.check(row)[0] for row in fresh])
    assert share > 0.97
    in_domain, score = bounds.check([0.0, 25.0, -30.0])
    assert not in_domain and abs(score - 2 / 3) < 1e-12
    assert bounds.outside([0.0, 25.0, -30.0]) == ["b", "c"]


def test_missing_features_are_ignored_and_unseen_features_accept_anything() -> None:
    bounds = DomainBounds.fit([[1.0, float("nan")], [2.0, float("nan")]], ["a", "b"])
    assert bounds.check([1.5, 1e9]) == (True, 0.0)
    assert bounds.check([float("nan"), 3.0]) == (True, 0.0)


def test_manifest_round_trip_is_json() -> None:
    bounds = DomainBounds.fit(np.arange(100.0).reshape(50, 2), ["a", "b"], max_outside=0.5)
    again = DomainBounds.from_manifest(json.loads(json.dumps(bounds.to_manifest())))
    assert again == bounds


def test_online_domain_knows_nothing_until_warm() -> None:
    dom = OnlineDomain(["x"], window=300, min_samples=50, refit_every=25)
    assert dom.check([0.0]) == (False, 1.0)
    for i in range(60):
        dom.observe([float(i % 10)])
    assert dom.check([4.0])[0] and not dom.check([1000.0])[0]
