"""RUL tasks on synthetic data: shared data plumbing, TSTR and cold start.

Why a separate module: :mod:`twinstream.evaluation.synth_rul` (the entry point and the
missing-30 % run) and these two tasks share one way of turning C-MAPSS rows into the
z-scored windows a gap filler sees and back into the rows a twin sees, so every number
goes through the same learning-core protocol (:mod:`twinstream.evaluation.cmapss_eval`).

A *filler* is anything with ``impute(y)`` on a ``(T, D)`` z-scored window (NaN =
missing, observed values unchanged); a *sampler* also has ``sample(y, n, rng) -> (n,
T, D)``. The generator has both; :class:`KalmanSampler` is the non-generative stand-in
(Kalman smoother plus independent noise of each fill's predictive standard deviation);
a filler without ``sample`` (linear interpolation) gives its point estimate as its one
sample.

**TSTR** (train on synthetic, test on real): every FD001 training engine keeps one real
sample in ``anchor_every`` (its cycles 1, 1 + anchor_every, ... and its last cycle); the
other samples of its 14 informative sensors are hidden and drawn from the sampler,
window by window (windows of ``window`` cycles, independent draws). The prior is then
trained by :func:`~twinstream.models.prior_train.train_prior` on those series (labels:
the real engine's RUL, since the synthetic engine fails when the real one did) and
scored with the prior + twin arm on the real test engines. TRTR is the same trainer,
budget and seed on the real series. Both training sets go through the same NASA-format
writer (values rounded to 4 decimals, the data's own precision), so a sampler that
returns the real values gives exactly the TRTR prior.

**Cold start**: a test twin has seen only its first ``k`` real cycles. Plain: its
estimate at cycle ``k``. Augmented: copies of the twin are fed ``horizon`` synthetic
continuation cycles (flagged synthetic; they only change the copy's features, the real
twin is untouched and nothing is learned from them since test twins get no labels);
each copy's estimate at cycle ``k + horizon`` plus ``horizon`` is an estimate of the
RUL at cycle ``k``; their mean is the augmented estimate, and ``weight`` blends it with
the plain one. The same look-ahead with the engine's *real* next cycles is reported as
the ceiling a perfect continuation could reach. Errors are against the true RUL at
cycle ``k`` capped at 125, on engines with at least ``k + horizon`` cycles. Caveat, read
it before the numbers: FD001 test engines start healthy, so early in their life almost
every capped truth *is* 125 (none at ``k = 10``, 6 of 88 at ``k = 30``); an estimate that
reaches the cap is then exactly right, and the look-ahead (estimate + horizon, capped)
reaches it easily. ``engines_truth_below_cap`` and the ``*_below_cap`` RMSEs show the
engines where the question is not trivial.

>>> y = np.array([[0.0], [np.nan], [2.0]])
>>> draw(KalmanSampler(KalmanLLT(q_level=1e-9, q_slope=1e-9, r=1e-6)), [y], 2, np.random.default_rng(0))[0].round(2).tolist()
[[[0.0], [1.0], [2.0]], [[0.0], [1.0], [2.0]]]
>>> [float(v) for v in anchors(5, 2)]
[1.0, 0.0, 1.0, 0.0, 1.0]
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets import cmapss
from twinstream.evaluation.cmapss_eval import CAP, arm_params, fleet_events, rmse, run_arm, score_arm
from twinstream.models.imputation import KalmanLLT
from twinstream.models.registry import make_learner
from twinstream.models.twin import Twin

SENSORS: tuple[str, ...] = tuple(cmapss.INFORMATIVE_SENSORS)
_TRTR: dict[tuple, dict[str, float]] = {}  # TRTR results per (subset, sizes, limit, budget, seed) in this process
DEFAULT_WINDOW = 64
Progress = Callable[[str], None]


# -- data plumbing --------------------------------------------------------------------
@dataclass
class Engines:
    """Rows (cycle order) and z-scored informative-sensor series ``(T, D)`` per engine unit."""

    rows: dict[int, list[cmapss.Cycle]]
    series: dict[int, np.ndarray]


def zscore_stats(fd: cmapss.CmapssSubset) -> tuple[np.ndarray, np.ndarray]:
    """Training engines' mean and standard deviation of each informative sensor (as ``eval synth``)."""
    x = np.array([[r.sensors[s] for s in SENSORS] for r in fd.train])
    std = x.std(axis=0)
    return x.mean(axis=0), np.where(std > 0, std, 1.0)


