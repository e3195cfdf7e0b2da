"""Fleet-level online learning: what the fleet learns from labels as they are released.

Why: a twin's own labels come late or never (an engine's remaining life is known only
when it fails). When a fleet member fails, its whole history becomes labelled; a shared
online model learns from it in one pass, and every twin that names the fleet model uses
it at once. With a prior it learns the prior's residual (correcting the prior for this
fleet); without one it learns the target itself.

Fleet models are process-level objects looked up by name, like the prior: a twin's
pickled state holds only the name, never the shared model.

>>> fleet = get_fleet("doc-example", residual=False, cap=125.0)
>>> for i in range(200):
...     fleet.learn_one({"age": float(i % 50)}, 125.0 - (i % 50), base=0.0)
>>> fleet.seen, 100.0 < fleet.predict_one({"age": 10.0}, base=0.0) <= 125.0
(200, True)
>>> drop_fleet("doc-example")
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from river import linear_model, optim, preprocessing

_FLEETS: dict[str, "FleetModel"] = {}


class FleetModel:
    """A shared River model (``StandardScaler | LinearRegression``) on twin features.

    ``residual=True``: predicts a correction added to the base (the prior's prediction).
    ``residual=False``: predicts the target itself (cold: the ``cap``, i.e. "healthy").
    """

    def __init__(self, residual: bool, cap: float, lr: float = 0.005) -> None:
        self.residual = residual
        self.cap = cap
        init = 0.0 if residual else cap
        self.model = preprocessing.StandardScaler() | linear_model.LinearRegression(
            optimizer=optim.SGD(lr), intercept_init=init, intercept_lr=lr, clip_gradient=100.0
        )
        self.seen = 0

    @staticmethod
    def _clean(x: Mapping[str, float | None]) -> dict[str, float]:
        return {k: float(v) for k, v in x.items() if v is not None and math.isfinite(v)}

    def predict_one(self, x: Mapping[str, float | None], base: float) -> float:
        """Prediction (residual mode: base + correction), clipped to [0, cap]."""
        if self.seen == 0:
            value = base if self.residual else self.cap
        else:
            out = float(self.model.predict_one(self._clean(x)))
            value = base + out if self.residual else out
            if not math.isfinite(value):
                value = base if self.residual else self.cap
        return min(max(value, 0.0), self.cap)

    def learn_one(self, x: Mapping[str, float | None], y: float, base: float) -> None:
        target = min(y, self.cap) - (base if self.residual else 0.0)
        self.model.learn_one(self._clean(x), target)
        self.seen += 1


def get_fleet(name: str, residual: bool = True, cap: float = 125.0) -> FleetModel:
    """The process's fleet model called ``name`` (created on first use)."""
    fleet = _FLEETS.get(name)
    if fleet is None:
        fleet = _FLEETS[name] = FleetModel(residual=residual, cap=cap)
    return fleet


def drop_fleet(name: str) -> None:
    """Forget a fleet model (tests, evaluation arms)."""
    _FLEETS.pop(name, None)
