"""A self-supervised forecasting twin: one metric, ``h`` samples ahead, learned online.

Why this design (measured on public series; docs/any-fleet.md):

* **Persistence is the bar.** "The value stays where it is" is hard to beat at short
  horizons; a learner that does not beat it is noise. So the twin predicts the *change*
  over the next ``h`` samples (``y[t+h] - y[t]``), and a zero change is persistence.
* **Recursive least squares, not SGD.** Plain SGD on raw lags diverges on series with
  large values or steps. RLS with a forgetting factor solves the least-squares problem
  exactly at every step (no learning rate), on inputs divided by the series' own typical
  h-step change and clipped, so one spike cannot throw the weights.
* **Two direct h-step regressions.** The plain one reads the last ``order`` one-step
  changes, the gap between the value and a fast moving mean, and a bias. The extended
  one also reads the gap to a slow mean (the level a mean-reverting series, or a cycle,
  swings around) and, once the twin's own history shows a season ``s``
  (:mod:`~twinstream.models.seasonality`), the change one season ago over the same
  horizon (``y[t+h-s] - y[t-s]``) and the gap to the value one season ago
  (``y[t+h-s] - y[t]``). More inputs fit more structure and more noise; which one is
  better differs by series, so both run and the guard below chooses.
* **Shrinkage and a divergence guard.** The twin tracks the recent absolute error of
  each regression (plain, extended, a frozen prior's inside the prior's
  domain) and of persistence, all on the same forecasts. It takes the regression with
  the smallest error, shrinks its predicted change by the least-squares weight of that
  prediction against what happened (0 = persistence, 1 = the regression as is), and
  publishes persistence instead whenever the shrunk forecast has lately been worse than
  persistence by more than ``guard_margin``.
* **Honest intervals.** From the twin's own recent residuals, kept calibrated online
  (:mod:`~twinstream.models.conformal`); widened when the input is out of domain.
* **Self-supervised labels.** A forecast made at ``seq`` t waits in a bounded pending
  buffer until the sample with ``seq`` t+h arrives; it is scored, then learned. Every
  forecast is made before its label exists (prequential order).

>>> import math
>>> fc = OnlineForecaster(horizon=2, max_season=0)
>>> outs = [fc.step(t, math.sin(t / 5.0)) for t in range(300)]
>>> last = outs[-1]
>>> last.target_seq, last.lower <= last.value <= last.upper, fc.labels
(301, True, 296)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from twinstream.models.conformal import ConformalBand
from twinstream.models.domain import OnlineDomain
from twinstream.models.rls import RLS, ForecastPrior
from twinstream.models.seasonality import MIN_CYCLES, detect_season

DOMAIN_FEATURES = ("level", "level_dev", "change_1", "change_h")
REGRESSIONS = ("model", "extended", "prior")
EARLY_WINDOWS = 3.0
SOURCES = (*REGRESSIONS, "shrunk", "persistence")

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Forecast:
    """One published forecast: value for ``target_seq`` with an interval and how it was made."""

    seq: int
    target_seq: int
    value: float
    lower: float
    upper: float
    in_domain: bool
    domain_score: float
    source: str  # "persistence", or the regression whose shrunk change was published: "model", "extended", "prior"


class OnlineForecaster:
    """Online h-step forecaster of one series (see the module doc for the why).

    ``step(seq, value)`` is called once per sample in sequence order (``value`` None for
    a missing sample: a gap, never a zero) and returns the forecast for ``seq + horizon``.
    """

    family = "rls-forecast"
    version = "1"

    def __init__(
        self,
        horizon: int,
        order: int = 6,
        forgetting: float = 0.9995,
        coverage: float = 0.9,
        season: int | None = None,
        max_season: int = 512,
        season_threshold: float = 0.5,
        fast_span: int = 12,
        slow_span: int = 288,
        scale_span: int = 500,
        guard_span: int = 1000,
        warmup: int = 30,
        clip: float = 8.0,
        target_clip: float = 3.0,
        ood_widen: float = 1.5,
        guard_margin: float = 0.02,
        pending_max: int | None = None,
        prior: ForecastPrior | None = None,
        learn: bool = True,
        interval_window: int = 1000,
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.order, self.clip, self.target_clip = int(horizon), int(order), float(clip), float(target_clip)
        self.coverage, self.warmup, self.ood_widen, self.learn = coverage, int(warmup), float(ood_widen), learn
        self.max_season, self.season_threshold = int(max_season), float(season_threshold)
        self.guard_margin = float(guard_margin)
        self.season = season if season is not None else (prior.season if prior is not None else None)
        self.fixed_season = season is not None
        self.prior = prior
        longest = max(self.max_season if not self.fixed_season else 0, self.season or 0)
        self._hist_len = max(int(MIN_CYCLES * longest) + self.horizon + 2, self.order + self.horizon + 2, longest + self.horizon + 2)
        self._hist = np.full(self._hist_len, np.nan)
        self._pos = 0
        self.n = 0
        self.labels = 0
        self.last_seq = -1
        self.last_value = NAN
        self._af, self._as, self._ascale = 2.0 / (fast_span + 1), 2.0 / (slow_span + 1), 2.0 / (scale_span + 1)
        self._ag = 2.0 / (guard_span + 1)
        self.fast = self.slow = NAN
        self.scale = NAN
        self.rls = RLS(self.n_base, forgetting) if prior is None else prior.rls.copy(forgetting)
        self.rls_x = self._fresh_extended()
        if prior is not None and prior.rls_extended is not None and self.season == prior.season:
            self.rls_x = prior.rls_extended.copy(forgetting)
        self.err = dict.fromkeys(SOURCES, NAN)
        if prior is not None:
            self.err["prior"] = self.err["model"] = self.err["extended"] = self.err["shrunk"] = prior.train_mae_scaled
            self.err["persistence"] = prior.train_persistence_mae_scaled
        self.band = ConformalBand(coverage, window=interval_window)
        self.domain_bounds = prior.domain if prior is not None else None
        self.own_domain = OnlineDomain(DOMAIN_FEATURES)
        self.pending: deque[tuple] = deque(maxlen=pending_max or 4 * self.horizon + 16)
        self._next_detect = 0
        # per regression: recent E[predicted change * actual change] and E[predicted change^2] (scaled)
        self._xy = dict.fromkeys(REGRESSIONS, 0.0)
        self._xx = dict.fromkeys(REGRESSIONS, 0.0)
        if prior is not None:  # the prior's regression starts trusted as it was in training
            for name in REGRESSIONS:
                self._xy[name] = self._xx[name] = 1.0

    @property
    def n_base(self) -> int:
        """Inputs of the plain regression: ``order`` changes, the gap to the fast mean, bias."""
        return self.order + 2

    @property
    def n_inputs(self) -> int:
        """Inputs of the extended regression: the plain ones, two seasonal ones (0 without a season), the slow-mean gap."""
        return self.order + 5

    def _fresh_extended(self) -> RLS:
        """An extended regression that knows nothing yet (at start, and when the season changes).

        Not warm-started from the plain regression: its inputs are strongly collinear with
        the seasonal ones, and a confident start pins the shared weights where the plain
        regression left them (measured: 0.15 instead of 0.10 of persistence's error on a
        noisy cycle). It is published only once its own recent error is the smallest.
        """
        return RLS(self.n_inputs, self.rls.forgetting, self.rls.p0, self.rls.p_max)

    @property
    def model_version(self) -> str:
        return f"{self.family}-v{self.version}"

    # -- history -----------------------------------------------------------------
    def _lag(self, k: int) -> float:
        """The value ``k`` samples before the latest one (NaN if unknown or missing)."""
        if k >= min(self.n, self._hist_len):
            return NAN
        return float(self._hist[(self._pos - 1 - k) % self._hist_len])

    def _push(self, value: float) -> None:
        self._hist[self._pos] = value
        self._pos = (self._pos + 1) % self._hist_len
        self.n += 1

    def history(self) -> np.ndarray:
        """The remembered values, oldest first (NaN for missing samples)."""
        n = min(self.n, self._hist_len)
        return np.roll(self._hist, -self._pos)[-n:] if n else np.empty(0)

    # -- features ----------------------------------------------------------------
    def _inputs(self) -> np.ndarray | None:
        """The regression inputs at the latest sample, in scale units; None if history is too short."""
        y0 = self._lag(0)
        lags = [self._lag(k) for k in range(self.order + 1)]
        if not (np.isfinite(self.scale) and self.scale > 0.0) or not all(np.isfinite(lags)):
            return None
        x = np.zeros(self.n_inputs)
        x[: self.order] = np.diff(lags[::-1])[::-1]  # newest change first
        x[self.order] = y0 - self.fast
        x[self.order + 1] = self.scale  # bias (in scale units: 1)
        s, h = self.season, self.horizon
        if s is not None:
            ahead, back = self._lag(s - h), self._lag(s)
            if np.isfinite(ahead) and np.isfinite(back):
                x[self.order + 2] = ahead - back
                x[self.order + 3] = ahead - y0
        x[self.order + 4] = y0 - self.slow  # the level the series (or its cycle) swings around
        return np.clip(x / self.scale, -self.clip, self.clip)

    def _domain_vector(self, y0: float) -> list[float]:
        return [y0, y0 - self.slow, y0 - self._lag(1), y0 - self._lag(self.horizon)]

    def _update_state(self, y: float) -> None:
        prev_h = self._lag(self.horizon - 1)  # becomes y[t-h] once y is pushed
        self._push(y)
        if not np.isfinite(y):
            return
        if self.fast != self.fast:
            self.fast = self.slow = y
        else:
            self.fast += self._af * (y - self.fast)
            self.slow += self._as * (y - self.slow)
        if np.isfinite(prev_h):
            change = abs(y - prev_h)
            self.scale = change if self.scale != self.scale else self.scale + self._ascale * (change - self.scale)
            floor = 1e-9 * (1.0 + abs(y))
            if self.scale < floor:
                self.scale = floor

    def _maybe_detect_season(self) -> None:
        if self.fixed_season or self.max_season < 2 or self.n < self._next_detect:
            return
        self._next_detect = self.n + max(self.max_season // 2, 50)
        found = detect_season(self.history(), self.horizon, self.max_season, threshold=self.season_threshold)
        if found is not None and self.season is not None and abs(found - self.season) <= max(1, self.season // 20):
            return  # the same season, its peak moved by noise: keep what the extended regression learned
        if found != self.season:
            self.season = found
            self.rls_x = self._fresh_extended()
            self.err["extended"] = NAN

    # -- the step ----------------------------------------------------------------
    def step(self, seq: int, value: float | None) -> Forecast:
        """Score and learn the forecasts that ``value`` settles, then forecast ``seq + horizon``."""
        y = NAN if value is None or not np.isfinite(value) else float(value)
        if seq <= self.last_seq:
            raise ValueError(f"seq {seq} is not after the last applied seq {self.last_seq}")
        missing = seq - self.last_seq - 1 if self.last_seq >= 0 else 0
        if missing >= self._hist_len:  # a jump longer than the memory: all of it is a gap, in O(1)
            self._hist[:] = np.nan
            self.n += missing
        else:
            for _ in range(missing):
                self._update_state(NAN)  # samples that never arrived are gaps
        self.last_seq = seq
        if np.isfinite(y):
            self._settle(seq, y)
        self._update_state(y)
        if np.isfinite(y):
            self.last_value = y
        self._maybe_detect_season()
        return self._forecast(seq)

    def _settle(self, seq: int, y: float) -> None:
        while self.pending and self.pending[0][0] < seq:
            self.pending.popleft()  # its label never arrived
        if not self.pending or self.pending[0][0] != seq:
            return
        _, x, base, scale, cands, lower, upper, published = self.pending.popleft()
        self.labels += 1
        a = min(max((y - base) / scale, -self.target_clip), self.target_clip)
        # early on, weigh the last third of the labels (a young regression improves fast; its
        # first errors must not hold it back for a thousand samples), later the last guard_span
        ag = max(self._ag, EARLY_WINDOWS / (self.labels + 1.0))
        for name in REGRESSIONS:
            if name in cands:
                d = (cands[name] - base) / scale
                self._xy[name] += self._ag * (d * a - self._xy[name])
                self._xx[name] += self._ag * (d * d - self._xx[name])
        for name, guess in cands.items():
            e = abs(y - guess) / scale
            old = self.err[name]
            self.err[name] = e if old != old else old + ag * (e - old)
        covered = None if published is None else (lower <= y <= upper)
        self.band.update(abs(y - published if published is not None else y - base) / scale, covered)
        if x is not None and self.learn:
            target = float(np.clip((y - base) / scale, -self.target_clip, self.target_clip))
            self.rls.update(x[: self.n_base], target)
            self.rls_x.update(x, target)

    def _forecast(self, seq: int) -> Forecast:
        base = self.last_value
        x = self._inputs() if np.isfinite(base) else None
        y0 = self._lag(0)
        dom = self._domain_vector(y0) if np.isfinite(y0) else None
        if dom is not None:
            in_domain, score = (self.domain_bounds or self.own_domain).check(dom)
            self.own_domain.observe(dom)
        else:
            in_domain, score = False, 1.0
        scale = self.scale if np.isfinite(self.scale) else 0.0
        cands: dict[str, float] = {}
        source = "persistence"
        value = base if np.isfinite(base) else 0.0
        if np.isfinite(base):
            cands["persistence"] = base
            if x is not None:
                cands["model"] = base + self.rls.predict(x[: self.n_base]) * scale
                cands["extended"] = base + self.rls_x.predict(x) * scale
                if self.prior is not None:
                    cands["prior"] = base + self._prior_change(x) * scale
                best = self._best_regression(cands, in_domain)
                cands["shrunk"] = base + self._shrink(best) * (cands[best] - base)
                if self._trusted():
                    source, value = best, cands["shrunk"]
        half = self.band.halfwidth(scale) if self.labels >= self.warmup else NAN
        if not in_domain and np.isfinite(half):
            half *= self.ood_widen
        if np.isfinite(half) and np.isfinite(value):
            lower, upper, published = value - half, value + half, value
        elif scale > 0.0 and np.isfinite(value):  # not calibrated yet: a deliberately wide band
            lower, upper, published = value - self.clip * scale, value + self.clip * scale, None
        else:  # nothing seen yet: no interval at all
            lower, upper, published = -np.inf, np.inf, None
        if np.isfinite(base) and scale > 0.0:
            self.pending.append((seq + self.horizon, x, base, scale, cands, lower, upper, published))
        return Forecast(seq, seq + self.horizon, float(value), float(lower), float(upper), in_domain, float(score), source)

    def _prior_change(self, x: np.ndarray) -> float:
        """The frozen prior's predicted change (its extended regression when the twin's season is the prior's)."""
        prior = self.prior
        assert prior is not None
        if prior.rls_extended is not None and self.season == prior.season:
            return prior.rls_extended.predict(x)
        return prior.rls.predict(x[: self.n_base])

    def _shrink(self, name: str) -> float:
        """Least-squares weight of a regression's predicted change against what happened, in [0, 1]."""
        xx = self._xx[name]
        return min(max(self._xy[name] / xx, 0.0), 1.0) if xx > 0.0 else 0.0

    def _best_regression(self, cands: dict[str, float], in_domain: bool) -> str:
        """The regression with the smallest recent error; a prior only inside its domain."""
        best, best_err = "model", self.err["model"]
        for name in ("extended", "prior"):
            if name not in cands or (name == "prior" and not in_domain):
                continue
            e = self.err[name]
            if e == e and (best_err != best_err or e < best_err):
                best, best_err = name, e
        return best

    def _trusted(self) -> bool:
        """The divergence guard: publish the shrunk regression unless it has lately been worse than persistence."""
        if self.labels < self.warmup and self.prior is None:
            return False
        shrunk, persistence = self.err["shrunk"], self.err["persistence"]
        if shrunk != shrunk or persistence != persistence:
            return self.prior is not None
        return shrunk <= persistence * (1.0 + self.guard_margin)
