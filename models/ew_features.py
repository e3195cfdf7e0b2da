"""The per-metric step shared by the twins' feature extractors: smoothed means and own baseline.

Why one function: the RUL features (:mod:`.features`) and a declared kind's generic
features (:mod:`.generic_features`) compute the same four numbers per metric (raw value,
fast exponential mean, deviation from the entity's own baseline, fast minus slow mean),
on the hot path, once per event. Keeping the loop in one place keeps them equal.

>>> fast, slow, bsum, bn, out = [float("nan")], [float("nan")], [0.0], [0], []
>>> advance_metrics(["t"], {"t": 10.0}, (), fast, slow, bsum, bn, 0.5, 0.1, 20, out)
>>> advance_metrics(["t"], {"t": 12.0}, (), fast, slow, bsum, bn, 0.5, 0.1, 20, out)
>>> [round(v, 2) for v in out[4:]]
[12.0, 11.0, 0.0, 0.8]
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

NAN = float("nan")
INF = math.inf


def advance_metrics(
    names: Sequence[str],
    values: Mapping[str, float | None],
    synthetic: Collection[str],
    fast: list[float],
    slow: list[float],
    bsum: list[float],
    bn: list[int],
    af: float,
    a_s: float,
    bn_max: int,
    out: list[float],
) -> None:
    """Advance each metric's state by one reading and append its four features to ``out``.

    A missing or non-finite reading leaves the means as they are (its raw feature is
    NaN). Metrics named in ``synthetic`` (gap fills) move the means but never enter the
    baseline, which keeps collecting measured readings until it has ``bn_max``.
    """
    for i, name in enumerate(names):
        v = values.get(name)
        if v is not None and -INF < v < INF:  # NaN fails the comparison too
            f = fast[i]
            if f != f:  # first reading: start the means at it
                fast[i] = slow[i] = float(v)
            else:
                fast[i] = f + af * (v - f)
                slow[i] += a_s * (v - slow[i])
            if bn[i] < bn_max and name not in synthetic:
                bsum[i] += v
                bn[i] += 1
            raw = float(v)
        else:
            raw = NAN
        f = fast[i]
        if bn[i]:
            out += (raw, f, f - bsum[i] / bn[i], f - slow[i])
        else:
            out += (raw, NAN, NAN, NAN)
