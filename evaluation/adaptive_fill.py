"""The ``adaptive`` arm of ``eval synth``: per series, segment and column, the filler that worked there.

Each series is cut into segments of ``SEGMENT`` rows; a segment with missing cells is
filled from a window of ``CONTEXT`` more rows on either side, the way the sidecar fills
a gap from an entity's recent window. :mod:`twinstream.models.fill_select` picks, per
column of that window, the candidate (Kalman smoother, generator if any, linear, last
value) with the lowest error on pseudo-gaps cut from the window's *observed* values;
the masked cells are NaN in the input, so the choice never sees them. The chosen
candidate's value comes from its run on the whole series, so where the choice agrees
with a single filler the fill is exactly that filler's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from twinstream.models import fill_select
from twinstream.models.imputation import Imputer, KalmanLLT, LastValue, LinearInterpolation, as_2d

SEGMENT = 64
CONTEXT = 32


class AdaptiveFill(Imputer):
    """Chooses among the candidates per window and column on pseudo-gaps (see the module doc).

    ``counts`` tallies the choices of the last :meth:`impute_many` call.
    """

    name = "adaptive"

    def __init__(self, smoother: KalmanLLT, generator: Imputer | None = None, segment: int = SEGMENT,
                 context: int = CONTEXT) -> None:
        self.candidates: dict[str, Any] = {fill_select.KALMAN: smoother, fill_select.LINEAR: LinearInterpolation(),
                                           fill_select.LAST_VALUE: LastValue()}
        if generator is not None:
            self.candidates[fill_select.GENERATOR] = generator
        self.segment, self.context = segment, context
        self.counts: Counter[str] = Counter()

    def _impute(self, y: np.ndarray) -> np.ndarray:
        return self.impute_many([y])[0]

    def impute_many(self, series: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [as_2d(s) for s in series]
        ys = [a for a, _ in arrays]
        full = {name: imp.impute_many(ys) for name, imp in self.candidates.items()}
        windows, targets, where = [], [], []
        for i, y in enumerate(ys):
            missing = np.isnan(y)
            for a in range(0, len(y), self.segment):
                b = min(len(y), a + self.segment)
                if not missing[a:b].any():
                    continue
                lo, hi = max(0, a - self.context), min(len(y), b + self.context)
                t = np.zeros_like(missing[lo:hi])
                t[a - lo:b - lo] = missing[a:b]
                windows.append(y[lo:hi])
                targets.append(t)
                where.append((i, lo, hi))
        runners = {name: (lambda arrs, _owners, imp=imp: imp.impute_many(arrs)) for name, imp in self.candidates.items()}
        _, choices = fill_select.choose_many(windows, runners, targets)
        out = [y.copy() for y in ys]
        self.counts = Counter()
        for (i, lo, hi), w, t, cs in zip(where, windows, targets, choices):
            fills = {name: f[i][lo:hi] for name, f in full.items()}
            out[i][lo:hi] = np.where(t, fill_select.combine(w, cs, fills, t), out[i][lo:hi])
            self.counts.update(c.method for c in cs if c is not None)
        return [o[:, 0] if flat else o for o, (_, flat) in zip(out, arrays)]
