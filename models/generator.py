"""The gap-filling generator: a verified artifact that samples plausible fills for sensor windows.

What it is (family ``llt-diffusion``, Diffusion-TS-style decomposition): per window,
a Kalman local-linear-trend smoother fitted on the *observed* values gives each
sensor's level (the entity's own trend, carried across and past the gap; the initial
slope has a prior fitted on the training fleet, ``kalman_slope_sd0``, so a window with
only a few observed samples does not extrapolate a slope from two noisy points); a small
conditional denoising diffusion model (:mod:`twinstream.models.diffusion`) generates
the residual around that level at the missing positions, conditioned on the observed
residuals, the mask, and the level itself. Samples therefore carry sensor noise like
measured data (a deterministic fill is trivially detectable because it removes the
noise); the point estimate is the mean the samples converge to. An artifact without
diffusion weights samples Gaussian residuals with the Kalman variances, and so does every
artifact where the network would be outside its training domain (:func:`network_rows`:
fewer than 30 observed rows, or more than 10 samples from an observed one).

Units: :meth:`Generator.impute` and :meth:`Generator.sample` take and return raw sensor
units, columns in ``generator.sensors`` order; ``*_z`` variants work on windows already
z-scored with ``generator.mean`` / ``generator.std``. Gaps may be interior, open at the
end of the window (a forecast), or whole sensors; observed values are never changed.

Why a gate: :func:`load_generator` verifies the weights' sha256 and refuses an artifact
whose recorded held-out metrics fail the configured :class:`GateThresholds` (raising
:class:`GeneratorRejected` naming the metric); :func:`choose_imputer` then falls back to
the Kalman baseline, which is always available.

>>> g = load_generator(gate=GateThresholds(max_mae_ratio=None, max_discriminative=None))  # the gate is tested elsewhere
>>> g.version.startswith("llt-")
True
>>> y = np.tile(np.array(g.mean), (30, 1))
>>> y[10:20] = np.nan
>>> y[25:, 0] = np.nan
>>> filled = g.impute(y)
>>> bool(np.isfinite(filled).all()), bool((filled[:10] == y[:10]).all())
(True, True)
>>> g.sample(y, 3, np.random.default_rng(0)).shape == (3, 30, len(g.sensors))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.models.imputation import Imputer, KalmanLLT, as_2d
from twinstream.models.prior import sha256_file  # one digest helper for every artifact
from twinstream.schemas.generator import GENERATOR_MANIFEST_FILE, GateThresholds, GeneratorManifest

KALMAN_KEYS = ("kalman_q_level", "kalman_q_slope", "kalman_r", "kalman_slope_sd0")
# optional in the weights file: artifacts written before the slope prior existed lack it and load with a diffuse slope
OPTIONAL_KALMAN_KEYS = ("kalman_slope_sd0",)
NET_PREFIX = "net."
POINT_DRAWS = 8  # x0-predictions averaged for the point estimate
CONTEXT = 16  # samples either side the residual network sees (receptive field 1 + 2 * (1 + 2 + 4 + 8))
# The network's domain, measured by benchmarks/generator_forecast_calibration.py on the validation engines: with
# >= 30 observed rows its residuals over the first 10 forecast steps match the Kalman predictive spread (sd 0.94,
# bias as for calibrated noise); with fewer rows, or further out, they spread and drift (sd 1.2-2.5).
MIN_OBSERVED_ROWS = 30
MAX_OPEN = 10


def network_rows(window: np.ndarray) -> np.ndarray:
    """Rows whose residual the diffusion network may generate: inside its training domain.

    Why: the network was trained on windows with history. Asked for more (a cold start
    with a handful of samples, a long forecast) its residuals spread wider than sensor
    noise and drift (measured on the validation engines: 2.4x the predictive spread 21-30
    steps out with 20 samples seen). There the generator keeps the Kalman predictive distribution (a
    Gaussian residual with the level's variance plus the noise variance) instead, which is
    what the level model can honestly say.

    >>> w = np.zeros((40, 2)); w[10:] = np.nan
    >>> bool(network_rows(w).any())  # 10 observed rows: too little context
    False
    >>> w = np.zeros((80, 2)); w[40:] = np.nan
    >>> int(network_rows(w).sum())  # 40 observed + the first 10 forecast rows
    50
    """
    observed = ~np.isnan(window).all(axis=1)
    rows = np.flatnonzero(observed)
    if rows.size < MIN_OBSERVED_ROWS:
        return np.zeros(len(window), dtype=bool)
    at = np.arange(len(window))
    nearest = np.abs(at[:, None] - rows[None, :]).min(axis=1)
    return nearest <= MAX_OPEN


class GeneratorRejected(ValueError):
    """A generator artifact may not be used: tampered or mismatched weights, or failing gate metrics."""


def bundled_generator_dir() -> Path:
    """The generator shipped with the package (``twinstream synth train`` on FD001 train engines)."""
    return Path(str(files("twinstream.models") / "generators" / "fd001"))



class Generator(Imputer):
    """Kalman trend + generated residuals; see the module docstring."""

    name = "generator"

    def __init__(self, manifest: GeneratorManifest, kalman: KalmanLLT, denoiser: Any | None = None,
                 directory: Path | None = None) -> None:
        self.manifest = manifest
        self.kalman = kalman
        self.denoiser = denoiser  # twinstream.models.diffusion.Denoiser or None
        self.directory = directory
        self.sensors = list(manifest.sensors)
        self.mean = np.asarray(manifest.mean, dtype=float)
        self.std = np.asarray(manifest.std, dtype=float)
        self.version = manifest.generator_version

    # --- z-scored windows ------------------------------------------------------------
    def _check(self, z: np.ndarray) -> np.ndarray:
        arr, _ = as_2d(z)
        if arr.shape[1] != len(self.sensors):
            raise ValueError(f"window has {arr.shape[1]} columns, generator {self.version} expects "
                             f"{len(self.sensors)} ({', '.join(self.sensors)})")
        return arr

    def trend_many(self, windows: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Kalman level and its variance per window (z units), fitted on the observed values only."""
        return self.trend_many_with(self.kalman, windows)

    @staticmethod
    def trend_many_with(kalman: KalmanLLT, windows: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:meth:`trend_many` with given Kalman parameters (training builds its examples with it)."""
        levels, variances = kalman._run(windows)
        out_l, out_v = [], []
        for w, level, var in zip(windows, levels, variances):
            empty = np.isnan(w).all(axis=0)  # a column never observed in the window: the training mean (0)
            out_l.append(np.where(empty[None, :], 0.0, level))
            out_v.append(np.where(empty[None, :], 1.0, var))
        return out_l, out_v

    def _predictive_variance(self, variances: list[np.ndarray]) -> list[np.ndarray]:
        """Per cell, the variance of a hidden measurement around the level: level variance + noise variance ``r``."""
        r = np.broadcast_to(self.kalman.r, (len(self.sensors),))
        return [np.maximum(v, 0.0) + r for v in variances]

    def sample_many_z(self, windows: list[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
        """``n`` samples ``(n, T, D)`` of each z-scored window, observed values unchanged."""
        windows = [self._check(w) for w in windows]
        levels, variances = self.trend_many(windows)
        spread = [np.sqrt(v) for v in self._predictive_variance(variances)]
        if self.denoiser is None:
            res = [rng.normal(size=(n, *w.shape)) * sd for w, sd in zip(windows, spread)]
        else:
            res = self._cropped(self.denoiser.sample, windows, levels, variances, n, rng)
            for i, (w, sd) in enumerate(zip(windows, spread)):
                trusted = network_rows(w)
                if not trusted.all():  # outside the network's domain: the Kalman predictive residual
                    res[i] = np.where(trusted[None, :, None], res[i], rng.normal(size=(n, *w.shape)) * sd)
        return [np.where(np.isnan(w)[None], level[None] + e, w[None]) for w, level, e in zip(windows, levels, res)]

    def point_many_z(self, windows: list[np.ndarray], rng: np.random.Generator | None = None
                     ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Point estimate of each z-scored window (level + the residual's conditional mean) and, per
        cell, the predictive variance of the hidden measurement (level variance + ``r``), from one trend run."""
        windows = [self._check(w) for w in windows]
        levels, variances = self.trend_many(windows)
        if self.denoiser is None:
            means = [np.zeros_like(w) for w in windows]
        else:
            means = self._cropped(self.denoiser.mean, windows, levels, variances, POINT_DRAWS, rng or np.random.default_rng(0))
            means = [np.where(network_rows(w)[:, None], m, 0.0) for w, m in zip(windows, means)]
        points = [np.where(np.isnan(w), level + m, w) for w, level, m in zip(windows, levels, means)]
        return points, self._predictive_variance(variances)

    def impute_many_z(self, windows: list[np.ndarray], rng: np.random.Generator | None = None) -> list[np.ndarray]:
        """Point estimate of each z-scored window: level + the residual's conditional mean."""
        return self.point_many_z(windows, rng)[0]

    @staticmethod
    def _cropped(run: Any, windows: list[np.ndarray], levels: list[np.ndarray], variances: list[np.ndarray], n: int,
                 rng: np.random.Generator) -> list[np.ndarray]:
        """``run`` on the part of each window that can influence its missing rows, pasted back (0 elsewhere).

        The network sees ``CONTEXT`` samples either side of a position, so cropping to the
        missing rows plus that context gives the same result at a fraction of the cost.
        """
        spans = []
        for w in windows:
            rows = np.flatnonzero(np.isnan(w).any(axis=1))
            spans.append((0, 0) if rows.size == 0 else (max(0, rows[0] - CONTEXT), min(len(w), rows[-1] + CONTEXT + 1)))
        keep = [i for i, (a, b) in enumerate(spans) if b > a]
        got = run([windows[i][slice(*spans[i])] for i in keep], [levels[i][slice(*spans[i])] for i in keep],
                  [variances[i][slice(*spans[i])] for i in keep], n, rng) if keep else []
        out = []
        for w in windows:
            out.append(np.zeros(w.shape) if run.__name__ == "mean" else np.zeros((n, *w.shape)))
        for i, r in zip(keep, got):
            a, b = spans[i]
            if r.ndim == 2:
                out[i][a:b] = r
            else:
                out[i][:, a:b] = r
        return out

    # --- raw units (the Imputer interface) ---------------------------------------------
    def to_z(self, y: np.ndarray) -> np.ndarray:
        return (self._check(y) - self.mean) / self.std

    def from_z(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean

    def _impute(self, y: np.ndarray) -> np.ndarray:
        return self.from_z(self.impute_many_z([self.to_z(y)])[0])

    def impute_many(self, series: list[np.ndarray]) -> list[np.ndarray]:
        arrays = [as_2d(s)[0] for s in series]
        out = self.impute_many_z([self.to_z(a) for a in arrays])
        return [np.where(np.isnan(a), self.from_z(o), a) for a, o in zip(arrays, out)]

    def sample(self, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` plausible fills of window ``y`` (raw units), ``(n, T, D)``; observed values unchanged."""
        arr = self._check(y)
        z = self.sample_many_z([self.to_z(arr)], n, rng)[0]
        return np.where(np.isnan(arr)[None], self.from_z(z), arr[None])


def _read(directory: Path) -> tuple[GeneratorManifest, dict[str, np.ndarray]]:
    manifest_path = directory / GENERATOR_MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"generator {directory}: no {GENERATOR_MANIFEST_FILE}")
    try:
        manifest = GeneratorManifest.model_validate_json(manifest_path.read_bytes())
    except ValueError as exc:
        raise GeneratorRejected(f"generator {directory}: manifest does not match the schema: {exc}") from None
    weights_path = directory / manifest.weights_file
    if not weights_path.is_file():
        raise FileNotFoundError(f"generator {directory}: weights file {manifest.weights_file} is missing")
    actual = sha256_file(weights_path)
    if actual != manifest.weights_sha256:
        raise GeneratorRejected(f"generator {directory}: weights sha256 mismatch: {manifest.weights_file} has {actual}, "
                                f"manifest says {manifest.weights_sha256}")
    with np.load(weights_path, allow_pickle=False) as npz:
        weights = {k: npz[k] for k in npz.files}
    missing = [k for k in KALMAN_KEYS if k not in weights and k not in OPTIONAL_KALMAN_KEYS]
    if missing:
        raise GeneratorRejected(f"generator {directory}: weights file lacks arrays {missing}")
    d = len(manifest.sensors)
    if any(weights[k].shape != (d,) for k in KALMAN_KEYS if k in weights):
        raise GeneratorRejected(f"generator {directory}: Kalman parameters do not fit {d} sensors")
    return manifest, weights


def load_generator(directory: Path | str | None = None, gate: GateThresholds | None = None,
                   sensors: list[str] | None = None) -> Generator:
    """Load, verify and gate the generator in ``directory`` (``None``: the bundled one).

    ``gate`` defaults to :class:`~twinstream.schemas.generator.GateThresholds`' own
    defaults; services pass the configured one (``Settings.synth_gate()``, from
    ``TWINSTREAM_SYNTH_GATE_*``), because this module reads no configuration. With
    ``sensors``, the artifact must fill exactly those columns in that order. Raises
    :class:`GeneratorRejected` (sha256, schema, sensors, or a failing gate metric,
    named) or ``FileNotFoundError``.
    """
    gate = GateThresholds() if gate is None else gate
    directory = Path(bundled_generator_dir() if directory is None else directory)
    manifest, weights = _read(directory)
    if sensors is not None and list(sensors) != manifest.sensors:
        raise GeneratorRejected(f"generator {directory}: sensors {manifest.sensors} are not the expected {list(sensors)}")
    failures = gate.failures(manifest.gate)
    if failures:
        raise GeneratorRejected(f"generator {manifest.generator_version} ({directory}) fails the quality gate: {'; '.join(failures)}")
    kalman = KalmanLLT(weights["kalman_q_level"], weights["kalman_q_slope"], weights["kalman_r"],
                       slope_sd0=weights.get("kalman_slope_sd0"))  # absent (older artifact): diffuse slope
    denoiser = None
    net = {k[len(NET_PREFIX):]: v for k, v in weights.items() if k.startswith(NET_PREFIX)}
    if net:
        from twinstream.models.diffusion import Denoiser

        try:
            denoiser = Denoiser.from_arrays(net, manifest)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise GeneratorRejected(f"generator {directory}: diffusion weights do not load: {exc}") from None
    return Generator(manifest, kalman, denoiser, directory)


class WindowKalman(Imputer):
    """The fallback: Kalman local-linear-trend smoother on a window z-scored by its own statistics.

    Scale-free, so it works on raw units of any sensor without an artifact.
    """

    name = "kalman"
    version = "kalman-llt-baseline"

    def __init__(self, kalman: KalmanLLT | None = None) -> None:
        self.kalman = kalman or KalmanLLT()

    def _impute(self, y: np.ndarray) -> np.ndarray:
        seen = ~np.isnan(y)
        count = np.maximum(seen.sum(axis=0), 1)
        mean = np.where(seen, y, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(seen, (y - mean) ** 2, 0.0).sum(axis=0) / count)
        std = np.where(std > 0, std, 1.0)
        return self.kalman.impute((y - mean) / std) * std + mean


@dataclass(frozen=True)
class Choice:
    """What :func:`choose_imputer` picked and why (log it; tag fills with ``version``)."""

    imputer: Imputer
    kind: str  # "generator" or "baseline"
    version: str
    reason: str


def choose_imputer(directory: Path | str | None = None, gate: GateThresholds | None = None,
                   sensors: list[str] | None = None, fallback: Imputer | None = None) -> Choice:
    """The generator if it loads and passes the gate, else the Kalman baseline, with the reason.

    >>> c = choose_imputer(gate=GateThresholds(max_mae_ratio=1e-9))
    >>> c.kind, c.reason.split(":")[-1].strip().startswith("mae_ratio_block")
    ('baseline', True)
    """
    try:
        generator = load_generator(directory, gate, sensors)
    except (GeneratorRejected, FileNotFoundError) as exc:
        base = fallback or WindowKalman()
        return Choice(base, "baseline", getattr(base, "version", base.name), f"generator refused, using the Kalman baseline: {exc}")
    return Choice(generator, "generator", generator.version, f"generator {generator.version} passed the gate {generator.manifest.gate}")
