"""Priors swapped in at run time (pulled from a registry), by prior family.

Process-wide, like the prior cache: a twin restored from its pickled state (which holds
only its configured prior) or created later picks up the active prior of its family.
"""

from __future__ import annotations

from twinstream.models.prior import FleetPrior

_ACTIVE_PRIORS: dict[str, FleetPrior] = {}


def set_active_prior(prior: FleetPrior) -> None:
    """Make ``prior`` the one every twin of its family uses from now on (see :func:`hot_swap`)."""
    _ACTIVE_PRIORS[prior.manifest.family] = prior


def active_prior(family: str) -> FleetPrior | None:
    return _ACTIVE_PRIORS.get(family)


def clear_active_priors() -> None:
    """Back to each twin's configured prior for twins attached from now on (tests)."""
    _ACTIVE_PRIORS.clear()
