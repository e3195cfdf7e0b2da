"""A prior's training ranges as positions in a learner's feature vector, checked per event.

Why apart from the learner: the check runs once per event and must stay a few list
operations (no numpy per event); the bounds themselves are parsed once per prior and
process, keyed by the prior's weights digest.
"""

from __future__ import annotations

import math

from twinstream.models.domain import DomainBounds
from twinstream.models.prior import FleetPrior


class FeatureDomain:
    """A prior's training ranges, as positions in the learner's feature vector (checked per event)."""

    __slots__ = ("idx", "low", "high", "max_outside")

    def __init__(self, bounds: DomainBounds, names: list[str]) -> None:
        known = [(names.index(n), lo, hi) for n, lo, hi in zip(bounds.names, bounds.low, bounds.high) if n in names]
        self.idx = [k for k, _, _ in known]
        self.low = [lo for _, lo, _ in known]
        self.high = [hi for _, _, hi in known]
        self.max_outside = bounds.max_outside

    def score(self, vector: list[float]) -> float:
        seen = out = 0
        for k, lo, hi in zip(self.idx, self.low, self.high):
            v = vector[k]
            if v == v:
                seen += 1
                if v < lo or v > hi:
                    out += 1
        return out / seen if seen else 0.0

    def mask(self, vector: list[float]) -> list[float]:
        """``vector`` with every feature outside the training ranges read as missing (the prior imputes its mean)."""
        out = list(vector)
        for k, lo, hi in zip(self.idx, self.low, self.high):
            v = out[k]
            if v == v and (v < lo or v > hi):
                out[k] = math.nan
        return out


_DOMAINS: dict[str, DomainBounds | None] = {}  # by weights digest: one fit or parse per prior and process


def prior_domain(prior: FleetPrior) -> DomainBounds | None:
    """The training ranges of ``prior``'s features (its manifest's ``domain``); None for an artifact without them."""
    key = prior.digest
    if key not in _DOMAINS:
        recorded = getattr(prior.manifest, "domain", None)
        _DOMAINS[key] = DomainBounds.from_manifest(recorded) if recorded else None
    return _DOMAINS[key]
