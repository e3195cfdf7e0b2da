"""Load and verify a kind's prior artifact: what a worker needs at start, without training code.

Why apart from :mod:`.prior_history`: training reads the user's history
(:mod:`twinstream.datasets`), and what runs twins must not load data sets. This module
knows the artifact's layout (manifest, sha256-pinned weights, label heads, forecast
priors under ``forecast.<metric>@<h>.``) and nothing about where rows come from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twinstream.models.domain import DomainBounds
from twinstream.models.forecast_prior import forecast_prior_from_arrays
from twinstream.models.generic_features import GenericFeatures
from twinstream.models.prior import FleetPrior, PriorMismatchError, load_prior, sha256_file
from twinstream.models.rls import ForecastPrior
from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema, PriorManifest
from twinstream.schemas.twin_spec import ForecastTask, KindSpec, LabelTask

FORECAST_PREFIX = "forecast."


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
