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

    def __init__(self, bounds: DomainBounds, names: list[str], margin: float = 0.0) -> None:
        """``margin`` widens each finite range by that share of its width on both sides.

        Why a margin of its own: the manifest's ranges say what is *in domain* (the interval
        widens outside them); whether the prior should stop hearing a feature is a separate
        decision, and a feature a hair outside its training band (a held-out engine near
        failure, a gap fill that overshoots a little) is still better heard than imputed.

        >>> d = FeatureDomain(DomainBounds(("a",), (0.0,), (1.0,)), ["a"], margin=0.5)
        >>> d.score([1.4]), d.score([1.6]), d.mask([1.6])
        (0.0, 1.0, [nan])
        """
        if margin < 0.0:
            raise ValueError("margin must be >= 0")
        known = [(names.index(n), lo, hi) for n, lo, hi in zip(bounds.names, bounds.low, bounds.high) if n in names]
        widen = [margin * (hi - lo) if math.isfinite(hi - lo) else 0.0 for _, lo, hi in known]
        self.idx = [k for k, _, _ in known]
        self.low = [lo - w for (_, lo, _), w in zip(known, widen)]
        self.high = [hi + w for (_, _, hi), w in zip(known, widen)]
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
