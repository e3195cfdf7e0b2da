"""``eval stream``: replay any table of series through forecasting twins, prequentially, arm by arm.

Why this protocol: a live twin only ever sees its entity's past, and its label for a
forecast made at sample t is the value measured at t + h. So each entity's rows are
replayed in time order; every arm forecasts at t before anything at or after t + 1 is
seen, and is scored at t + h against the measured value. All arms are scored on the
same events: those where the value at t + h was measured and a last value existed at t.
Missing values (empty cells, NaN) are gaps: never a zero, never a label.

Arms: ``last_value`` (persistence), ``seasonal_naive`` (the value one season before the
target; the season given, or the one the twin detected from its own history so far),
``rls_ar`` (a reference: plain online recursive least squares, AR(6) on one-step changes,
forgetting 0.999, predicting the h-step change directly, no guard), ``twin`` (the
online forecaster with no prior), and, when training history is given,
``prior`` (the regression fitted on that history, frozen) and ``prior_twin`` (starting
from the prior, learning online). Errors are in the series' own units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets.history import (  # noqa: F401  (read_table, time_key, load_series: part of this API)
    MISSING,
    load_series,
    load_timed_series,
    read_table,
    time_key,
)
from twinstream.models.forecast import OnlineForecaster
from twinstream.models.forecast_prior import fit_forecast_prior
from twinstream.models.rls import RLS, ForecastPrior
from twinstream.schemas.twin_spec import AnomalyTask, ForecastTask, KindSpec

BLOCKS = 5


@dataclass(frozen=True)
class StreamEvalConfig:
    """What to replay and how (the command's flags)."""

    forecast: str
    horizon: int
    time_column: str
    entity_column: str | None = None
    coverage: float = 0.9
    season: int | None = None
    max_season: int = 512
    forecaster: Mapping[str, Any] = field(default_factory=dict)


class PlainRlsAr:
    """The reference learner: RLS AR(``order``) on one-step changes, direct h-step, nothing else.

    No scaling, clipping, guard or season: the plain design a forecasting twin has to beat.
    """

    def __init__(self, horizon: int, order: int = 6, forgetting: float = 0.999) -> None:
        self.h, self.order = horizon, order
        self.rls = RLS(order, forgetting, p0=1000.0, p_max=1e12)
        self.values: list[float] = []
        self.pending: dict[int, tuple[np.ndarray, float]] = {}

    def step(self, t: int, y: float) -> float | None:
        """Learn from the label ``y`` (for the forecast made at t - h), then forecast t + h."""
        due = self.pending.pop(t, None)
        if due is not None and math.isfinite(y):
            self.rls.update(due[0], y - due[1])
        self.values.append(y)
        recent = self.values[-(self.order + 1):]
        del self.values[: -(self.order + 1)]
        if len(recent) <= self.order or not all(math.isfinite(v) for v in recent):
            return None
        x = np.diff(recent)[::-1]
        self.pending[t + self.h] = (x, y)
        return y + self.rls.predict(x)


class _Arm:
    """Accumulates one arm's forecasts and their scores."""

    def __init__(self) -> None:
        self.err: list[float] = []
        self.sq: list[float] = []
        self.covered: list[bool] = []
        self.in_domain: list[bool] = []
        self.sources: dict[str, int] = {}
        self.halfwidth: list[float] = []

    def add(self, y: float, value: float, lower: float | None = None, upper: float | None = None,
            in_domain: bool | None = None, source: str | None = None) -> None:
        e = abs(y - value)
        self.err.append(e)
        self.sq.append(e * e)
        if lower is not None and upper is not None:
            self.covered.append(lower <= y <= upper)
            self.halfwidth.append((upper - lower) / 2.0)
        if in_domain is not None:
            self.in_domain.append(in_domain)
        if source is not None:
            self.sources[source] = self.sources.get(source, 0) + 1

    def summary(self, reference: _Arm | None = None) -> dict[str, Any]:
        err = np.asarray(self.err)
        out: dict[str, Any] = {"mae": float(err.mean()), "rmse": float(math.sqrt(np.mean(self.sq))),
                               "max_abs_error": float(err.max())}
        if self.covered:
            out["coverage"] = float(np.mean(self.covered))
            out["interval_halfwidth_median"] = float(np.median(self.halfwidth))
        if self.in_domain:
            out["in_domain_share"] = float(np.mean(self.in_domain))
        if self.sources:
            total = sum(self.sources.values())
            out["published_share"] = {k: v / total for k, v in sorted(self.sources.items())}
        if reference is not None:
            ref = np.asarray(reference.err)
            out["mae_ratio_last_value"] = float(err.mean() / ref.mean()) if ref.mean() > 0 else math.nan
            blocks = [(float(err[b].mean() / ref[b].mean()) if ref[b].mean() > 0 else math.nan)
                      for b in np.array_split(np.arange(err.size), BLOCKS)]
            out["block_mae_ratio_last_value"] = blocks
        return out


def _forecaster(cfg: StreamEvalConfig, prior: ForecastPrior | None = None, learn: bool = True) -> OnlineForecaster:
    return OnlineForecaster(cfg.horizon, coverage=cfg.coverage, season=cfg.season, max_season=cfg.max_season,
                            prior=prior, learn=learn, **dict(cfg.forecaster))


def evaluate_series(series: Mapping[str, np.ndarray], cfg: StreamEvalConfig, prior: ForecastPrior | None = None) -> dict[str, Any]:
    """Score every arm on the same events of every entity (see the module doc)."""
    h = cfg.horizon
    arms = {name: _Arm() for name in ("last_value", "seasonal_naive", "rls_ar", "twin")}
    if prior is not None:
        arms["prior"], arms["prior_twin"] = _Arm(), _Arm()
    seasons: dict[str, int | None] = {}
    for entity, ys in series.items():
        twins = {"twin": _forecaster(cfg)}
        if prior is not None:
            twins["prior"], twins["prior_twin"] = _forecaster(cfg, prior, learn=False), _forecaster(cfg, prior)
        reference = PlainRlsAr(h)
        made: dict[int, dict[str, Any]] = {}
        last = math.nan
        for t, y in enumerate(ys):
            due = made.pop(t, None)
            if due is not None and math.isfinite(y):  # score before anything learns from y
                arms["last_value"].add(y, due["last_value"])
                arms["seasonal_naive"].add(y, due["seasonal_naive"])
                arms["rls_ar"].add(y, due["rls_ar"])
                for name, f in due["twins"].items():
                    arms[name].add(y, f.value, f.lower, f.upper, f.in_domain, f.source)
            value = None if not math.isfinite(y) else float(y)
            outs = {name: fc.step(t, value) for name, fc in twins.items()}
            ar = reference.step(t, float(y))
            if value is not None:
                last = value
            if math.isfinite(last):
                season = cfg.season if cfg.season is not None else twins["twin"].season
                naive = last
                if season is not None and t + h - season >= 0 and t + h - season <= t:
                    back = ys[t + h - season]
                    naive = float(back) if math.isfinite(back) else last
                made[t + h] = {"last_value": last, "seasonal_naive": naive, "rls_ar": last if ar is None else ar, "twins": outs}
        seasons[entity] = cfg.season if cfg.season is not None else twins["twin"].season
    if not arms["last_value"].err:
        raise ValueError("no event could be scored: every series is shorter than the horizon or all values are missing")
    ref = arms["last_value"]
    result: dict[str, Any] = {name: arm.summary(None if name == "last_value" else ref) for name, arm in arms.items()}
    result["seasonal_naive"]["season"] = sorted({s for s in seasons.values() if s is not None}) or None
    result["metric"], result["horizon"], result["nominal_coverage"] = cfg.forecast, h, cfg.coverage
    result["events_scored"], result["entities"] = len(ref.err), len(series)
    return result


def split_history(series: Mapping[str, np.ndarray], fraction: float) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each entity's first ``fraction`` of samples as history, the rest as the stream to score.

    >>> history, live = split_history({"a": np.arange(10.0)}, 0.3)
    >>> history["a"].tolist(), live["a"][:2].tolist()
    ([0.0, 1.0, 2.0], [3.0, 4.0])
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"train fraction must be in (0, 1), got {fraction}")
    cut = {e: int(len(ys) * fraction) for e, ys in series.items()}
    return {e: ys[: cut[e]] for e, ys in series.items()}, {e: ys[cut[e]:] for e, ys in series.items()}


