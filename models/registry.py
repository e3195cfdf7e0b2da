"""Learners by name, so config can pick one (``TWINSTREAM_LEARNER``) without imports.

>>> make_learner("river-linear", clip_min=0.0).family
'river-linear'
>>> make_learner(DEFAULT_LEARNER, **DEFAULT_PARAMS).prior_version
'rul-mlp-v2'
>>> make_learner("nope")
Traceback (most recent call last):
...
ValueError: unknown learner 'nope'; known: prior-twin, river-linear
"""

from __future__ import annotations

from typing import Any

from twinstream.models.base import TwinLearner
from twinstream.models.prior_twin import PriorTwin
from twinstream.models.river_linear import RiverLinearTwin

LEARNERS: dict[str, type[TwinLearner]] = {
    RiverLinearTwin.family: RiverLinearTwin,
    PriorTwin.family: PriorTwin,
}
DEFAULT_LEARNER = PriorTwin.family
DEFAULT_PARAMS: dict[str, Any] = {"prior": "bundled"}


def make_learner(name: str, **params: Any) -> TwinLearner:
    """A fresh learner of the named family."""
    try:
        cls = LEARNERS[name]
    except KeyError:
        raise ValueError(f"unknown learner {name!r}; known: {', '.join(sorted(LEARNERS))}") from None
    return cls(**params)