def engines(rows: Sequence[cmapss.Cycle], mean: np.ndarray, std: np.ndarray, limit: int | None = None) -> Engines:
    """Group rows by engine (units up to ``limit``) and z-score their informative sensors."""
    by_unit: dict[int, list[cmapss.Cycle]] = {}
    for r in sorted(rows, key=lambda r: (r.unit, r.cycle)):
        if limit is None or r.unit <= limit:
            by_unit.setdefault(r.unit, []).append(r)
    series = {u: (np.array([[r.sensors[s] for s in SENSORS] for r in rs]) - mean) / std for u, rs in by_unit.items()}
    return Engines(by_unit, series)


def sensors_of(z_row: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """A z-scored sample back in sensor units (NaN stays NaN: a sample without values)."""
    return {s: float(v) for s, v in zip(SENSORS, z_row * std + mean)}


def with_values(row: cmapss.Cycle, z_row: np.ndarray, mean: np.ndarray, std: np.ndarray) -> cmapss.Cycle:
    """``row`` with its informative sensors replaced by ``z_row`` (other sensors and settings kept)."""
    return cmapss.Cycle(row.unit, row.cycle, row.settings, {**row.sensors, **sensors_of(z_row, mean, std)})


def window_length(imputer: Any, default: int = DEFAULT_WINDOW) -> int:
    """The filler's window in samples, if it declares one (a generator is trained on fixed windows)."""
    for owner in (imputer, getattr(imputer, "manifest", None)):
        for attr in ("window", "window_length"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 1:
                return value
    return default


def fill(imputer: Any, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Point fills of many windows (batched per window length when the filler has ``impute_many``)."""
    out: list[np.ndarray | None] = [None] * len(windows)
    by_len: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_len.setdefault(len(w), []).append(i)
    many = getattr(imputer, "impute_many", None)
    for idx in by_len.values():
        batch = [windows[i] for i in idx]
        done = many(batch) if many is not None else [imputer.impute(w) for w in batch]
        for i, f in zip(idx, done):
            out[i] = np.asarray(f, dtype=float)
    return [o for o in out if o is not None]


def draw(imputer: Any, windows: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` samples ``(n, T, D)`` per window; a filler without ``sample`` gives its point fill once."""
    many = getattr(imputer, "sample_many", None)
    if many is not None:
        return [np.asarray(d, dtype=float) for d in many(list(windows), n, rng)]
    sample = getattr(imputer, "sample", None)
    if sample is None:
        return [f[None] for f in fill(imputer, windows)]
    return [np.asarray(sample(w, n, rng), dtype=float) for w in windows]


class RawUnits:
    """A filler that takes raw sensor units (the generator artifact) used on our z-scored windows.

    Windows go back to sensor units with our training statistics; a generator that
    offers ``sample_many_z`` (one batched diffusion call) gets them in its own z-scores.
    Observed values are passed through untouched (no round-trip float noise).
    """

    def __init__(self, inner: Any, mean: np.ndarray, std: np.ndarray) -> None:
        sensors = list(getattr(inner, "sensors", SENSORS))
        if sensors != list(SENSORS):
            raise ValueError(f"filler columns {sensors} are not the informative sensors {list(SENSORS)}")
        self.inner, self.mean, self.std = inner, mean, std
        self.name = getattr(inner, "name", type(inner).__name__)
        self.version = str(getattr(inner, "version", ""))
        self.window = window_length(inner)

    def impute_many(self, ys: Sequence[np.ndarray]) -> list[np.ndarray]:
        raw = [y * self.std + self.mean for y in ys]
        done = self.inner.impute_many(raw) if hasattr(self.inner, "impute_many") else [self.inner.impute(r) for r in raw]
        return [np.where(np.isnan(y), (np.asarray(d) - self.mean) / self.std, y) for y, d in zip(ys, done)]

    def impute(self, y: np.ndarray) -> np.ndarray:
        return self.impute_many([y])[0]

    def sample_many(self, ys: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> list[np.ndarray]:
        inner = self.inner
        if hasattr(inner, "sample_many_z") and hasattr(inner, "mean") and hasattr(inner, "std"):
            gm, gs = np.asarray(inner.mean), np.asarray(inner.std)
            got = inner.sample_many_z([(y * self.std + self.mean - gm) / gs for y in ys], n, rng)
            back = [(np.asarray(g) * gs + gm - self.mean) / self.std for g in got]
        else:
            back = [(np.asarray(inner.sample(y * self.std + self.mean, n, rng)) - self.mean) / self.std for y in ys]
        return [np.where(np.isnan(y)[None], b, y[None]) for y, b in zip(ys, back)]


def in_z_units(filler: Any, mean: np.ndarray, std: np.ndarray) -> Any:
    """``filler`` as used here: a raw-unit filler (one with ``sensors``, ``mean`` and ``std``, like the generator) wrapped."""
    if all(hasattr(filler, a) for a in ("sensors", "mean", "std")) and not isinstance(filler, RawUnits):
        return RawUnits(filler, mean, std)
    return filler


class KalmanSampler:
    """Non-generative stand-in for a generator: Kalman LLT smoother fill plus independent noise.

    Each hidden value is the smoother's level plus N(0, predictive std) drawn
    independently (Kalman plus sampled noise), so samples carry sensor
    noise but no cross-sensor or temporal noise structure. Observed values stay as they are.
    The standard deviation is capped at ``sqrt(r + 1)``: a gap at a window's start has
    no measured sample before it, and the local-linear-trend variance extrapolated
    backwards from the slope grows without bound (tens of z-units), while no fill needs
    to be more uncertain than the sensor's whole training spread (1 in z-units) plus noise.
    """

    VAR_CAP = 1.0

    name = "kalman_noise"

    def __init__(self, smoother: KalmanLLT) -> None:
        self.smoother = smoother
        self.version = "kalman-llt+noise"

    def impute(self, y: np.ndarray) -> np.ndarray:
        return self.smoother.impute(y)

    def impute_many(self, ys: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.smoother.impute_many(ys)

    def sample(self, y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        mean, std = self.smoother.impute(y), self.smoother.impute_std(y)
        d = np.shape(mean)[-1] if np.ndim(mean) == 2 else 1
        r = np.broadcast_to(self.smoother.r, (d,)) if np.ndim(mean) == 2 else float(np.ravel(self.smoother.r)[0])
        std = np.minimum(std, np.sqrt(r + self.VAR_CAP))
        return mean[None] + std[None] * rng.standard_normal((n, *mean.shape))


# -- TSTR -----------------------------------------------------------------------------
def anchors(length: int, every: int) -> np.ndarray:
    """1.0 at the real samples a synthetic engine keeps: every ``every``-th cycle from the first, and the last."""
    keep = (np.arange(length) % every == 0).astype(float)
    keep[-1] = 1.0
    return keep


def synthetic_series(imputer: Any, series: dict[int, np.ndarray], anchor_every: int, window: int,
                     rng: np.random.Generator) -> dict[int, np.ndarray]:
    """One synthetic copy of each engine: anchors kept, everything else sampled window by window.

    The last window of an engine is a full ``window`` long (overlapping the one before;
    only its new samples are used): a short stub with a single anchor would ask the
    sampler to extrapolate a trend from one value.
    """
    pieces: list[tuple[int, int, int, np.ndarray]] = []  # unit, window start, first sample this window owns, window
    for unit, z in series.items():
        masked = np.where(anchors(len(z), anchor_every)[:, None] > 0, z, np.nan)
        for own in range(0, len(z), window):
            start = max(0, min(own, len(z) - window))  # a full window at the end too (overlapping), not a stub
            pieces.append((unit, start, own, masked[start:start + window]))
    drawn = draw(imputer, [p[3] for p in pieces], 1, rng)
    out = {u: np.array(z, dtype=float, copy=True) for u, z in series.items()}
    for (unit, start, own, w), d in zip(pieces, drawn):
        stop = start + len(w)
        out[unit][own:stop] = np.where(np.isnan(w), d[0], w)[own - start:]
    return out


def write_subset(directory: Path, subset: str, train: Sequence[cmapss.Cycle], test: Sequence[cmapss.Cycle],
                 test_rul: dict[int, int]) -> Path:
    """Rows in NASA's file layout (values to 4 decimals, the data's precision) so :func:`load_subset` reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = cmapss.subset_files(subset, directory)
    for kind, rows in (("train", train), ("test", test)):
        with paths[kind].open("w") as handle:
            for r in sorted(rows, key=lambda r: (r.unit, r.cycle)):
                values = [r.settings[c] for c in cmapss.SETTING_COLUMNS] + [r.sensors[c] for c in cmapss.SENSOR_COLUMNS]
                handle.write(f"{r.unit} {r.cycle} " + " ".join(f"{v:.4f}" for v in values) + "\n")
    paths["RUL"].write_text("".join(f"{test_rul[u]}\n" for u in sorted({r.unit for r in test})))
    return directory


def tstr(imputer: Any, fd: cmapss.CmapssSubset, mean: np.ndarray, std: np.ndarray, *, limit: int | None,
         anchor_every: int, epochs: int, folds: int, seed: int, progress: Progress | None = None) -> dict[str, Any]:
    """TSTR and TRTR RMSE (prior + twin arm, real test engines, last cycle) with one training budget."""
    from twinstream.models.prior_train import train_prior

    say = progress or (lambda _: None)
    train = engines(fd.train, mean, std, limit)
    test_rows = [r for r in fd.test if limit is None or r.unit <= limit]
    train_rows = [r for rs in train.rows.values() for r in rs]
    say(f"TSTR: sampling {len(train.series)} synthetic training engines (1 real sample in {anchor_every} kept)")
    synth = synthetic_series(imputer, train.series, anchor_every, window_length(imputer), np.random.default_rng([seed, 7]))
    synth_rows = [with_values(r, z, mean, std) for u, rs in train.rows.items() for r, z in zip(rs, synth[u])]
    hidden = ~np.concatenate([anchors(len(z), anchor_every) > 0 for z in train.series.values()])
    truth = np.concatenate(list(train.series.values()))[hidden]
    gen = np.concatenate(list(synth.values()))[hidden]
    out: dict[str, Any] = {"anchor_every": anchor_every, "epochs": epochs, "folds": folds, "train_engines": len(train.rows),
                           "synthetic_share": float(hidden.mean()),
                           "synthetic_vs_real_mae": float(np.mean(np.abs(gen - truth))),
                           "synthetic_std_ratio": float(np.std(np.diff(gen, axis=0)) / np.std(np.diff(truth, axis=0)))}
    key = (fd.name, len(fd.train), len(fd.test), limit, epochs, folds, seed)
    with tempfile.TemporaryDirectory(prefix="synth-rul-") as tmp:
        for name, rows in (("tstr", synth_rows), ("trtr", train_rows)):
            if name == "trtr" and key in _TRTR:  # the real-data reference does not depend on the filler
                say("TRTR: same data, budget and seed as before, reusing its result")
                out.update(_TRTR[key])
                continue
            data_dir = write_subset(Path(tmp) / name / "data", fd.name, rows, test_rows, fd.test_rul)
            say(f"{name.upper()}: training the prior ({epochs} epochs, {folds} folds)")
            manifest = train_prior(Path(tmp) / name / "prior", fd.name, data_dir, epochs=epochs, folds=folds, seed=seed,
                                   progress=lambda m, n=name: say(f"{n.upper()}: {m}"))
            real = _real_subset(fd, limit)
            events = fleet_events(real.train, real.test)
            say(f"{name.upper()}: replaying {len(events)} real events through the prior + twin arm")
            arm = run_arm("prior_twin", arm_params(str(Path(tmp) / name / "prior"))["prior_twin"], events, seed)
            scores = score_arm(arm, real)
            out[f"{name}_rmse"] = scores["rmse"]
            out[f"{name}_rmse_capped_truth"] = scores["rmse_capped_truth"]
            out[f"{name}_prior_oof_rmse"] = manifest.metrics["twin_oof_rmse"]
            if name == "trtr":
                _TRTR[key] = {k: v for k, v in out.items() if k.startswith("trtr_")}
    out["ratio"] = out["tstr_rmse"] / out["trtr_rmse"]
    return out


def _real_subset(fd: cmapss.CmapssSubset, limit: int | None) -> cmapss.CmapssSubset:
    if limit is None:
        return fd
    keep = lambda rows: [r for r in rows if r.unit <= limit]  # noqa: E731
    return cmapss.CmapssSubset(fd.name, keep(fd.train), keep(fd.test), {u: v for u, v in fd.test_rul.items() if u <= limit},
                               {u: v for u, v in fd.train_life.items() if u <= limit})


# -- cold start -----------------------------------------------------------------------
def cold_start(imputer: Any, fd: cmapss.CmapssSubset, mean: np.ndarray, std: np.ndarray, *, limit: int | None,
               ks: Sequence[int], horizon: int, samples: int, weight: float, seed: int, prior: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    """Error at cycle ``k`` of the plain twin vs the twin augmented with synthetic continuations."""
    say = progress or (lambda _: None)
    test = engines(fd.test, mean, std, limit)
    params = arm_params(prior)["prior_twin"]
    out: dict[str, Any] = {"horizon": horizon, "samples": samples, "weight": weight, "by_k": {}}
    for k in ks:
        units = [u for u, z in test.series.items() if len(z) >= k + horizon]
        say(f"cold start k={k}: {len(units)} engines, {samples} continuations of {horizon} cycles each")
        windows = [np.vstack([test.series[u][:k], np.full((horizon, len(SENSORS)), np.nan)]) for u in units]
        drawn = draw(imputer, windows, samples, np.random.default_rng([seed, 11, k]))
        truth, plain, aug, ahead = [], [], [], []
        for u, d in zip(units, drawn):
            rows = test.rows[u]
            twin = Twin(f"test-{u}", make_learner("prior-twin", seed=seed, **params))
            for r in rows[:k]:
                p = twin.step(r.cycle, r.sensors, None)
            plain.append(p.value)
            snapshot = twin.to_bytes()
            aug.append(float(np.mean([_look_ahead(snapshot, [sensors_of(z, mean, std) for z in s[k:]], k, horizon) for s in d])))
            ahead.append(_look_ahead(snapshot, [r.sensors for r in rows[k:k + horizon]], k, horizon))
            truth.append(min(float(fd.test_rul[u] + rows[-1].cycle - k), CAP))
        blend = [weight * a + (1 - weight) * p for a, p in zip(aug, plain)]
        out["by_k"][str(k)] = {
            "engines": len(units),
            "engines_truth_below_cap": sum(t < CAP for t in truth),  # the rest are right whenever they say 125
            "rmse_plain_below_cap": _rmse_where(plain, truth),
            "rmse_augmented_below_cap": _rmse_where(aug, truth),
            "rmse_real_lookahead_below_cap": _rmse_where(ahead, truth),
            "rmse_plain": rmse(plain, truth),
            "rmse_augmented": rmse(aug, truth),
            "rmse_blend": rmse(blend, truth),
            "rmse_real_lookahead": rmse(ahead, truth),
            "helps": rmse(aug, truth) < rmse(plain, truth),
        }
    return out


def _rmse_where(pred: Sequence[float], truth: Sequence[float]) -> float | None:
    """RMSE on the engines whose capped truth is below the cap (None when there are none)."""
    sel = [(p, t) for p, t in zip(pred, truth) if t < CAP]
    return rmse([p for p, _ in sel], [t for _, t in sel]) if sel else None


def _look_ahead(snapshot: bytes, future: Sequence[dict[str, float]], k: int, horizon: int) -> float:
    """RUL at cycle ``k`` estimated from a copy of the twin fed ``future`` (its estimate at ``k + horizon``, plus ``horizon``)."""
    twin = Twin.from_bytes(snapshot)
    value = math.nan
    for i, sensors in enumerate(future, start=1):
        value = twin.step(k + i, sensors, None).value
    return min(value + horizon, CAP)
