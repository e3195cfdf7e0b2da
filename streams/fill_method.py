"""How the sidecar computes fill values: the generator if it passes its gate, else a Kalman baseline.

Why an adapter: the sidecar needs, for a batch of ``(T, D)`` windows with NaN at the
missing cells, a value *and* a standard deviation per filled cell (the confidence it
publishes). It only gives a column to the generator (:mod:`twinstream.models.generator`,
``choose_imputer``) if the column's name is one of the generator's sensors *and* its
observed values lie within ``DOMAIN_Z`` of the generator's training distribution (median
absolute z-score), so another machine's sensor that merely shares a name is not filled
from a C-MAPSS model. Other columns (and every column when the generator is refused or
not installed) are filled by the baseline: a Kalman local-linear-trend smoother on the
window z-scored with its own statistics (the same model as the generator module's
fallback), whose standard deviation comes from the smoother. A column with no observed
value in the window is not filled (NaN): there is nothing of the entity to condition on.

Generator fills are point estimates, not samples. The value is the generator's
``impute_many_z``: the Kalman level plus the diffusion network's conditional mean of the
residual (a few network passes). Why: it is what the twins do best on (an offline
replay with 30% missing: RUL RMSE ratio 1.046 with Kalman point fills, worse with fills
that carry sampled noise), and it is cheaper and less noisy than the mean of a few full
diffusion samples (50 denoising steps each), which is what the sidecar published before
(measured on FD001 test windows of 64 cycles with a 5-row gap: about a third of the time
per window and a 5% lower fill MAE than the mean of 8 samples).
The confidence is the predictive standard deviation of the measurement that is missing:
``sqrt(level variance + r)`` in z units (the smoother's variance of the level plus the
generator's observation-noise variance ``kalman.r`` of that sensor), times the sensor's
training standard deviation for raw units. It says how far the measurement could be
from the published value, not how uncertain the level alone is.

Adaptive (``adaptive=True``, the sidecar's default via ``sidecar_adaptive_fill``):
:meth:`FillMethod.fill_choosing` picks, per window and column, among the Kalman
baseline, the generator (its in-domain columns), linear interpolation and the last
value, by their error on pseudo-gaps cut from the window's own measured values
(:mod:`twinstream.models.fill_select`); step-like or flat columns only get linear or
last value, which never overshoot. The generator then fills the window and its
validation copies in one call, so its budget covers both. Non-generator fills keep the
baseline's version in ``generator``; ``Telemetry.fill`` names the filler actually used.

Time budget (``budget_s``, from ``TWINSTREAM_SIDECAR_GENERATOR_BUDGET_S``): the generator
part of a batch runs in its own thread and is waited for at most ``budget_s``.
When it takes longer, the batch keeps its baseline fills (so its fills carry the
baseline's version) and the generator's result is abandoned when it comes; while such an
abandoned call still runs, later batches do not start another one and are filled by the
baseline too (at most one generator call runs at a time, so a slow generator costs one
core, never a growing pile of threads). A generator call that raises is treated the same
way. :attr:`FillMethod.fallbacks` counts these batches by reason (``timeout``, ``busy``,
``error``) for the sidecar's metrics. ``budget_s=None``: no thread, no limit.

>>> method = FillMethod.baseline("test")
>>> y = np.array([[1.0, 10.0], [2.0, 20.0], [np.nan, 30.0], [4.0, 40.0]])
>>> value, std, by_generator = method.fill([y], [["a", "b"]], seed=0)[0]
>>> round(float(value[2, 0]), 1), bool(std[2, 0] > 0), float(std[0, 0]), by_generator
(3.0, True, 0.0, set())
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twinstream.models import fill_select
from twinstream.models.fill_select import Choice
from twinstream.models.imputation import KalmanLLT, LastValue, LinearInterpolation
from twinstream.settings import Settings

log = logging.getLogger(__name__)

DOMAIN_Z = 5.0
BASELINE_VERSION = "kalman-llt-window-v1"
FALLBACK_REASONS = ("timeout", "busy", "error")


def _baseline(windows: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    kalman = KalmanLLT()  # fixed ratios on window z-scores (scale-free, no artifact needed)
    out = []
    for y in windows:
        seen = ~np.isnan(y)
        count = np.maximum(seen.sum(axis=0), 1)
        mean = np.where(seen, y, 0.0).sum(axis=0) / count
        std = np.sqrt(np.where(seen, (y - mean) ** 2, 0.0).sum(axis=0) / count)
        std = np.where(std > 0, std, 1.0)
        z_value, z_sd = kalman.impute_with_std((y - mean) / std)  # one smoother run for both
        value, sd = z_value * std + mean, z_sd * std
        empty = ~seen.any(axis=0)
        value[:, empty] = np.nan
        out.append((np.where(seen, y, value), np.where(seen, 0.0, sd)))
    return out


def generator_point(generator: Any, z_windows: list[np.ndarray], rng: np.random.Generator | None = None
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Point estimate and predictive standard deviation of each z-scored window (z units).

    The value is the generator's point estimate (``point_many_z``, = ``impute_many_z``;
    observed cells unchanged); the standard deviation ``sqrt(level variance + r)``, the
    spread of the hidden measurement around it, from the same trend run.
    """
    points, variances = generator.point_many_z(z_windows, rng)
    return points, [np.sqrt(v) for v in variances]


