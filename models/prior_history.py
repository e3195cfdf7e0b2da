"""A prior for any declared kind, trained on the user's own history (``prior train --spec --kind --csv``).

Why the same artifact as the C-MAPSS prior: twins, the registry and federation already
verify and ship that artifact (manifest + weights, sha256, feature schema). What
changes is where rows and labels come from and which features pin it:

- features are the kind's generic features (:class:`~.generic_features.GenericFeatures`
  over its declared metrics), so the manifest's schema names the kind's metrics and a
  prior of one kind is refused for another;
- a ``label`` task trains the two heads of :mod:`.prior_train` (prior head on one
  event alone, twin head on the personal state) on a label column of the history;
- a ``forecast`` task needs no labels: the series is its own label
  (:func:`~.forecast_prior.fit_forecast_prior`), and its arrays are stored in the same
  weights file under ``forecast.<metric>@<h>.``;
- the manifest records the ranges of the training features (``domain``), so a twin
  can tell when an input is unlike anything the prior was trained on.

>>> from twinstream.schemas.twin_spec import parse_spec
>>> kind = parse_spec("kinds: [{name: pump, metrics: [{name: flow}], tasks: [{type: forecast, metric: flow, horizon: 2}]}]").kinds[0]
>>> trainable_tasks(kind)
([], ['flow@2'])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from twinstream.datasets.history import EntityHistory
from twinstream.models.forecast_prior import fit_forecast_prior, forecast_prior_arrays
from twinstream.models.kind_prior import (  # noqa: F401 (re-exported for training entry points)
    FORECAST_PREFIX,
    HistoryError,
    KindPrior,
    kind_features,
    load_kind_prior,
    trainable_tasks,
)
from twinstream.models.prior import sha256_file
from twinstream.models.prior_train import WEIGHTS_FILE, fit_heads, training_domain, write_weights
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest
from twinstream.schemas.twin_spec import ForecastTask, KindSpec

MIN_LABELLED_ROWS = 50


def history_features(kind: KindSpec, history: Mapping[str, EntityHistory]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features of every row, label per row or NaN, entity index per row), each entity replayed in time order."""
    xs: list[list[float]] = []
    ys: list[float] = []
    ents: list[int] = []
    for e, (_, h) in enumerate(history.items()):
        fx = kind_features(kind)
        labels = h.labels if h.labels is not None else np.full(len(h), np.nan)
        for row, y in zip(h.rows(), labels):
            xs.append(fx.update_vector(row))
            ys.append(float(y))
            ents.append(e)
    return np.array(xs, dtype=float), np.array(ys, dtype=float), np.array(ents)


def _edges(y: np.ndarray) -> tuple[float, ...]:
    """Calibration bins of predicted values: the label's sextiles (the C-MAPSS prior uses fixed RUL edges)."""
    return tuple(sorted({float(v) for v in np.quantile(y, [i / 7 for i in range(1, 7)])}))


