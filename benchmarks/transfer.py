"""Cross-population transfer of the RUL prior, measured on splits of FD001's own training engines.

Why splits of the training engines: the question is how a prior trained on one
population does on another, and FD001's test set must not be used to choose anything.
Every training engine runs to failure, so its true RUL is known at every cycle and
any of them can be scored. The splits (each with several seeds; a seed changes which
engines train the prior and the prior's initialisation):

- ``in_population``: a random 40 engines train the prior, 50 other random engines are
  scored (the reference: same population);
- ``lifetime``: a random 40 of the 50 shortest-lived engines train the prior, the 50
  longest-lived are scored (they live longer than anything the prior saw);
- ``reversed_drift``: the ``in_population`` priors, scored on the same engines with the
  drift of one sensor group reversed: each reading of a group sensor is mirrored about
  the engine's own baseline (mean of its first 20 cycles), so that group moves the other
  way as the engine wears (a fault mode the fleet never showed);
- ``shifted``: the same, with the group's readings shifted by 3 training standard
  deviations (a recalibrated or differently built sensor package).

Arms, all the real learner (:class:`~twinstream.models.prior_twin.PriorTwin`) on
every scored engine, cycle by cycle, no labels: ``prior`` (the stateless prior head),
``prior_twin`` (prior + twin head as shipped, with the out-of-domain fallback whose
thresholds :mod:`fallback_cv` chooses; ``fallback_share``: cycles answered in fallback,
``dropped_share``: cycles where the prior was not used), ``prior_twin_hard_fallback`` (the
earlier rule: drop the prior above 30% of the features outside, nothing else),
``prior_twin_heads`` (no fallback at all), ``*_labels`` (the shipped and the earlier twin
told the true RUL every ``LABEL_EVERY``-th cycle, scored on every cycle), and a reference
that knows nothing of the engine, ``constant`` (the training rows' mean capped RUL); and,
as a measurement only, ``prior_twin_or_constant``: ``prior_twin`` in the prior's domain,
the constant out of it. RMSE is against the true RUL at every cycle with true RUL in
[5, 145] (the range of the FD001 test RULs: every cycle a test engine could be cut at).
``in_domain_share`` is the share of those cycles whose features lie within the prior's
training ranges.

The domain's tolerance (quantile margin, share of features allowed outside) is the
one design parameter chosen here, by 5-fold engine-level cross-validation on all 100
training engines: the least permissive setting that keeps held-out training engines
in domain on at least 95% of rows (``domain_cv`` in the JSON).

    python benchmarks/transfer.py --json benchmarks/results/transfer.json   # ~15 min on one core
    python benchmarks/transfer.py --table benchmarks/results/transfer.json  # the docs table from the JSON
    python benchmarks/transfer.py --docs docs/learning.md --table benchmarks/results/transfer.json  # its docs section
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets.cmapss import CmapssSubset, load_subset
from twinstream.models.domain import DomainBounds
from twinstream.models.features import feature_names
from twinstream.models.prior_train import DOMAIN_QUANTILES, engine_features, train_prior
from twinstream.models.prior_twin import ABANDON_PRIOR_ABOVE, FALLBACK_MARGIN, FALLBACK_PERSIST, MASK_OUTSIDE_ABOVE, PriorTwin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fallback_cv import fallback_cv  # noqa: E402  (a sibling script module)
from transfer_docs import table, write_section  # noqa: E402

GROUP = ("s2", "s3", "s4", "s11")  # total temperatures at LPC, HPC, LPT outlet and HPC static pressure: rise with wear
MARGINS = (0.0, 0.1, 0.25, 0.5)
MAX_OUTSIDE = (0.0, 0.02, 0.05, 0.1)
TARGET_SHARE = 0.95
BASELINE_N = 20
SHIFT_SD = 3.0
LOW, HIGH = 5, 145


def domain_cv(data: CmapssSubset, folds: int = 5, seed: int = 0) -> dict[str, Any]:
    """Held-out in-domain share per (margin, max_outside), engine-level folds of the training engines."""
    x, _, units = engine_features(data)
    names = feature_names()
    ids = np.random.default_rng(seed).permutation(np.unique(units))
    fold_of = {u: i % folds for i, u in enumerate(ids)}
    fold = np.array([fold_of[u] for u in units])
    grid = []
    for margin in MARGINS:
        for max_out in MAX_OUTSIDE:
            shares = []
            for k in range(folds):
                bounds = DomainBounds.fit(x[fold != k], names, DOMAIN_QUANTILES, margin, max_out)
                held = x[fold == k]
                shares.append(float(np.mean([bounds.check(row)[0] for row in held])))
            grid.append({"margin": margin, "max_outside": max_out, "held_out_in_domain_share": statistics.mean(shares), "per_fold": shares})
    ok = [g for g in grid if g["held_out_in_domain_share"] >= TARGET_SHARE]
    chosen = min(ok, key=lambda g: (g["held_out_in_domain_share"], g["margin"], g["max_outside"]))
    return {
        "folds": folds,
        "target_share": TARGET_SHARE,
        "quantiles": list(DOMAIN_QUANTILES),
        "grid": grid,
        "chosen": {
            "margin": chosen["margin"],
            "max_outside": chosen["max_outside"],
            "held_out_in_domain_share": chosen["held_out_in_domain_share"],
        },
    }


def transform(sensors: dict[str, float], baseline: dict[str, float], mode: str, sd: dict[str, float]) -> dict[str, float]:
    out = dict(sensors)
    for s in GROUP:
        if mode == "reversed_drift":
            out[s] = 2.0 * baseline[s] - sensors[s]
        elif mode == "shifted":
            out[s] = sensors[s] + SHIFT_SD * sd[s]
    return out


HARD_FALLBACK = {"mask_outside_above": 1.0, "abandon_prior_above": 0.3, "alarm_fallback": False, "fallback_persist": 1}  # the earlier rule
NO_FALLBACK = {"mask_outside_above": 1.0, "abandon_prior_above": 1.0, "alarm_fallback": False}
LABEL_EVERY = 20  # the labelled arms: the twin is told its true RUL every 20th cycle


def score(
    prior_dir: Path,
    data: CmapssSubset,
    units: list[int],
    bounds: DomainBounds,
    mode: str,
    sd: dict[str, float],
    constant: float,
    rule: dict[str, float],
) -> dict[str, float]:
    """Every arm on every scored engine; RMSE over cycles with true RUL in [LOW, HIGH], and the in-domain share.

    ``constant`` is the reference that knows nothing of the engine: the mean capped RUL of the training rows.
    ``rule``: the fallback thresholds of the ``prior_twin`` arms (the cross-validated choice).
    """
    errs: dict[str, list[float]] = {
        "prior": [],
        "prior_twin": [],
        "prior_twin_hard_fallback": [],
        "prior_twin_heads": [],
        "constant": [],
        "prior_twin_or_constant": [],
        "prior_twin_labels": [],
        "prior_twin_hard_fallback_labels": [],
    }
    fallback: list[bool] = []
    dropped: list[bool] = []
    alarm: list[bool] = []
    inside: list[bool] = []
    errs_in: list[float] = []
    errs_out: list[float] = []
    by_unit: dict[int, list] = {}
    for r in data.train:
        by_unit.setdefault(r.unit, []).append(r)
    for u in units:
        rows = sorted(by_unit[u], key=lambda r: r.cycle)
        baseline = {s: float(np.mean([r.sensors[s] for r in rows[:BASELINE_N]])) for s in GROUP}
        d = str(prior_dir)
        learners = {
            "prior": PriorTwin(prior=d, personal=False, **NO_FALLBACK),
            "prior_twin": PriorTwin(prior=d, **rule),
            "prior_twin_hard_fallback": PriorTwin(prior=d, **HARD_FALLBACK),
            "prior_twin_heads": PriorTwin(prior=d, **NO_FALLBACK),
            "prior_twin_labels": PriorTwin(prior=d, **rule),
            "prior_twin_hard_fallback_labels": PriorTwin(prior=d, **HARD_FALLBACK),
        }
        for r in rows:
            sensors = transform(r.sensors, baseline, mode, sd)
            true = float(data.train_rul_at(r))
            preds = {}
            x = None
            for name, learner in learners.items():
                xi = learner.observe_one(sensors)
                preds[name] = learner.predict_one(xi)
                if name.endswith("_labels") and r.cycle % LABEL_EVERY == 0:
                    learner.learn_one(xi, true)
                if name == "prior_twin":
                    x = xi
                    state = learner.domain_state
                    far = state is not None and state[1] > learner.abandon_prior_above
                    falls_back, in_alarm = learner.fallback, learner.in_alarm
            if not LOW <= true <= HIGH:
                continue
            ok = bounds.check_named(x)[0]
            preds["constant"] = constant
            preds["prior_twin_or_constant"] = preds["prior_twin"] if ok else constant
            for name, p in preds.items():
                errs[name].append((p - true) ** 2)
            inside.append(ok)
            dropped.append(far)
            fallback.append(falls_back)
            alarm.append(in_alarm)
            (errs_in if ok else errs_out).append((preds["prior_twin"] - true) ** 2)
    out = {f"{name}_rmse": math.sqrt(statistics.mean(e)) for name, e in errs.items()}
    out["in_domain_share"] = float(np.mean(inside))
    out["fallback_share"] = float(np.mean(fallback))
    out["dropped_share"] = float(np.mean(dropped))
    out["alarm_share"] = float(np.mean(alarm))
    out["prior_twin_rmse_in_domain"] = math.sqrt(statistics.mean(errs_in)) if errs_in else math.nan
    out["prior_twin_rmse_out_of_domain"] = math.sqrt(statistics.mean(errs_out)) if errs_out else math.nan
    out["scored_cycles"] = float(len(inside))
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.mean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def run(seeds: int, epochs: int, folds: int, log=print) -> dict[str, Any]:  # noqa: ANN001
    data = load_subset("FD001")
    start = time.perf_counter()
    cv = domain_cv(data)
    margin, max_out = cv["chosen"]["margin"], cv["chosen"]["max_outside"]
    log(f"domain CV: margin {margin}, max_outside {max_out}, held-out in domain {cv['chosen']['held_out_in_domain_share']:.3f}")
    with tempfile.TemporaryDirectory(prefix="fallback-cv-") as tmp:
        fb = fallback_cv(data, Path(tmp), epochs=epochs, prior_folds=folds, log=log)
    rule = {k: fb["chosen"][k] for k in ("fallback_margin", "fallback_persist", "mask_outside_above", "abandon_prior_above")}
    shipped = {
        "fallback_margin": FALLBACK_MARGIN,
        "fallback_persist": FALLBACK_PERSIST,
        "mask_outside_above": MASK_OUTSIDE_ABOVE,
        "abandon_prior_above": ABANDON_PRIOR_ABOVE,
    }
    fb["shipped_defaults"] = shipped
    fb["shipped_defaults_are_cv_choice"] = shipped == rule
    log(f"fallback CV: {rule} (mean held-out RMSE {fb['chosen']['mean_rmse']:.2f}); shipped defaults {shipped}")
    life = data.train_life
    by_life = sorted(life, key=lambda u: (life[u], u))
    short, long_ = by_life[:50], by_life[50:]
    names = feature_names()
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in ("in_population", "lifetime", "reversed_drift", "shifted")}
    with tempfile.TemporaryDirectory(prefix="transfer-") as tmp:
        for seed in range(seeds):
            rng = np.random.default_rng(1000 + seed)
            perm = [int(u) for u in rng.permutation(sorted(life))]
            plans = {
                "in_population": (sorted(perm[50:90]), sorted(perm[:50]), ("in_population", "reversed_drift", "shifted")),
                "lifetime": (sorted(int(u) for u in rng.choice(short, 40, replace=False)), sorted(long_), ("lifetime",)),
            }
            for plan, (train_units, scored, modes) in plans.items():
                out = Path(tmp) / f"{plan}-{seed}"
                log(f"seed {seed}, {plan}: training the prior on {len(train_units)} engines ({time.perf_counter() - start:.0f} s)")
                manifest = train_prior(out, units=set(train_units), epochs=epochs, folds=folds, seed=seed)
                sub = CmapssSubset(data.name, [r for r in data.train if r.unit in set(train_units)], [], {}, life)
                x, y, _ = engine_features(sub)
                bounds = DomainBounds.fit(x, names, DOMAIN_QUANTILES, margin, max_out)
                same_as_manifest = json.loads(json.dumps(bounds.to_manifest())) == manifest.domain
                sd = {s: float(np.std([r.sensors[s] for r in sub.train])) for s in GROUP}
                for mode in modes:
                    result = score(
                        out, data, scored, bounds, "none" if mode in ("in_population", "lifetime") else mode, sd, float(np.mean(y)), rule
                    )
                    result.update(
                        seed=seed,
                        train_engines=len(train_units),
                        scored_engines=len(scored),
                        manifest_domain_is_cv_choice=float(same_as_manifest),
                    )
                    runs[mode].append(result)
                    log(
                        f"  {mode}: prior {result['prior_rmse']:.2f}, prior+twin {result['prior_twin_rmse']:.2f} "
                        f"(heads {result['prior_twin_heads_rmse']:.2f}), in domain {result['in_domain_share']:.3f}, "
                        f"fallback {result['fallback_share']:.3f}, earlier rule {result['prior_twin_hard_fallback_rmse']:.2f}"
                    )
    splits = {}
    for mode, results in runs.items():
        keys = [k for k in results[0] if k.endswith("_rmse") or k.endswith("_share") or "_rmse_" in k]
        splits[mode] = {"seeds": results, **{k: summary([r[k] for r in results]) for k in keys}}
    return {
        "protocol": "FD001 training engines only; prior trained on a split's training engines, scored engines run through "
        "PriorTwin cycle by cycle without labels (the *_labels arms: the true RUL every "
        f"{LABEL_EVERY}th cycle); RMSE against true RUL over cycles with true RUL in [5, 145]",
        "group": list(GROUP),
        "shift_sd": SHIFT_SD,
        "baseline_cycles": BASELINE_N,
        "prior_training": {"epochs": epochs, "folds": folds, "hidden": 128, "prior_hidden": 64},
        "domain_cv": cv,
        "fallback_cv": fb,
        "splits": splits,
        "label_every": LABEL_EVERY,
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="Write the report here.")
    parser.add_argument("--table", type=Path, help="Print the docs table of an existing report and exit.")
    parser.add_argument("--docs", type=Path, help="With --table REPORT: write its section into this markdown file.")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=100, help="Training epochs per ensemble member (as the bundled prior).")
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args(argv)
    if args.table:
        report = json.loads(args.table.read_text())
        if args.docs:
            write_section(args.docs, report)
        print(table(report))
        return 0
    report = run(args.seeds, args.epochs, args.folds, log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
