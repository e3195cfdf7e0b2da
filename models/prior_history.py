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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinstream.datasets.history import EntityHistory
from twinstream.models.domain import DomainBounds
from twinstream.models.forecast_prior import fit_forecast_prior, forecast_prior_arrays, forecast_prior_from_arrays
from twinstream.models.generic_features import GenericFeatures
from twinstream.models.prior import FleetPrior, PriorMismatchError, load_prior, sha256_file
from twinstream.models.prior_train import WEIGHTS_FILE, fit_heads, training_domain, write_weights
from twinstream.models.rls import ForecastPrior
from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema, PriorManifest
from twinstream.schemas.twin_spec import ForecastTask, KindSpec, LabelTask

FORECAST_PREFIX = "forecast."
MIN_LABELLED_ROWS = 50


class HistoryError(ValueError):
    """The history cannot train this kind's prior; the message says why."""


def trainable_tasks(kind: KindSpec) -> tuple[list[str], list[str]]:
    """(label targets, forecast task keys) of a kind that a prior can be trained for (anomaly tasks need none)."""
    labels = [t.target for t in kind.tasks if isinstance(t, LabelTask)]
    forecasts = [t.key for t in kind.tasks if isinstance(t, ForecastTask)]
    return labels, forecasts


def kind_features(kind: KindSpec) -> GenericFeatures:
    """The feature extractor of a kind (its declared metrics, default spans): what its prior's schema pins."""
    if not kind.metric_names:
        raise HistoryError(f"kind {kind.name!r} declares no metrics: a prior needs features")
    return GenericFeatures(kind.metric_names)


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


@dataclass
class KindPrior:
    """A verified kind prior: the label heads (if trained), forecast priors by task key, the training ranges."""

    manifest: PriorManifest
    label: FleetPrior | None = None
    forecasts: dict[str, ForecastPrior] = field(default_factory=dict)
    domain: DomainBounds | None = None


def load_kind_prior(directory: str | Path, kind: KindSpec | None = None, expected: FeatureSchema | None = None) -> KindPrior:
    """Load and verify a prior artifact for ``kind`` (weights sha256, the kind's feature schema, its task arrays).

    Raises :class:`~.prior.PriorMismatchError` naming what does not match.
    """
    directory = Path(directory).resolve()
    manifest = PriorManifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
    schema = expected or (kind_features(kind).schema() if kind is not None else None)
    if schema is not None:
        problems = manifest.feature_schema.differences(schema)
        if problems:
            raise PriorMismatchError(f"prior {directory}: feature schema mismatch: {'; '.join(problems)}")
    weights_path = directory / manifest.weights_file
    actual = sha256_file(weights_path)
    if actual != manifest.weights_sha256:
        raise PriorMismatchError(f"prior {directory}: weights sha256 mismatch: {manifest.weights_file} has {actual}, "
                                 f"manifest says {manifest.weights_sha256}")
    label = load_prior(directory, schema) if manifest.prior_inputs else None
    forecasts: dict[str, ForecastPrior] = {}
    with np.load(weights_path, allow_pickle=False) as npz:
        for key in manifest.forecast_tasks:
            prefix = f"{FORECAST_PREFIX}{key}."
            arrays = {n[len(prefix):]: npz[n] for n in npz.files if n.startswith(prefix)}
            try:
                forecasts[key] = forecast_prior_from_arrays(arrays, version=manifest.prior_version)
            except ValueError as exc:
                raise PriorMismatchError(f"prior {directory}: forecast task {key}: {exc}") from None
    if kind is not None:
        labels, _ = trainable_tasks(kind)
        if manifest.prior_inputs and manifest.target not in labels:
            raise PriorMismatchError(f"prior {directory}: predicts {manifest.target!r}, kind {kind.name!r} has no such label task")
    domain = DomainBounds.from_manifest(manifest.domain) if manifest.domain else None
    return KindPrior(manifest, label, forecasts, domain)
