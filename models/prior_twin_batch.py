"""A wave of prior twins observed together: each twin's feature state in turn, the rest as array operations.

Why: the fleet prior's two small networks cost about as much per call with one feature
vector as with hundreds (numpy's call overhead dominates at batch size 1), and so does
the domain check (two loops over every feature per event). The worker applies events in
waves with at most one event per twin (``TwinLearner.observe_many``), so what is
sequential per twin (its feature state, domain state and drift detector) stays per twin,
in the wave's order, and the domain scores, the masking and the prior's forward pass run
once per wave and prior. The result for each twin is what :meth:`PriorTwin.observe_one
<twinstream.models.prior_twin.PriorTwin.observe_one>` gives, up to float rounding of the
matrix products (the domain scores are the same integer ratios, exactly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from twinstream.models.base import Features, Observation

if TYPE_CHECKING:
    from twinstream.models.prior_domain import FeatureDomain
    from twinstream.models.prior_twin import PriorTwin

Waiting = tuple[int, "PriorTwin", list[float]]


def observe_prior_twins(items: Sequence[Observation]) -> list[Features | Exception]:
    """``observe_one`` of each (prior twin, input, synthetic names), results in order; a failure is its item's result.

    Twins without a prior, or with a shared online fleet model (which corrects the prior's
    estimate event by event), are observed one by one.
    """
    out: list[Features | Exception] = [ValueError("not observed")] * len(items)
    groups: dict[tuple[int, float], list[Waiting]] = {}  # same prior and fallback margin: the same domain
    for i, (learner, x, synthetic) in enumerate(items):
        twin: Any = learner
        try:
            if twin._prior is None or twin._fleet is not None:
                out[i] = twin.observe_one(x, synthetic)
                continue
            vector = twin._fx.update_vector(x, synthetic)  # synthetic fills stay out of the personal baseline
        except Exception as exc:  # noqa: BLE001 - reported per item
            out[i] = exc
            continue
        groups.setdefault((id(twin._prior), twin.fallback_margin), []).append((i, twin, vector))
    for group in groups.values():
        try:
            _observe_group(group, out)
        except Exception as exc:  # noqa: BLE001 - reported per item
            for i, *_ in group:
                out[i] = exc
    return out


def _outside(domain: FeatureDomain, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the share of checked features outside ``domain`` (``FeatureDomain.score``), and where they are."""
    values = matrix[:, domain.idx]
    outside = (values < np.asarray(domain.low)) | (values > np.asarray(domain.high))  # NaN: neither
    seen = (~np.isnan(values)).sum(axis=1)
    count = outside.sum(axis=1)
    return np.divide(count, seen, out=np.zeros(len(seen)), where=seen > 0), outside


def _observe_group(group: list[Waiting], out: list[Features | Exception]) -> None:
    first = group[0][1]
    matrix = np.array([vector for _, _, vector in group], dtype=np.float64)
    heard = matrix
    domain, fallback = first._domain, first._fallback_domain
    for _, twin, _ in group:
        twin._fallback = False
    if domain is not None and fallback is not None:
        score, where = _outside(domain, matrix)
        wide = score
        if fallback is not domain:  # a margin: the fallback counts features beyond the widened ranges
            wide, where = _outside(fallback, matrix)
        masked = []
        for k, (_, twin, _) in enumerate(group):
            twin._judge(float(score[k]), float(wide[k]))
            if twin._fallback:
                masked.append(k)
        if masked:
            heard = matrix.copy()
            cols = np.asarray(fallback.idx)
            for k in masked:
                heard[k, cols[where[k]]] = np.nan
    prior_head, twin_head = first._prior.predict_pairs(heard)
    for (i, twin, vector), a, b in zip(group, prior_head.tolist(), twin_head.tolist()):
        try:
            out[i] = twin._observe_base(dict(zip(twin._names, vector)), b if twin.personal else a)
        except Exception as exc:  # noqa: BLE001 - reported per item
            out[i] = exc
