"""A prior twin's shared parts: the fleet prior, its domain checks and the online fleet model.

Why apart from the twin's own state: they are the same for every twin of a prior (a
million twins may be resident), so they are attached by reference when a twin is made
or unpickled, never pickled with it, and swapped in place when a new prior is published
(:func:`hot_swap`) without touching what the twin learned itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from twinstream.models.active_priors import active_prior, set_active_prior
from twinstream.models.domain import DomainBounds
from twinstream.models.features import RulFeatures, feature_names
from twinstream.models.fleet import FleetModel, get_fleet
from twinstream.models.generic_features import GenericFeatures
from twinstream.models.generic_features import feature_names as generic_feature_names
from twinstream.models.prior import FleetPrior, PriorMismatchError, bundled_prior_dir, load_prior
from twinstream.models.prior_domain import FeatureDomain, prior_domain
from twinstream.schemas.prior import FeatureSchema

# Per-process caches of what is the same for every twin of a prior: sharing them keeps a
# twin's memory (a million may be resident) and its creation or reload cost small.
_SHARED_NAMES: dict[tuple[str, ...], list[str]] = {}
_SHARED_DOMAINS: dict[tuple[str, tuple[str, ...], float], FeatureDomain] = {}


def _shared_domain(prior: FleetPrior | None, bounds: DomainBounds, names: list[str], margin: float) -> FeatureDomain:
    """The prior's domain check over ``names`` (read only), built once per prior digest, names and margin."""
    key = ("" if prior is None else prior.digest, tuple(names), margin)
    domain = _SHARED_DOMAINS.get(key)
    if domain is None:
        domain = _SHARED_DOMAINS[key] = FeatureDomain(bounds, names, margin)
    return domain


class PriorAttachment:
    """Methods of :class:`~twinstream.models.prior_twin.PriorTwin` for its shared, unpickled parts."""

    # Set by PriorTwin.__init__ (or restored by __setstate__).
    prior: str | None
    fleet: str | None
    cap: float
    metrics: list[str] | None
    fallback_margin: float
    _fx: RulFeatures | GenericFeatures
    _names: list[str]

    def _feature_names(self) -> list[str]:
        """The feature names, one list shared by every twin with the same ones (read only)."""
        names = generic_feature_names(self.metrics) if self.metrics else feature_names(self._fx.sensors)  # type: ignore[union-attr]
        return _SHARED_NAMES.setdefault(tuple(names), names)

    def _attach(self) -> None:
        self._prior: FleetPrior | None = None
        if self.prior is not None:
            directory = bundled_prior_dir() if self.prior == "bundled" else self.prior
            self._prior = load_prior(directory, self._fx.schema())
            active = active_prior(self._prior.manifest.family)
            if active is not None and not active.manifest.feature_schema.differences(self._fx.schema()):
                self._prior = active
            if math.isfinite(self._prior.cap):  # a prior trained without --cap keeps the twin's own cap
                self.cap = self._prior.cap
        self._attach_domain()
        self._fleet: FleetModel | None = get_fleet(self.fleet, residual=self._prior is not None, cap=self.cap) if self.fleet else None

    def _attach_domain(self) -> None:
        bounds = prior_domain(self._prior) if self._prior is not None else None
        self._domain_bounds = bounds
        self._domain = _shared_domain(self._prior, bounds, self._names, 0.0) if bounds is not None else None
        # What the fallback (masking, abandoning) counts as outside: the ranges widened by fallback_margin.
        self._fallback_domain = self._domain
        if bounds is not None and self.fallback_margin != 0.0:
            self._fallback_domain = _shared_domain(self._prior, bounds, self._names, self.fallback_margin)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_prior", None)
        state.pop("_fleet", None)
        state.pop("_names", None)
        state.pop("_domain", None)
        state.pop("_domain_bounds", None)
        state.pop("_fallback_domain", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The pickled state, then the shared parts attached again."""
        self.__dict__.update(state)
        self._names = self._feature_names()
        self._attach()

    @property
    def prior_version(self) -> str | None:
        return self._prior.manifest.prior_version if self._prior is not None else None

    @property
    def fleet_prior(self) -> FleetPrior | None:
        """The prior in use (shared by every twin of its family in this process)."""
        return self._prior

    @property
    def prior_family(self) -> str | None:
        """Family of the prior in use (None without a prior): which registry family this twin follows."""
        return self._prior.manifest.family if self._prior is not None else None

    def feature_schema(self) -> FeatureSchema:
        """The feature schema this learner produces (a prior must match it)."""
        return self._fx.schema()

    def swap_prior(self, prior: FleetPrior) -> bool:
        """Use ``prior`` from the next event on, keeping all personal state; False if not of this twin's family.

        Raises :class:`PriorMismatchError` when its feature schema is not this learner's.
        """
        if self._prior is None or prior.manifest.family != self._prior.manifest.family:
            return False
        problems = prior.manifest.feature_schema.differences(self._fx.schema())
        if problems:
            raise PriorMismatchError(f"prior {prior.manifest.prior_version}: feature schema mismatch: {'; '.join(problems)}")
        self._prior = prior
        if math.isfinite(prior.cap):
            self.cap = prior.cap
        self._attach_domain()
        return True


def hot_swap(learners: Iterable[object], prior: FleetPrior) -> int:
    """Swap ``prior`` into every learner of its family; returns how many were swapped.

    Only the shared prior reference changes: each twin's personal state (feature state,
    own-label model, residual quantile, drift detector, label count) is untouched. The
    prior becomes the family's active prior first, so twins restored or created later
    use it too. Raises :class:`PriorMismatchError` (before touching any twin) when the
    prior's feature schema is not the learners'.
    """
    learners = [learner for learner in learners if isinstance(learner, PriorAttachment) and learner.prior_family == prior.manifest.family]
    for learner in learners:
        problems = prior.manifest.feature_schema.differences(learner.feature_schema())
        if problems:
            raise PriorMismatchError(f"prior {prior.manifest.prior_version}: feature schema mismatch: {'; '.join(problems)}")
    set_active_prior(prior)
    return sum(learner.swap_prior(prior) for learner in learners)