class _OneCall:
    """Runs one generator call at a time in a thread of its own; callers wait for it up to a budget.

    An abandoned call cannot be interrupted (torch), only ignored. Its thread is not a
    daemon: a process that exits while a daemon thread is inside torch can abort
    ("terminate called without an active exception"), so the exit waits for the call.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: Future | None = None
        self.fallbacks = dict.fromkeys(FALLBACK_REASONS, 0)
        self.last_fallback = ""  # what the latest fallback was, for the caller's log

    def fallback(self, reason: str, detail: str) -> None:
        with self.lock:
            self.fallbacks[reason] += 1
            self.last_fallback = detail

    def run(self, compute: Callable[[], Any], budget_s: float) -> tuple[Any, str | None]:
        """``(result, None)``, or ``(None, "busy" | "timeout")``; ``compute``'s exception is raised."""
        with self.lock:
            if self.running is not None and not self.running.done():
                return None, "busy"
            future: Future = Future()
            future.set_running_or_notify_cancel()
            self.running = future

        def target() -> None:
            try:
                future.set_result(compute())
            except BaseException as exc:  # handed to the waiting caller (or dropped if it gave up)
                future.set_exception(exc)

        threading.Thread(target=target, name="twinstream-fill-generator", daemon=False).start()
        try:
            return future.result(timeout=budget_s), None
        except FutureTimeout:
            return None, "timeout"


