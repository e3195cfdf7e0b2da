"""Streaming evaluation on C-MAPSS: replay a fleet as the live system would see it.

Why this protocol and not a train/test fit: a twin platform never sees a dataset, it
sees events. So the replay is one pass in fleet time order (every engine's cycle 1,
then every engine's cycle 2, ...), each event goes through :class:`~twinstream.models.twin.Twin`
exactly as in the worker, and labels appear only when production would know them: a
training engine's remaining life becomes known when it fails (its history is then
released to the fleet model), test engines are never labelled. The true RUL of a test
engine is used only to score, at its last cycle (and, in hindsight, for the cold-start
curve). Three arms run the same events: the prior alone, the twin without the prior
(online fleet + personal learning only) and prior + twin; a fourth arm shows prior +
twin with the online fleet model correcting it.

>>> tiny = cmapss.load_subset("FD001")
>>> events = fleet_events(tiny.train[:400], tiny.test[:300])  # engines 1-2 of each
>>> [(e.cycle, e.entity) for e in events[:3]]
[(1, 'train-1'), (1, 'train-2'), (1, 'test-1')]
>>> phm_score([10.0, -13.0], [0.0, 0.0]) == (math.exp(1.0) - 1) + (math.exp(1.0) - 1)
True
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twinstream.datasets import cmapss
from twinstream.models.fleet import drop_fleet
from twinstream.models.prior_twin import PriorTwin
from twinstream.models.registry import LEARNERS, make_learner
from twinstream.models.twin import Twin

CAP = 125.0
FEW, MANY = 50, 150  # "few cycles seen" / "many cycles seen" thresholds for test engines


@dataclass(frozen=True, slots=True)
class Event:
    """One telemetry event of the replay."""

    cycle: int
    entity: str
    sensors: dict[str, float]
    failed: bool  # a training engine's last cycle: its labels are released now
    synthetic: frozenset[str] = frozenset()  # sensors whose values are gap fills
    absorb: bool = False  # a fill of a missed cycle delivered after later ones: Twin.absorb, no prediction


def fleet_events(fleet_rows: Iterable[cmapss.Cycle], test_rows: Iterable[cmapss.Cycle]) -> list[Event]:
    """Training (fleet) and test engines interleaved by cycle: the order production sees."""
    last: dict[str, int] = {}
    tagged = [("train", r) for r in fleet_rows] + [("test", r) for r in test_rows]
    for kind, r in tagged:
        key = f"{kind}-{r.unit}"
        last[key] = max(last.get(key, 0), r.cycle)
    tagged.sort(key=lambda kr: (kr[1].cycle, kr[0] != "train", kr[1].unit))
    return [
        Event(r.cycle, f"{kind}-{r.unit}", r.sensors, kind == "train" and r.cycle == last[f"{kind}-{r.unit}"])
        for kind, r in tagged
    ]


def rmse(pred: list[float], true: list[float]) -> float:
    return math.sqrt(sum((p - t) ** 2 for p, t in zip(pred, true)) / len(pred)) if pred else math.nan


def phm_score(pred: list[float], true: list[float]) -> float:
    """PHM08 score: late predictions (d > 0) cost exp(d/10) - 1, early ones exp(-d/13) - 1."""
    return sum(math.exp(-d / 13.0) - 1.0 if d < 0 else math.exp(d / 10.0) - 1.0 for d in (p - t for p, t in zip(pred, true)))


def arm_params(prior_dir: str | None) -> dict[str, dict[str, Any]]:
    """Learner parameters of the three arms (all are :class:`PriorTwin`, so one code path)."""
    prior = prior_dir or "bundled"
    return {
        "prior": {"prior": prior, "personal": False},
        "twin": {"prior": None, "fleet": "eval:twin"},
        "prior_twin": {"prior": prior},
        "prior_twin_fleet": {"prior": prior, "fleet": "eval:prior_twin_fleet"},
    }


@dataclass
class ArmResult:
    """What one arm produced for the test engines."""

    name: str
    last: dict[str, tuple[int, float, float, float]] = field(default_factory=dict)  # entity -> (cycles, value, lower, upper)
    trajectory: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    events: int = 0
    state_bytes: list[int] = field(default_factory=list)
    drift_alarms: int = 0


def run_arm(name: str, params: dict[str, Any], events: list[Event], seed: int = 0) -> ArmResult:
    """Replay ``events`` through fresh twins of one arm."""
    if params.get("fleet"):
        drop_fleet(params["fleet"])
    twins: dict[str, Twin] = {}
    history: dict[str, list[dict[str, float]]] = defaultdict(list)
    result = ArmResult(name)
    start = time.perf_counter()
    for ev in events:
        twin = twins.get(ev.entity)
        if twin is None:
            twin = twins[ev.entity] = Twin(ev.entity, make_learner(PriorTwin.family, seed=seed, **params))
        is_train = ev.entity.startswith("train-")
        if ev.absorb:
            if not twin.absorb(ev.cycle, ev.sensors):
                raise ValueError(f"{ev.entity}: cycle {ev.cycle} is not a missed cycle the twin can absorb")
            continue
        p = twin.step(ev.cycle, ev.sensors, target=0.0 if ev.failed else None, synthetic=ev.synthetic)
        if is_train:
            history[ev.entity].append(ev.sensors)
            if ev.failed:  # failure: the whole history is labelled now; the fleet learns from it
                n = len(history[ev.entity])
                twin.learner.release([(m, float(n - i)) for i, m in enumerate(history.pop(ev.entity), start=1)])
        else:
            result.trajectory.setdefault(ev.entity, []).append(p.value)
            result.last[ev.entity] = (twin.updates, p.value, p.lower, p.upper)
    result.seconds = time.perf_counter() - start
    result.events = len(events)
    tests = [t for e, t in twins.items() if e.startswith("test-")]
    result.state_bytes = [t.learner.state_bytes() for t in tests]
    result.drift_alarms = sum(getattr(t.learner, "drift_alarms", 0) for t in tests)
    if params.get("fleet"):
        drop_fleet(params["fleet"])
    return result


def score_arm(arm: ArmResult, test: cmapss.CmapssSubset, reference: ArmResult | None = None) -> dict[str, Any]:
    """RMSE (true RUL, and true RUL capped at 125), PHM08, error by cycles seen, interval coverage."""
    rows = [(arm.last[e], test.test_rul[int(e.split("-")[1])], e) for e in sorted(arm.last)]
    pred = [r[0][1] for r in rows]
    true = [float(r[1]) for r in rows]
    groups = {"few": lambda n: n < FEW, "mid": lambda n: FEW <= n <= MANY, "many": lambda n: n > MANY}
    out: dict[str, Any] = {
        "rmse": rmse(pred, true),
        "rmse_capped_truth": rmse(pred, [min(t, CAP) for t in true]),
        "phm_score": phm_score(pred, true),
        "mae": sum(abs(p - t) for p, t in zip(pred, true)) / len(pred),
        "coverage": sum(r[0][2] <= t <= r[0][3] for r, t in zip(rows, true)) / len(rows),
        "mean_width": sum(r[0][3] - r[0][2] for r in rows) / len(rows),
        "engines": len(rows),
        "seconds": arm.seconds,
        "updates_per_s": arm.events / arm.seconds if arm.seconds else math.nan,
        "state_bytes_mean": sum(arm.state_bytes) / len(arm.state_bytes),
        "state_bytes_max": max(arm.state_bytes),
        "drift_alarms": arm.drift_alarms,
    }
    for g, test_fn in groups.items():
        sel = [(p, t) for p, t, r in zip(pred, true, rows) if test_fn(r[0][0])]
        out[f"rmse_{g}"] = rmse([p for p, _ in sel], [t for _, t in sel])
        out[f"engines_{g}"] = len(sel)
        if reference is not None:
            changes = [abs(arm.last[r[2]][1] - reference.last[r[2]][1]) for r in rows if test_fn(r[0][0])]
            out[f"change_vs_prior_{g}"] = sum(changes) / len(changes) if changes else math.nan
    return out


def cold_start_curve(arm: ArmResult, test: cmapss.CmapssSubset, bucket: int = 10) -> list[tuple[int, float, int]]:
    """(cycles seen, RMSE against true RUL capped at 125, engines) per bucket of cycles seen."""
    errs: dict[int, list[float]] = defaultdict(list)
    for e, traj in arm.trajectory.items():
        unit, n = int(e.split("-")[1]), len(traj)
        for i, v in enumerate(traj, start=1):
            errs[(i - 1) // bucket].append((v - min(test.test_rul[unit] + n - i, CAP)) ** 2)
    return [(b * bucket + bucket, math.sqrt(sum(v) / len(v)), len(v)) for b, v in sorted(errs.items())]


def benchmark_learners(n: int = 3000) -> list[dict[str, Any]]:
    """Speed and size of every registered learner on FD001 rows (plus the prior-less twin)."""
    fd = cmapss.load_subset("FD001")
    rows = [(dict(r.sensors), float(fd.train_rul_at(r))) for r in fd.train[:n]]
    cases = [(name, {}) for name in sorted(LEARNERS)] + [(PriorTwin.family, {"prior": None})]
    out = []
    for name, params in cases:
        learner = make_learner(name, **params)
        xs = [learner.observe_one(m) for m, _ in rows]
        start = time.perf_counter()
        for x, (_, y) in zip(xs, rows):
            learner.predict_one(x)
            learner.learn_one(x, y)
        lp = len(rows) / (time.perf_counter() - start)
        twin = Twin("bench", make_learner(name, **params))
        start = time.perf_counter()
        for seq, (m, y) in enumerate(rows):
            twin.step(seq, m, y)
        step = len(rows) / (time.perf_counter() - start)
        label = name + ("" if not params else " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")")
        out.append({"learner": label, "learn_predict_per_s": lp, "twin_step_per_s": step, "state_bytes": twin.learner.state_bytes()})
    return out


def evaluate(
    subset: str = "FD001",
    train_subset: str | None = None,
    data_dir: Path | None = None,
    prior_dir: str | None = None,
    seed: int = 0,
    limit_engines: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the three arms and score them; returns the JSON-ready report (without plots)."""
    train_subset = train_subset or subset
    test = cmapss.load_subset(subset, data_dir)
    fleet = test if train_subset == subset else cmapss.load_subset(train_subset, data_dir)
    fleet_rows, test_rows = fleet.train, test.test
    if limit_engines is not None:
        fleet_rows = [r for r in fleet_rows if r.unit <= limit_engines]
        test_rows = [r for r in test_rows if r.unit <= limit_engines]
    events = fleet_events(fleet_rows, test_rows)
    arms: dict[str, ArmResult] = {}
    for name, params in arm_params(prior_dir).items():
        if progress:
            progress(f"arm {name}: {len(events)} events")
        arms[name] = run_arm(name, params, events, seed)
    scores = {name: score_arm(arm, test, arms["prior"] if name != "prior" else None) for name, arm in arms.items()}
    best = scores["prior_twin"]
    from twinstream.models.prior import bundled_prior_dir, load_prior

    manifest = load_prior(prior_dir or bundled_prior_dir()).manifest
    return {
        "subset": subset,
        "train_subset": train_subset,
        "prior": prior_dir or "bundled",
        "protocol": "one pass, fleet time order, train labels released at failure, test never labelled",
        "events": len(events),
        "arms": scores,
        "cold_start": {name: cold_start_curve(arm, test) for name, arm in arms.items()},
        "trajectories": {name: arm.trajectory for name, arm in arms.items()},
        "test_truth": {e: test.test_rul[int(e.split("-")[1])] for e in arms["prior"].last},
        "prior_manifest": {"prior_version": manifest.prior_version, "weights_sha256": manifest.weights_sha256, "metrics": manifest.metrics},
        "state_bytes_per_twin": best["state_bytes_mean"],
        "updates_per_s": best["updates_per_s"],
    }