def run_stream_eval(
    csv_path: Path,
    cfg: StreamEvalConfig,
    train_csv: Path | None = None,
    train_fraction: float | None = None,
    anomaly_windows: Path | None = None,
    anomaly_threshold: float = 0.995,
    anomaly_horizon: int = 1,
) -> dict[str, Any]:
    """The whole command: load, optionally fit a prior on history, score, return the JSON report.

    History is ``train_csv`` (other entities or an earlier period), or with ``train_fraction``
    the first part of each series in ``csv_path`` (then only the rest is scored). With
    ``anomaly_windows`` the residual anomaly score is also replayed and scored against
    those labelled windows (:mod:`twinstream.evaluation.anomaly_eval`).
    """
    if train_csv is not None and train_fraction is not None:
        raise ValueError("give either a training file or a training fraction, not both")
    timed = load_timed_series(csv_path, cfg.forecast, cfg.time_column, cfg.entity_column)
    series = {e: values for e, (_, values) in timed.items()}
    prior = None
    report: dict[str, Any] = {"data": {"csv": Path(csv_path).name, "train_csv": Path(train_csv).name if train_csv else None,
                                       "train_fraction": train_fraction}}
    history: dict[str, np.ndarray] | None = None
    if train_fraction is not None:
        history, series = split_history(series, train_fraction)
    elif train_csv is not None:
        history = load_series(train_csv, cfg.forecast, cfg.time_column, cfg.entity_column)
    if history is not None:
        prior = fit_forecast_prior(history.values(), cfg.horizon, max_season=cfg.max_season, season=cfg.season,
                                   coverage=cfg.coverage, **dict(cfg.forecaster))
        report["prior"] = {"season": prior.season, "train_mae_scaled": prior.train_mae_scaled,
                           "train_persistence_mae_scaled": prior.train_persistence_mae_scaled,
                           "domain": prior.domain.to_manifest()}
    report["forecast"] = evaluate_series(series, cfg, prior)
    if anomaly_windows is not None:
        from twinstream.evaluation.anomaly_eval import evaluate_anomaly, read_windows

        windows = read_windows(anomaly_windows, Path(csv_path).name, list(timed))
        scored = {e: (times[len(times) - len(series[e]):], series[e]) for e, (times, _) in timed.items()}
        report["anomaly"] = evaluate_anomaly(scored, windows, anomaly_threshold, anomaly_horizon)
    return report


def kind_configs(kind: KindSpec, time_column: str, entity_column: str | None) -> tuple[list[StreamEvalConfig], AnomalyTask | None]:
    """The replays a declared kind asks for: one per forecast task, and its anomaly task (if any).

    >>> from twinstream.schemas.twin_spec import parse_spec
    >>> kind = parse_spec("kinds: [{name: m, tasks: [{type: forecast, metric: v, horizon: 12}, {type: anomaly, metric: v}]}]").kinds[0]
    >>> cfgs, anomaly = kind_configs(kind, "t", None)
    >>> [(c.forecast, c.horizon) for c in cfgs], anomaly.threshold
    ([('v', 12)], 0.99)
    """
    cfgs = [StreamEvalConfig(forecast=t.metric, horizon=t.horizon, time_column=time_column, entity_column=entity_column,
                             coverage=t.coverage, season=t.season, max_season=t.max_season)
            for t in kind.tasks if isinstance(t, ForecastTask)]
    anomaly = next((t for t in kind.tasks if isinstance(t, AnomalyTask)), None)
    return cfgs, anomaly
