"""Loading a fleet prior artifact: verify it, then predict with plain numpy.

Why numpy at inference although the prior is trained with torch: a worker holds
thousands of twins and calls the prior once per event; a one-hidden-layer network is a
single matrix-vector product, a few microseconds in numpy, while importing torch would
add seconds and hundreds of MB to every worker. Why checks: the artifact's weights
sha256 and feature schema must match, or the loader refuses it, naming the mismatch.

Loaded priors are cached per process by directory and manifest digest: every twin
shares one copy, and a twin's pickled state holds only the directory and digest.

>>> from twinstream.models.features import RulFeatures
>>> prior = load_prior(bundled_prior_dir(), RulFeatures().schema())
>>> prior.manifest.family, prior.manifest.target
('rul-mlp', 'rul')
>>> 0.0 <= prior.predict_vector([float("nan")] * prior.n_features) <= prior.cap
True
>>> load_prior(bundled_prior_dir(), RulFeatures(fast_span=3).schema())
Traceback (most recent call last):
...
twinstream.models.prior.PriorMismatchError: prior ... feature schema mismatch: extractor params differ: fast_span
"""

from __future__ import annotations

import bisect
import hashlib
from importlib.resources import files
from pathlib import Path

import numpy as np

from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema, PriorManifest

WEIGHT_KEYS = ("mean", "w1", "b1", "w2", "b2")


class PriorMismatchError(ValueError):
    """A prior artifact does not match what the loader expects (weights digest or feature schema)."""


def bundled_prior_dir() -> Path:
    """The default prior shipped with the package (trained by ``twinstream prior train`` on FD001)."""
    return Path(str(files("twinstream.models") / "priors" / "fd001"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class FleetPrior:
    """A verified prior: a one-hidden-layer network (an averaged ensemble) on standardized features.

    The standardization is folded into the first layer; a missing feature is imputed with
    its training mean (its standardized value 0), so predictions stay finite.
    """

    def __init__(self, manifest: PriorManifest, weights: dict[str, np.ndarray], directory: Path) -> None:
        self.manifest = manifest
        self.directory = directory
        self.digest = manifest.weights_sha256
        self.mean = np.asarray(weights["mean"], dtype=np.float64)
        self.w1 = np.asarray(weights["w1"], dtype=np.float64)
        self.b1 = np.asarray(weights["b1"], dtype=np.float64)
        self.w2 = np.asarray(weights["w2"], dtype=np.float64)
        self.b2 = float(np.asarray(weights["b2"]).reshape(-1)[0])
        self.n_features = int(self.mean.shape[0])
        self.names = list(manifest.feature_schema.names)
        self.cap = float(manifest.target_cap) if manifest.target_cap is not None else float("inf")
        edges = manifest.calibration.get("edges", [])
        self._edges = list(edges)
        self._half = list(manifest.calibration.get("halfwidth", []))
        if self.w1.shape != (self.w2.shape[0], self.n_features):
            raise PriorMismatchError(f"prior {directory}: weight shapes {self.w1.shape} and {self.w2.shape} do not fit {self.n_features} features")

    def predict_vector(self, values: list[float]) -> float:
        """Prediction for one feature vector (in ``names`` order; NaN = missing)."""
        x = np.array(values, dtype=np.float64)
        missing = x != x
        if missing.any():
            x[missing] = self.mean[missing]
        h = self.w1 @ x
        h += self.b1
        np.maximum(h, 0.0, out=h)
        y = float(self.w2 @ h) + self.b2
        return min(max(y, 0.0), self.cap)

    def predict_many(self, matrix: np.ndarray) -> np.ndarray:
        """Predictions for rows of features (used by training reports and tests)."""
        x = np.array(matrix, dtype=np.float64)
        missing = np.isnan(x)
        x[missing] = np.broadcast_to(self.mean, x.shape)[missing]
        h = np.maximum(x @ self.w1.T + self.b1, 0.0)
        return np.clip(h @ self.w2 + self.b2, 0.0, self.cap)

    def halfwidth(self, predicted: float) -> float:
        """Split-conformal interval half-width for a prediction of this size (from the manifest)."""
        if not self._half:
            return float("nan")
        return self._half[min(bisect.bisect_right(self._edges, predicted), len(self._half) - 1)]


_CACHE: dict[tuple[str, str], FleetPrior] = {}


def load_prior(directory: str | Path, expected_schema: FeatureSchema | None = None) -> FleetPrior:
    """Load and verify the prior in ``directory`` (cached per process once verified).

    Raises :class:`PriorMismatchError` when the weights' sha256 differs from the manifest
    or the feature schema differs from ``expected_schema``; ``FileNotFoundError`` when
    the manifest or weights are absent.
    """
    directory = Path(directory).resolve()
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"prior {directory}: no {MANIFEST_FILE}")
    raw = manifest_path.read_bytes()
    key = (str(directory), hashlib.sha256(raw).hexdigest())
    prior = _CACHE.get(key)
    if prior is None:
        manifest = PriorManifest.model_validate_json(raw)
        weights_path = directory / manifest.weights_file
        if not weights_path.is_file():
            raise FileNotFoundError(f"prior {directory}: weights file {manifest.weights_file} is missing")
        actual = sha256_file(weights_path)
        if actual != manifest.weights_sha256:
            raise PriorMismatchError(
                f"prior {directory}: weights sha256 mismatch: {manifest.weights_file} has {actual}, manifest says {manifest.weights_sha256}"
            )
        with np.load(weights_path, allow_pickle=False) as npz:
            missing = [k for k in WEIGHT_KEYS if k not in npz.files]
            if missing:
                raise PriorMismatchError(f"prior {directory}: weights file lacks arrays {missing}")
            weights = {k: npz[k] for k in WEIGHT_KEYS}
        if len(manifest.feature_schema.names) != weights["mean"].shape[0]:
            raise PriorMismatchError(f"prior {directory}: manifest lists {len(manifest.feature_schema.names)} features, weights take {weights['mean'].shape[0]}")
        prior = FleetPrior(manifest, weights, directory)
        _CACHE[key] = prior
    if expected_schema is not None:
        problems = prior.manifest.feature_schema.differences(expected_schema)
        if problems:
            raise PriorMismatchError(f"prior {directory}: feature schema mismatch: {'; '.join(problems)}")
    return prior
