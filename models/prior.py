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
>>> missing = [float("nan")] * prior.n_features
>>> 0.0 <= prior.predict_twin(missing, prior.predict_vector(missing)) <= prior.cap
True
>>> load_prior(bundled_prior_dir(), RulFeatures(fast_span=3).schema())
Traceback (most recent call last):
...
twinstream.models.prior.PriorMismatchError: prior ... feature schema mismatch: extractor params differ: fast_span
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import os
from importlib.resources import files
from pathlib import Path

import numpy as np

from twinstream.schemas.prior import MANIFEST_FILE, FeatureSchema, PriorManifest

HEADS = ("prior", "twin")
WEIGHT_KEYS = tuple(f"{head}_{k}" for head in HEADS for k in ("mean", "w1", "b1", "w2", "b2"))


class PriorMismatchError(ValueError):
    """A prior artifact does not match what the loader expects (weights digest or feature schema)."""


@functools.cache
def bundled_prior_dir() -> Path:
    """The default prior shipped with the package (trained by ``twinstream prior train`` on FD001)."""
    return Path(str(files("twinstream.models") / "priors" / "fd001"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Net:
    """One head: a one-hidden-layer network (an averaged ensemble), standardization folded in.

    A missing input is imputed with its training mean, so outputs stay finite.
    """

    def __init__(self, weights: dict[str, np.ndarray], prefix: str) -> None:
        self.mean = np.asarray(weights[f"{prefix}_mean"], dtype=np.float64)
        self.w1 = np.asarray(weights[f"{prefix}_w1"], dtype=np.float64)
        self.b1 = np.asarray(weights[f"{prefix}_b1"], dtype=np.float64)
        self.w2 = np.asarray(weights[f"{prefix}_w2"], dtype=np.float64)
        self.b2 = float(np.asarray(weights[f"{prefix}_b2"]).reshape(-1)[0])
        if self.w1.shape != (self.w2.shape[0], self.mean.shape[0]):
            raise PriorMismatchError(f"{prefix} head: weight shapes {self.w1.shape} and {self.w2.shape} "
                                     f"do not fit {self.mean.shape[0]} inputs")

    def __call__(self, x: np.ndarray) -> float:
        """Output for one input vector (modified in place: missing values imputed)."""
        missing = np.isnan(x)
        if missing.any():
            x[missing] = self.mean[missing]
        h = self.w1 @ x
        h += self.b1
        np.maximum(h, 0.0, out=h)
        return float(self.w2 @ h) + self.b2

    def many(self, x: np.ndarray) -> np.ndarray:
        x = np.array(x, dtype=np.float64)
        missing = np.isnan(x)
        x[missing] = np.broadcast_to(self.mean, x.shape)[missing]
        return np.maximum(x @ self.w1.T + self.b1, 0.0) @ self.w2 + self.b2


class FleetPrior:
    """A verified prior with two heads.

    * ``prior`` head: what the fleet knows from one event alone (age, current readings).
    * ``twin`` head: a correction of that estimate from a twin's personal state (its
      smoothed sensors, deviation from its own baseline, trend), trained on the prior
      head's out-of-fold predictions (stacking), so it learns what personal state adds.
    """

    def __init__(self, manifest: PriorManifest, weights: dict[str, np.ndarray], directory: Path) -> None:
        self.manifest = manifest
        self.directory = directory
        self.digest = manifest.weights_sha256
        self.names = list(manifest.feature_schema.names)
        self.n_features = len(self.names)
        inputs = manifest.prior_inputs or self.names
        unknown = [n for n in inputs if n not in self.names]
        if unknown:
            raise PriorMismatchError(f"prior {directory}: prior inputs {unknown} are not in the feature schema")
        self.prior_cols = np.array([self.names.index(n) for n in inputs], dtype=np.intp)
        self.prior_net = Net(weights, "prior")
        self.twin_net = Net(weights, "twin")
        if self.prior_net.mean.shape[0] != len(self.prior_cols) or self.twin_net.mean.shape[0] != self.n_features + 1:
            raise PriorMismatchError(f"prior {directory}: weights do not fit {len(self.prior_cols)} prior inputs "
                                     f"and {self.n_features} features")
        self.cap = float(manifest.target_cap) if manifest.target_cap is not None else float("inf")
        self._edges = list(manifest.calibration.get("edges", []))
        self._half = {head: list(manifest.calibration.get(f"{head}_halfwidth", [])) for head in HEADS}

    def _clip(self, y: float) -> float:
        return min(max(y, 0.0), self.cap)

    def predict_vector(self, values: list[float]) -> float:
        """The prior head's prediction for one feature vector (in ``names`` order; NaN = missing)."""
        return self._clip(self.prior_net(np.array(values, dtype=np.float64)[self.prior_cols]))

    def predict_twin(self, values: list[float], prior_value: float) -> float:
        """Prior value corrected by the twin head from the full (personal) feature vector."""
        x = np.array(values + [prior_value], dtype=np.float64)
        return self._clip(prior_value + self.twin_net(x))

    def predict_pair(self, values: list[float]) -> tuple[float, float]:
        """(prior head, prior + twin head) for one vector, building the input array once."""
        x = np.array(values + [0.0], dtype=np.float64)
        a = self._clip(self.prior_net(x[self.prior_cols]))
        x[-1] = a
        return a, self._clip(a + self.twin_net(x))

    def predict_pairs(self, matrix: np.ndarray | list[list[float]]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`predict_pair` for each row of feature vectors at once: (prior head, prior + twin head) arrays.

        Why: the worker evaluates the prior for a wave of events (one per twin) in one
        pair of matrix products instead of one small product per event; equal to
        ``predict_pair`` row by row up to float rounding.
        """
        x = np.array(matrix, dtype=np.float64)
        a = np.clip(self.prior_net.many(x[:, self.prior_cols]), 0.0, self.cap)
        return a, np.clip(a + self.twin_net.many(np.column_stack([x, a])), 0.0, self.cap)

    def predict_many(self, matrix: np.ndarray, head: str = "twin") -> np.ndarray:
        """Predictions for rows of features (training reports and tests)."""
        x = np.asarray(matrix, dtype=np.float64)
        a = np.clip(self.prior_net.many(x[:, self.prior_cols]), 0.0, self.cap)
        if head == "prior":
            return a
        return np.clip(a + self.twin_net.many(np.column_stack([x, a])), 0.0, self.cap)

    def halfwidth(self, predicted: float, head: str = "twin") -> float:
        """Split-conformal interval half-width for a prediction of this size (from the manifest)."""
        half = self._half.get(head) or []
        if not half:
            return float("nan")
        return half[min(bisect.bisect_right(self._edges, predicted), len(half) - 1)]


_CACHE: dict[tuple[str, str], FleetPrior] = {}
# Directory as given -> (its manifest's stat, the verified prior, schemas already checked against it):
# every twin created or reloaded asks for its prior, so the manifest is read and hashed again only when it changed.
_SEEN: dict[str, tuple[tuple[int, int, int], FleetPrior, set[str]]] = {}


def load_prior(directory: str | Path, expected_schema: FeatureSchema | None = None, cache: bool = True) -> FleetPrior:
    """Load and verify the prior in ``directory`` (cached per process once verified, unless ``cache`` is False).

    Raises :class:`PriorMismatchError` when the weights' sha256 differs from the manifest
    or the feature schema differs from ``expected_schema``; ``FileNotFoundError`` when
    the manifest or weights are absent.
    """
    if cache:
        seen = _SEEN.get(str(directory))
        if seen is not None:
            stat, prior, checked = seen
            try:
                now = os.stat(Path(directory) / MANIFEST_FILE)
            except OSError:
                now = None
            if now is not None and (now.st_mtime_ns, now.st_size, now.st_ino) == stat:
                if expected_schema is None:
                    return prior
                schema_key = expected_schema.model_dump_json()
                if schema_key in checked:
                    return prior
    given = str(directory)
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
        prior = FleetPrior(manifest, weights, directory)
        if cache:
            _CACHE[key] = prior
    if expected_schema is not None:
        problems = prior.manifest.feature_schema.differences(expected_schema)
        if problems:
            raise PriorMismatchError(f"prior {directory}: feature schema mismatch: {'; '.join(problems)}")
    if cache:
        st = os.stat(manifest_path)
        stat = (st.st_mtime_ns, st.st_size, st.st_ino)
        seen = _SEEN.get(given)
        checked = seen[2] if seen is not None and seen[0] == stat and seen[1] is prior else set()
        if expected_schema is not None:
            checked.add(expected_schema.model_dump_json())
        _SEEN[given] = (stat, prior, checked)
    return prior
