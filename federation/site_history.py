"""A site's training rows from its own history table (``federation site --csv``), not only NASA's layout.

Why the same features as the NASA-layout site: a federated round trains the fleet
prior (the ``rul-mlp`` family), whose inputs are :class:`~twinstream.models.features.RulFeatures`
over its sensors; every site must produce exactly those features, whatever the
format of its files. So the table must hold those sensors as columns (a kind of the
site's ``twins.yaml``, when given, must declare them), one row per sample, an entity
column, a time column, and the label: a column (default: the kind's label target) or,
for a run-to-failure history, the samples left until each entity's last row.

A round for a declared kind (``federation round --spec --kind``) trains over that
kind's generic features instead (:func:`load_kind_site`): the server announces the
kind's feature schema, and a site computes it from the kind of its own ``twins.yaml``
over the kind's declared metrics, refusing a round whose schema is not its kind's.

Rows without a label still advance their entity's feature state (a twin sees them
too) but are not trained on. Missing readings stay missing (NaN), never zeros. What
may leave the site is unchanged: only the statistics of :mod:`twinstream.models.federated_data`
and model updates (:mod:`.client_app`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from twinstream.datasets.history import load_history
from twinstream.models.features import RUL_SENSORS, RulFeatures
from twinstream.models.federated import kind_layout
from twinstream.models.federated_data import CAP, SiteData
from twinstream.schemas.twin_spec import KindSpec, LabelTask, load_spec


class SiteHistoryError(ValueError):
    """The site's table cannot feed a federated round; the message says why."""


def site_kind(spec: str | Path, kind: str | None, rul_sensors: bool = True) -> KindSpec:
    """The kind named ``kind`` in ``spec`` (its only kind when None), checked against what a round trains.

    ``rul_sensors``: the round trains the C-MAPSS ``rul-mlp`` prior, so the kind must declare its sensors.
    """
    parsed = load_spec(spec)
    if kind is None:
        if len(parsed.kinds) != 1:
            raise SiteHistoryError(f"{spec} declares {len(parsed.kinds)} kinds: name one with --kind")
        chosen = parsed.kinds[0]
    else:
        found = [k for k in parsed.kinds if k.name == kind]
        if not found:
            raise SiteHistoryError(f"{spec} has no kind {kind!r}")
        chosen = found[0]
    missing = [s for s in RUL_SENSORS if s not in chosen.metric_names]
    if missing and rul_sensors:
        raise SiteHistoryError(f"kind {chosen.name!r} lacks the metrics {', '.join(missing)}: federated rounds train the "
                               f"rul-mlp prior, whose features are over {', '.join(RUL_SENSORS)}")
    if not any(isinstance(t, LabelTask) for t in chosen.tasks):
        raise SiteHistoryError(f"kind {chosen.name!r} has no label task: federated rounds train a label prior")
    return chosen


def load_history_site(
    csv: str | Path,
    entity_column: str,
    time_column: str,
    label_column: str | None = None,
    rul_from_end: bool = False,
    spec: str | Path | None = None,
    kind: str | None = None,
    cap: float = CAP,
    max_engines: int | None = None,
) -> SiteData:
    """A site's :class:`SiteData` from a CSV (or Parquet) table; see the module doc."""
    if spec:
        chosen = site_kind(spec, kind)
        if label_column is None and not rul_from_end:
            label_column = next(t.target for t in chosen.tasks if isinstance(t, LabelTask))
    if label_column is None and not rul_from_end:
        raise SiteHistoryError("no label: give --label-column, --rul-from-end, or --spec with a label task")
    history = load_history(Path(csv), entity_column, time_column, RUL_SENSORS, label_column, rul_from_end)
    entities = list(history)[: max_engines or None]
    xs: list[list[float]] = []
    ys: list[float] = []
    units: list[int] = []
    for i, entity in enumerate(entities, start=1):
        h = history[entity]
        fx = RulFeatures()
        assert h.labels is not None
        for row, y in zip(h.rows(), h.labels):
            vector = fx.update_vector(row)
            if np.isfinite(y):
                xs.append(vector)
                ys.append(float(y))
                units.append(i)
    if not ys:
        raise SiteHistoryError(f"{csv}: no labelled rows")
    if min(ys) < 0:
        raise SiteHistoryError(f"{csv}: labels below 0 (remaining useful life cannot be negative)")
    x, true = np.array(xs, dtype=float), np.array(ys, dtype=float)
    y = np.minimum(true, cap)
    digest = hashlib.sha256(np.ascontiguousarray(np.nan_to_num(x, nan=-1e30)).tobytes() + y.tobytes()).hexdigest()
    return SiteData(name="local", x=x, y=y, units=np.array(units), true_rul=true, digest=digest)


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.nan_to_num(x, nan=-1e30)).tobytes() + y.tobytes()).hexdigest()


def load_kind_site(
    csv: str | Path,
    entity_column: str,
    time_column: str,
    spec: str | Path,
    kind: str | None = None,
    label_column: str | None = None,
    rul_from_end: bool = False,
    cap: float = CAP,
    max_engines: int | None = None,
    expected_schema: str = "",
) -> SiteData:
    """A site's rows over its kind's generic features (a round for a declared kind); see the module doc.

    Features are computed as ``prior train --csv`` computes them
    (:func:`~twinstream.models.prior_history.history_features`); the label is
    ``label_column`` (default: the kind's label target) or the samples left
    (``rul_from_end``), capped at ``cap``. ``expected_schema``: the feature schema
    (JSON) the round trains over; another schema is a :class:`SiteHistoryError`.
    """
    from twinstream.models.prior_history import history_features

    chosen = site_kind(spec, kind, rul_sensors=False)
    try:
        layout = kind_layout(chosen, cap)
    except ValueError as exc:
        raise SiteHistoryError(str(exc)) from None
    if expected_schema and expected_schema != layout.schema:
        raise SiteHistoryError(f"the round trains over another feature schema than kind {chosen.name!r} of {spec} "
                               "(the sites' twins.yaml must declare the same metrics as the round's)")
    if label_column is None and not rul_from_end:
        label_column = next(t.target for t in chosen.tasks if isinstance(t, LabelTask))
    history = load_history(Path(csv), entity_column, time_column, chosen.metric_names, label_column, rul_from_end)
    history = dict(list(history.items())[: max_engines or None])
    x, labels, entities = history_features(chosen, history)
    labelled = np.isfinite(labels)
    if not labelled.any():
        raise SiteHistoryError(f"{csv}: no labelled rows")
    true = labels[labelled]
    if true.min() < 0:
        raise SiteHistoryError(f"{csv}: labels below 0 (a capped label prior predicts values in [0, cap])")
    x, y = x[labelled], np.minimum(true, cap)
    return SiteData(name="local", x=x, y=y, units=entities[labelled] + 1, true_rul=true, digest=_digest(x, y), layout=layout)
