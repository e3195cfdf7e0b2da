"""A forecast prior from history: what forecasters learned on a fleet's past series.

Why a prior for a self-supervised task at all: a new twin needs a few hundred samples
before its own regression beats persistence. Weights learned on the fleet's history (in
scale units, so they transfer between entities of different level and spread) let it
start there, while its own online regression takes over as evidence accumulates (the
divergence guard publishes whichever has been more accurate lately; out of the prior's
domain the prior is not used at all).

>>> import math
>>> series = [[10 + math.sin(t / 8.0) for t in range(600)], [20 + 2 * math.sin(t / 8.0) for t in range(600)]]
>>> prior = fit_forecast_prior(series, horizon=3, max_season=0)
>>> prior.train_mae_scaled < prior.train_persistence_mae_scaled
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from twinstream.models.domain import DomainBounds
from twinstream.models.forecast import DOMAIN_FEATURES, OnlineForecaster
from twinstream.models.rls import RLS, ForecastPrior
from twinstream.models.seasonality import detect_season


def fit_forecast_prior(
    series: Iterable[Sequence[float | None]],
    horizon: int,
    max_season: int = 512,
    season: int | None = None,
    **forecaster_params: object,
) -> ForecastPrior:
    """Run one shared regression over every training series in order; keep its state and ranges.

    Each series is one entity's history in time order (None/NaN = missing). The same
    prequential protocol as a live twin is used, so the recorded training errors are
    honest out-of-sample errors, not a fit to the labels.
    """
    series = [np.asarray([np.nan if v is None else v for v in s], dtype=float) for s in series]
    if not series:
        raise ValueError("no training series")
    if season is None and max_season >= 2:
        longest = max(series, key=len)
        season = detect_season(longest, horizon, max_season)
    shared: RLS | None = None
    shared_extended: RLS | None = None
    domain_rows: list[list[float]] = []
    err: dict[str, list[float]] = {"model": [], "extended": []}
    err_persist: list[float] = []
    for values in series:
        fc = OnlineForecaster(horizon, season=season, max_season=0, **forecaster_params)  # type: ignore[arg-type]
        if shared is not None:
            fc.rls = shared
        if shared_extended is not None:
            fc.rls_x = shared_extended
        pending: dict[int, tuple[dict[str, float], float, float]] = {}
        for t, y in enumerate(values):
            label = pending.pop(t, None)
            if label is not None and np.isfinite(y):
                guesses, base, scale = label
                for name, guess in guesses.items():
                    err[name].append(abs(y - guess) / scale)
                err_persist.append(abs(y - base) / scale)
            out = fc.step(t, None if not np.isfinite(y) else float(y))
            if fc.pending and fc.pending[-1][0] == out.target_seq:
                _, x, base, scale, cands, *_ = fc.pending[-1]
                if "model" in cands and "extended" in cands:
                    pending[out.target_seq] = ({k: cands[k] for k in err}, base, scale)
            if np.isfinite(y):
                domain_rows.append(fc._domain_vector(float(y)))
        shared, shared_extended = fc.rls, fc.rls_x
    assert shared is not None
    if not err["model"]:
        raise ValueError("training series too short to learn anything (need more than order + horizon samples)")
    domain = DomainBounds.fit(domain_rows, DOMAIN_FEATURES)
    return ForecastPrior(
        rls=shared.copy(),
        rls_extended=shared_extended.copy() if shared_extended is not None else None,
        season=season,
        domain=domain,
        train_mae_scaled=float(min(np.mean(err["model"]), np.mean(err["extended"]))),
        train_persistence_mae_scaled=float(np.mean(err_persist)),
    )


ARRAY_KEYS = ("w", "P", "w_extended", "P_extended", "meta", "domain_low", "domain_high")


def forecast_prior_arrays(prior: ForecastPrior) -> dict[str, np.ndarray]:
    """Everything in a forecast prior as named arrays (an artifact's weights file, pinned by its sha256).

    ``meta`` holds: forgetting, p0, p_max, season (0 = none), training MAE and persistence
    MAE (scaled), number of extended inputs (0 = none). Domain bounds keep their order of
    :data:`~twinstream.models.forecast.DOMAIN_FEATURES`.
    """
    ext = prior.rls_extended
    meta = [prior.rls.forgetting, prior.rls.p0, prior.rls.p_max, float(prior.season or 0),
            prior.train_mae_scaled, prior.train_persistence_mae_scaled, float(0 if ext is None else ext.w.size)]
    return {
        "w": prior.rls.w, "P": prior.rls.P,
        "w_extended": ext.w if ext is not None else np.zeros(0), "P_extended": ext.P if ext is not None else np.zeros((0, 0)),
        "meta": np.asarray(meta, dtype=float),
        "domain_low": np.asarray(prior.domain.low, dtype=float), "domain_high": np.asarray(prior.domain.high, dtype=float),
    }


def forecast_prior_from_arrays(arrays: dict[str, np.ndarray], version: str = "history-v1") -> ForecastPrior:
    """The inverse of :func:`forecast_prior_arrays` (e.g. from ``numpy.load`` of a verified artifact).

    >>> import math
    >>> prior = fit_forecast_prior([[math.sin(t / 5.0) for t in range(400)]], horizon=2, max_season=0)
    >>> again = forecast_prior_from_arrays(forecast_prior_arrays(prior))
    >>> bool((again.rls.w == prior.rls.w).all()), again.season == prior.season, again.domain == prior.domain
    (True, True, True)
    """
    missing = [k for k in ARRAY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"forecast prior arrays lack {', '.join(missing)}")
    forgetting, p0, p_max, season, mae, persistence, n_ext = (float(v) for v in arrays["meta"][:7])

    def rls(w: np.ndarray, P: np.ndarray) -> RLS:
        out = RLS(w.size, forgetting, p0, p_max)
        out.w, out.P = np.array(w, dtype=float), np.array(P, dtype=float)
        return out

    return ForecastPrior(
        rls=rls(arrays["w"], arrays["P"]),
        rls_extended=rls(arrays["w_extended"], arrays["P_extended"]) if n_ext else None,
        season=int(season) or None,
        domain=DomainBounds(DOMAIN_FEATURES, tuple(float(v) for v in arrays["domain_low"]),
                            tuple(float(v) for v in arrays["domain_high"])),
        train_mae_scaled=mae,
        train_persistence_mae_scaled=persistence,
        version=version,
    )
