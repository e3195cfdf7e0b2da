"""A wave of prior twins observed together: each twin's feature state in turn, the fleet prior once for all.

Why: the fleet prior's two small networks cost about as much per call with one feature
vector as with hundreds (numpy's call overhead dominates at batch size 1), and the worker
applies events in waves with at most one event per twin (``TwinLearner.observe_many``).
So what is sequential per twin (its feature state, domain check and drift detector) stays
per twin, in the wave's order, and the prior's forward pass runs once per wave and prior.
The result for each twin is what :meth:`PriorTwin.observe_one
<twinstream.models.prior_twin.PriorTwin.observe_one>` gives, up to float rounding of the
matrix products.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twinstream.models.base import Features, Observation

if TYPE_CHECKING:
    from twinstream.models.prior_twin import PriorTwin


def observe_prior_twins(items: Sequence[Observation]) -> list[Features | Exception]:
    """``observe_one`` of each (prior twin, input, synthetic names), results in order; a failure is its item's result.

    Twins without a prior, or with a shared online fleet model (which corrects the prior's
    estimate event by event), are observed one by one.
    """
    out: list[Features | Exception] = [ValueError("not observed")] * len(items)
    waiting: dict[int, list[tuple[int, PriorTwin, list[float], list[float]]]] = {}
    for i, (learner, x, synthetic) in enumerate(items):
        twin: Any = learner
        try:
            if twin._prior is None or twin._fleet is not None:
                out[i] = twin.observe_one(x, synthetic)
                continue
            vector, heard = twin._observe_vector(x, synthetic)
        except Exception as exc:  # noqa: BLE001 - reported per item
            out[i] = exc
            continue
        waiting.setdefault(id(twin._prior), []).append((i, twin, vector, heard))
    for group in waiting.values():
        try:
            prior_head, twin_head = group[0][1]._prior.predict_pairs([heard for _, _, _, heard in group])
        except Exception as exc:  # noqa: BLE001 - reported per item
            for i, *_ in group:
                out[i] = exc
            continue
        for (i, twin, vector, _), a, b in zip(group, prior_head.tolist(), twin_head.tolist()):
            try:
                out[i] = twin._observe_base(dict(zip(twin._names, vector)), b if twin.personal else a)
            except Exception as exc:  # noqa: BLE001 - reported per item
                out[i] = exc
    return out