def train_history_prior(
    out: Path,
    kind: KindSpec,
    history: Mapping[str, EntityHistory],
    source: Path | None = None,
    *,
    family: str | None = None,
    version: str = "1",
    cap: float | None = None,
    folds: int = 5,
    hidden: int = 128,
    prior_hidden: int = 64,
    epochs: int = 100,
    lr: float = 3e-3,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[str], None] | None = None,
) -> PriorManifest:
    """Train every trainable task of ``kind`` on ``history`` and write a verified artifact to ``out``.

    ``history`` maps entity -> its rows (``datasets.history.load_history``); labels are
    needed only when the kind has a ``label`` task. ``source`` (the history file) is
    recorded with its sha256 in the manifest's ``training_data``.
    """
    label_targets, forecast_keys = trainable_tasks(kind)
    if not label_targets and not forecast_keys:
        raise HistoryError(f"kind {kind.name!r} has no label or forecast task: nothing to train a prior for")
    if len(label_targets) > 1:
        raise HistoryError(f"kind {kind.name!r} has {len(label_targets)} label tasks ({', '.join(label_targets)}): "
                           "a prior artifact predicts one label; declare one label task per kind")
    if not history:
        raise HistoryError("the history has no entities")
    fx = kind_features(kind)
    names = fx.schema().names
    if progress:
        progress("features")
    x, y, ents = history_features(kind, history)
    arrays: dict[str, np.ndarray] = {}
    metrics: dict[str, float] = {"train_rows": float(len(x)), "train_entities": float(len(history))}
    calibration: dict[str, list[float]] = {}
    training: dict[str, float | int | str] = {"kind": kind.name, "seed": seed}
    prior_inputs: list[str] = []
    target = forecast_keys[0] if forecast_keys else ""
    if label_targets:
        target = label_targets[0]
        labelled = np.isfinite(y)
        if labelled.sum() < MIN_LABELLED_ROWS:
            raise HistoryError(f"label task {target!r}: {int(labelled.sum())} labelled rows, need at least {MIN_LABELLED_ROWS} "
                               "(give --label-column, or --rul-from-end for a run-to-failure history)")
        if (y[labelled] < 0).any():
            raise HistoryError(f"label task {target!r}: labels below 0; the prior's heads predict values in [0, cap]")
        n_ent = len(np.unique(ents[labelled]))
        if n_ent < folds:
            raise HistoryError(f"label task {target!r}: {n_ent} entities have labels; the {folds} folds split by entity "
                               f"need at least {folds} (or pass fewer --folds)")
        import torch

        torch.set_num_threads(threads)
        ya = np.minimum(y[labelled], cap) if cap is not None else y[labelled]
        prior_inputs = ["age"] + [f"{m}_raw" for m in fx.metrics]
        weights, calibration, oof_a, oof_b = fit_heads(
            x[labelled], ya, ents[labelled], names, prior_inputs, cap=cap, folds=folds, hidden=hidden,
            prior_hidden=prior_hidden, epochs=epochs, lr=lr, seed=seed, edges=_edges(ya), progress=progress)
        arrays.update(weights)
        metrics["labelled_rows"] = float(labelled.sum())
        for head, pred in (("prior", oof_a), ("twin", oof_b)):
            metrics[f"{head}_oof_rmse"] = float(np.sqrt(np.mean((ya - pred) ** 2)))
        training.update(folds=folds, hidden=hidden, prior_hidden=prior_hidden, epochs=epochs, lr=lr, torch=torch.__version__)
    for task in (t for t in kind.tasks if isinstance(t, ForecastTask)):
        if progress:
            progress(f"forecast {task.key}")
        series = [h.metrics[task.metric] for h in history.values()]
        try:
            prior = fit_forecast_prior(series, task.horizon, max_season=task.max_season, season=task.season)
        except ValueError as exc:
            raise HistoryError(f"forecast task {task.key}: {exc}") from None
        arrays.update({f"{FORECAST_PREFIX}{task.key}.{k}": v for k, v in forecast_prior_arrays(prior).items()})
        metrics[f"{task.key}_train_mae_scaled"] = prior.train_mae_scaled
        metrics[f"{task.key}_train_persistence_mae_scaled"] = prior.train_persistence_mae_scaled
        if prior.season:
            training[f"{task.key}_season"] = prior.season
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_FILE
    write_weights(weights_path, arrays)
    manifest = PriorManifest(
        family=family or kind.name, version=version, feature_schema=fx.schema(), prior_inputs=prior_inputs,
        training_data={source.name: sha256_file(source)} if source is not None else {},
        weights_file=WEIGHTS_FILE, weights_sha256=sha256_file(weights_path), target=target, target_cap=cap,
        metrics=metrics, calibration=calibration, training=training,
        domain=training_domain(x, names).to_manifest(), forecast_tasks=forecast_keys,
    )
    (out / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    load_kind_prior(out, kind)  # refuse to hand back an artifact that does not load
    return manifest