@dataclass(frozen=True)
class FillMethod:
    """What fills gaps (``kind`` generator or baseline), its version for the fills, and why it was chosen.

    ``budget_s``: the longest a batch waits for the generator before keeping its baseline
    fills (None: no limit, no thread); see the module docstring.
    """

    kind: str
    version: str
    reason: str
    generator: Any = None  # twinstream.models.generator.Generator when kind == "generator"
    budget_s: float | None = None
    adaptive: bool = False  # choose the filler per window and column (fill_choosing) instead of generator-else-Kalman
    _calls: _OneCall = field(default_factory=_OneCall, compare=False, repr=False)

    @staticmethod
    def baseline(reason: str, adaptive: bool = False) -> FillMethod:
        return FillMethod("baseline", BASELINE_VERSION, reason, adaptive=adaptive)

    @property
    def fallbacks(self) -> dict[str, int]:
        """Batches whose generator columns were filled by the baseline, by reason (timeout, busy, error)."""
        with self._calls.lock:
            return dict(self._calls.fallbacks)

    @property
    def last_fallback(self) -> str:
        """A description of the latest such batch (budget, time waited, windows), for logs."""
        return self._calls.last_fallback

    def fill(self, windows: list[np.ndarray], columns: list[list[str]], seed: int = 0
             ) -> list[tuple[np.ndarray, np.ndarray, set[str]]]:
        """Value and standard deviation of every cell of every window (observed cells: value, std 0),
        and the columns the generator filled (the rest, and all of them when the generator was over
        its budget: baseline)."""
        out = [(value, std, set()) for value, std in _baseline(windows)]
        if self.generator is not None:
            self._with_generator(windows, columns, seed, out)
        return out

    def _with_generator(self, windows: list[np.ndarray], columns: list[list[str]], seed: int,
                        out: list[tuple[np.ndarray, np.ndarray, set[str]]]) -> None:
        """Overwrite ``out``'s fills of the generator's in-domain columns with its point estimates (within the budget)."""
        g = self.generator
        index = {name: i for i, name in enumerate(g.sensors)}

        def in_domain(column: np.ndarray, gi: int) -> bool:
            seen = column[~np.isnan(column)]
            return seen.size > 0 and float(np.median(np.abs((seen - g.mean[gi]) / g.std[gi]))) <= DOMAIN_Z

        jobs = [(k, [(j, index[c]) for j, c in enumerate(cols) if c in index and in_domain(windows[k][:, j], index[c])])
                for k, cols in enumerate(columns)]
        jobs = [(k, pairs) for k, pairs in jobs if pairs]
        if not jobs:
            return
        z_windows = []
        for k, pairs in jobs:
            raw = np.full((windows[k].shape[0], len(g.sensors)), np.nan)
            for j, gi in pairs:
                raw[:, gi] = windows[k][:, j]
            z_windows.append(g.to_z(raw))
        rng = np.random.default_rng(seed)
        if self.budget_s is None:
            points, sds = generator_point(g, z_windows, rng)
        else:
            started = time.monotonic()
            try:
                result, why = self._calls.run(lambda: generator_point(g, z_windows, rng), self.budget_s)
                detail = (f"budget {self.budget_s:g} s, waited {time.monotonic() - started:.2f} s" if why == "timeout"
                          else "the previous generator call is still running")
            except Exception as exc:  # a failing generator must not stop gap filling
                log.exception("generator %s failed on a batch of %d windows; the baseline fills them", self.version, len(jobs))
                result, why, detail = None, "error", f"{type(exc).__name__}: {exc}"
            if result is None:
                cells = sum(int(np.isnan(windows[k][:, [j for j, _ in pairs]]).sum()) for k, pairs in jobs)
                self._calls.fallback(str(why), f"{why}: {detail}; {len(jobs)} windows, {cells} generator cells")
                return
            points, sds = result
        for (k, pairs), z, sd in zip(jobs, points, sds):
            raw, sd_raw = g.from_z(z), sd * g.std
            value, std, used = out[k]
            for j, gi in pairs:
                missing = np.isnan(windows[k][:, j])
                value[missing, j] = raw[missing, gi]
                std[missing, j] = sd_raw[missing, gi]
                used.add(columns[k][j])

    def fill_choosing(self, windows: list[np.ndarray], columns: list[list[str]], seed: int = 0
                      ) -> list[tuple[np.ndarray, np.ndarray, set[str], dict[str, Choice]]]:
        """Like :meth:`fill`, with the filler of each column chosen on the window's own measured values.

        Candidates: the Kalman baseline, the generator (its in-domain columns, when it runs
        within the budget), linear interpolation and the last value; step-like or flat
        columns only get the last two, which never overshoot. Each window gets
        :data:`fill_select.COPIES` validation copies with pseudo-gaps shaped like its real
        gaps; every candidate fills originals and copies in one batch (the generator in
        one call, so its budget covers both). The fourth element names each filled
        column's :class:`~twinstream.models.fill_select.Choice`. The standard deviation of
        a linear or last-value fill is its RMSE on the pseudo-gaps (the Kalman one when it
        could not be measured).
        """
        plans = [fill_select.plan(w) for w in windows]
        copies = [c for p in plans for c in p.copies]
        owners = [k for k, p in enumerate(plans) for _ in p.copies]
        every, cols = [*windows, *copies], [*columns, *(columns[k] for k in owners)]
        base = _baseline(every)
        fills: dict[str, list[np.ndarray]] = {
            fill_select.KALMAN: [v for v, _ in base],
            fill_select.LINEAR: LinearInterpolation().impute_many(every),
            fill_select.LAST_VALUE: LastValue().impute_many(every),
        }
        generated: list[tuple[np.ndarray, np.ndarray, set[str]]] = []
        if self.generator is not None:
            generated = [(v.copy(), sd.copy(), set()) for v, sd in base]
            self._with_generator(every, cols, seed, generated)
            if any(used for _, _, used in generated):
                fills[fill_select.GENERATOR] = [
                    np.where(np.isin(np.array(c), list(used))[None, :] | ~np.isnan(w), v, np.nan) if c else v
                    for w, c, (v, _, used) in zip(every, cols, generated)]
        n, out, start = len(windows), [], len(windows)
        for k, (w, p) in enumerate(zip(windows, plans)):
            stop = start + len(p.copies)
            chosen = fill_select.choose(w, p, {name: f[start:stop] for name, f in fills.items()})
            start = stop
            value = fill_select.combine(w, chosen, {name: f[k] for name, f in fills.items()})
            std = base[k][1].copy()
            by_generator: set[str] = set()
            picks: dict[str, fill_select.Choice] = {}
            for j, choice in enumerate(chosen):
                if choice is None:
                    continue
                picks[columns[k][j]] = choice
                if choice.method == fill_select.GENERATOR:
                    std[:, j] = generated[k][1][:, j]
                    by_generator.add(columns[k][j])
                elif choice.method in fill_select.NO_OVERSHOOT and choice.rmse is not None:
                    std[:, j] = np.where(np.isnan(w[:, j]), choice.rmse, 0.0)
            value[:, ~(~np.isnan(w)).any(axis=0)] = np.nan  # nothing of the entity to condition on
            out.append((value, std, by_generator, picks))
        assert start == n + len(copies)
        return out


def choose_fill_method(settings: Settings) -> FillMethod:
    """The generator when it loads and passes the configured gate, else the baseline; the reason says which.

    With ``sidecar_adaptive_fill`` (default) the fills are chosen per entity and sensor
    among these and linear / last value (:meth:`FillMethod.fill_choosing`).
    """
    method = _choose_fill_method(settings)
    if getattr(settings, "sidecar_adaptive_fill", False):
        return dataclasses.replace(method, adaptive=True, reason=f"{method.reason}; filler chosen per entity and sensor")
    return method


def _choose_fill_method(settings: Settings) -> FillMethod:
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
        return FillMethod("generator", choice.version, choice.reason, generator=choice.imputer,
                          budget_s=getattr(settings, "sidecar_generator_budget_s", None))
    return FillMethod.baseline(choice.reason)
