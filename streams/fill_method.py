"""How the sidecar computes fill values: the generator if it passes its gate, else a Kalman baseline.

Why an adapter: the sidecar needs, for a batch of ``(T, D)`` windows with NaN at the
missing cells, a value *and* a standard deviation per filled cell (the confidence it
publishes). The generator (:mod:`twinstream.models.generator`, ``choose_imputer``)
samples fills: the value is the mean of ``SAMPLES`` samples and the confidence their
standard deviation. It only knows the sensors it was trained on, in the units it was
trained on: a column is given to the generator only if its name is one of them *and* its
observed values lie within ``DOMAIN_Z`` of the generator's training distribution (median
absolute z-score), so another machine's sensor that merely shares a name is not filled
from a C-MAPSS model. Other columns (and every column when the generator is refused or
not installed) are filled by the baseline:
a Kalman local-linear-trend smoother on the window z-scored with its own statistics (the
same model as the generator module's fallback), whose standard deviation comes from the
smoother. A column with no observed value in the window is not filled (NaN): there is
nothing of the entity to condition on.

>>> method = FillMethod.baseline("test")
>>> y = np.array([[1.0, 10.0], [2.0, 20.0], [np.nan, 30.0], [4.0, 40.0]])
>>> value, std, by_generator = method.fill([y], [["a", "b"]], seed=0)[0]
>>> round(float(value[2, 0]), 1), bool(std[2, 0] > 0), float(std[0, 0]), by_generator
(3.0, True, 0.0, set())
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from twinstream.models.imputation import KalmanLLT
from twinstream.settings import Settings

log = logging.getLogger(__name__)

SAMPLES = 8  # diffusion samples per fill: ~1-5 s per 64-sample window on one loaded core (docs/sidecar.md)
DOMAIN_Z = 5.0
BASELINE_VERSION = "kalman-llt-window-v1"


def _baseline(windows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    kalman = KalmanLLT()  # fixed ratios on window z-scores (scale-free, no artifact needed)
    out = []
    for y in windows:
        seen = ~np.isnan(y)
        count = np.maximum(seen.sum(axis=0), 1)
        mean = np.where(seen, y, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(seen, (y - mean) ** 2, 0.0).sum(axis=0) / count)
        std = np.where(std > 0, std, 1.0)
        z = (y - mean) / std
        value = kalman.impute(z) * std + mean
        sd = kalman.impute_std(z) * std
        empty = ~seen.any(axis=0)
        value[:, empty] = np.nan
        out.append((np.where(seen, y, value), np.where(seen, 0.0, sd)))
    return out


@dataclass(frozen=True)
class FillMethod:
    """What fills gaps (``kind`` generator or baseline), its version for the fills, and why it was chosen."""

    kind: str
    version: str
    reason: str
    generator: Any = None  # twinstream.models.generator.Generator when kind == "generator"

    @staticmethod
    def baseline(reason: str) -> "FillMethod":
        return FillMethod("baseline", BASELINE_VERSION, reason)

    def fill(self, windows: list[np.ndarray], columns: list[list[str]], seed: int = 0
             ) -> list[tuple[np.ndarray, np.ndarray, set[str]]]:
        """Value and standard deviation of every cell of every window (observed cells: value, std 0),
        and the columns the generator filled (the rest: baseline)."""
        out = [(value, std, set()) for value, std in _baseline(windows)]
        if self.generator is None:
            return out
        g = self.generator
        index = {name: i for i, name in enumerate(g.sensors)}

        def in_domain(column: np.ndarray, gi: int) -> bool:
            seen = column[~np.isnan(column)]
            return seen.size > 0 and float(np.median(np.abs((seen - g.mean[gi]) / g.std[gi]))) <= DOMAIN_Z

        jobs = [(k, [(j, index[c]) for j, c in enumerate(cols) if c in index and in_domain(windows[k][:, j], index[c])])
                for k, cols in enumerate(columns)]
        jobs = [(k, pairs) for k, pairs in jobs if pairs]
        if not jobs:
            return out
        z_windows = []
        for k, pairs in jobs:
            raw = np.full((windows[k].shape[0], len(g.sensors)), np.nan)
            for j, gi in pairs:
                raw[:, gi] = windows[k][:, j]
            z_windows.append(g.to_z(raw))
        samples = g.sample_many_z(z_windows, SAMPLES, np.random.default_rng(seed))
        for (k, pairs), z in zip(jobs, samples):
            raw = g.from_z(z)  # (n, T, D_generator)
            value, std, used = out[k]
            for j, gi in pairs:
                missing = np.isnan(windows[k][:, j])
                value[missing, j] = raw[:, missing, gi].mean(axis=0)
                std[missing, j] = raw[:, missing, gi].std(axis=0)
                used.add(columns[k][j])
        return out


def choose_fill_method(settings: Settings) -> FillMethod:
    """The generator when it loads and passes the configured gate, else the baseline; the reason says which."""
    try:
        from twinstream.models.generator import choose_imputer
    except ImportError as exc:  # generator module not installed in this build
        return FillMethod.baseline(f"no generator module ({exc}); using the Kalman baseline")
    try:
        gate = settings.synth_gate() if hasattr(settings, "synth_gate") else None
        directory = getattr(settings, "synth_generator_dir", None)
        choice = choose_imputer(directory, gate)
    except Exception as exc:  # a broken artifact must not stop gap filling
        log.exception("generator could not be chosen; using the Kalman baseline")
        return FillMethod.baseline(f"generator failed to load ({type(exc).__name__}: {exc}); using the Kalman baseline")
    if choice.kind == "generator":
        return FillMethod("generator", choice.version, choice.reason, generator=choice.imputer)
    return FillMethod.baseline(choice.reason)
