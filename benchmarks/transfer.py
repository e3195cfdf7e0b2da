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
        "seconds": time.perf_counter() - start,
    }


LABELS = {
    "in_population": "same population (random engines)",
    "lifetime": "short-lived → long-lived engines",
    "reversed_drift": f"drift of {', '.join(GROUP)} reversed",
    "shifted": f"{', '.join(GROUP)} shifted by {SHIFT_SD:g} sd",
}


def table(report: dict[str, Any]) -> str:
    """The markdown table docs/learning.md shows (numbers exactly as in the JSON, rounded for reading)."""

    def cell(s: dict[str, float], digits: int = 2) -> str:
        return f"{s['mean']:.{digits}f} ± {s['sd']:.{digits}f}"

    lines = [
        "| split | prior | heads, no fallback | earlier rule | prior + twin | constant | in domain | in fallback "
        "| prior dropped | labels every 20th cycle: earlier rule → prior + twin |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, s in report["splits"].items():
        n = len(s["seeds"])
        lines.append(
            f"| {LABELS[mode]} ({n} seeds) | {cell(s['prior_rmse'])} | {cell(s['prior_twin_heads_rmse'])} | "
            f"{cell(s['prior_twin_hard_fallback_rmse'])} | **{cell(s['prior_twin_rmse'])}** | "
            f"{cell(s['constant_rmse'])} | {cell(s['in_domain_share'], 3)} | {cell(s['fallback_share'], 3)} | "
            f"{cell(s['dropped_share'], 3)} | {s['prior_twin_hard_fallback_labels_rmse']['mean']:.2f} → "
            f"{s['prior_twin_labels_rmse']['mean']:.2f} |"
        )
    return "\n".join(lines)


def cv_table(report: dict[str, Any]) -> str:
    """The fallback cross-validation grid: per margin its best (mask, abandon), then the chosen margin's whole grid."""
    fb = report["fallback_cv"]
    chosen = fb["chosen"]
    head = " | ".join(fb["conditions"]) + " | mean |"
    rule = "---|" * (len(fb["conditions"]) + 1)
    lines = ["| margin | persist | best mask above | best abandon above | " + head, "|---|---|---|---|" + rule]
    for margin, persist in sorted({_shape(g) for g in fb["grid"]}):
        g = min((g for g in fb["grid"] if _shape(g) == (margin, persist)), key=lambda g: g["mean_rmse"])
        mark = "**" if (margin, persist) == _shape(chosen) else ""
        lines.append(
            f"| {mark}{margin:g}{mark} | {mark}{persist}{mark} | {g['mask_outside_above']:g} | {g['abandon_prior_above']:g} | "
            + " | ".join(f"{g['rmse'][c]:.2f}" for c in fb["conditions"])
            + f" | {g['mean_rmse']:.2f} |"
        )
    lines += ["", "At margin {:g}, persistence {}:".format(*_shape(chosen)), ""]
    lines += ["| mask above | abandon above | " + head, "|---|---|" + rule]
    for g in fb["grid"]:
        if _shape(g) != _shape(chosen):
            continue
        mark = (
            "**"
            if (g["mask_outside_above"], g["abandon_prior_above"]) == (chosen["mask_outside_above"], chosen["abandon_prior_above"])
            else ""
        )
        lines.append(
            f"| {mark}{g['mask_outside_above']:g}{mark} | {mark}{g['abandon_prior_above']:g}{mark} | "
            + " | ".join(f"{g['rmse'][c]:.2f}" for c in fb["conditions"])
            + f" | {g['mean_rmse']:.2f} |"
        )
    return "\n".join(lines)


BEGIN = "<!-- transfer: generated by `python benchmarks/transfer.py --docs docs/learning.md` from benchmarks/results/transfer.json -->"
END = "<!-- /transfer -->"
ANCHOR = "## Speed and memory"


def section(report: dict[str, Any]) -> str:
    """The "Cross-population transfer" section of docs/learning.md, every number from the report."""
    sp = report["splits"]
    cv = report["domain_cv"]["chosen"]
    fb = report["fallback_cv"]

    def m(split: str, key: str, digits: int = 1) -> str:
        return f"{sp[split][key]['mean']:.{digits}f}"

    def lo_hi(split: str, key: str) -> str:
        return f"{sp[split][key]['min']:.1f} to {sp[split][key]['max']:.1f}"

    def pct(split: str, key: str) -> str:
        return f"{sp[split][key]['mean']:.1%}"

    chosen = fb["chosen"]
    return f"""{BEGIN}
## Cross-population transfer

How does a prior trained on one population do on another? Measured without FD001's
test set, on splits of its 100 training engines (all run to failure, so every cycle has a
known RUL): a prior is trained (`train_prior`, {report["prior_training"]["epochs"]} epochs,
{report["prior_training"]["folds"]} folds, as the bundled one) on 40 engines of a split, and other
engines it never saw are run through `PriorTwin`, cycle by cycle, without labels. RMSE is
against the true RUL at every cycle whose true RUL is in [5, 145] (every point a test engine
could be cut at). Mean ± standard deviation over {len(sp["in_population"]["seeds"])} seeds (a seed
draws the engines and initialises the prior).

Columns: **prior** (the prior head alone), **heads, no fallback** (prior + twin heads whatever
the input), **earlier rule** (the twin as it was: it dropped the prior when more than 30% of
the features were outside the prior's training ranges), **prior + twin** (the twin as shipped:
features outside the ranges are hidden from the prior, the prior is dropped above
{chosen["abandon_prior_above"]:.0%} of them, drift alarms fall back too), **constant** (the training rows'
mean RUL: knows nothing of the engine), **in domain** (share of scored cycles within the
manifest's tolerance), **in fallback** (share the shipped twin answered with features hidden
or in alarm), **prior dropped** (share above the abandonment level), and the same two twins
told the true RUL every {LABEL_EVERY}th cycle (scored on every cycle).

{table(report)}

- **Same population** (the reference): prior + twin {m("in_population", "prior_twin_rmse")} against
  {m("in_population", "prior_twin_hard_fallback_rmse")} for the earlier rule: the price of the fallback. A prior trained
  on only 40 engines has narrow ranges; features of ordinary engines stray outside them on
  {pct("in_population", "fallback_share")} of cycles, and hiding them costs accuracy there.
- **Short-lived → long-lived**: {m("lifetime", "prior_twin_rmse")} (earlier rule {m("lifetime", "prior_twin_hard_fallback_rmse")}),
  with {pct("lifetime", "in_domain_share")} of cycles in domain: a long-lived engine's readings look like the
  fleet's, so no range check sees this shift as a whole. Told its RUL every {LABEL_EVERY}th cycle,
  the twin weighs its own carried-forward label against the prior wherever it is in fallback
  ({pct("lifetime", "fallback_share")} of cycles here) and scores {m("lifetime", "prior_twin_labels_rmse")} (the earlier
  rule with the same labels {m("lifetime", "prior_twin_hard_fallback_labels_rmse")}). In this benchmark a carried-forward
  RUL is exact (RUL falls by one per cycle); real labels are noisier.
- **Reversed drift** of {", ".join(report["group"])}: {m("reversed_drift", "prior_twin_rmse")} against
  {m("reversed_drift", "prior_twin_hard_fallback_rmse")} for the earlier rule and {m("reversed_drift", "prior_twin_heads_rmse")} without any
  fallback; the twin answers in fallback on {pct("reversed_drift", "fallback_share")} of cycles
  ({pct("reversed_drift", "in_domain_share")} in domain).
- **Shifted** by {report["shift_sd"]:g} training standard deviations: {m("shifted", "prior_twin_rmse")} against
  {m("shifted", "prior_twin_hard_fallback_rmse")} (earlier rule; seeds {lo_hi("shifted", "prior_twin_hard_fallback_rmse")}, now
  {lo_hi("shifted", "prior_twin_rmse")}), in fallback on {pct("shifted", "fallback_share")} of cycles.

**How the fallback was chosen.** Its two thresholds (domain score above which features
outside the ranges are hidden, and above which the prior is dropped), its margin (how far
beyond its training range, as a share of the range's width, a feature must lie before the
fallback counts it as outside; the in-domain flag keeps the manifest's ranges) and its
persistence (how many consecutive cycles a score must stay beyond a threshold before the
fallback acts; on a tie, the lower abandonment level) come from 5-fold
engine-level cross-validation on the training engines with a different sensor group
({", ".join(fb["group"])}, reversed and shifted by {fb["shift_sd"]:g} sd, and unperturbed), so the table above
is not the data they were tuned on. Criterion: the mean of the three held-out RMSEs
(`benchmarks/fallback_cv.py`; drift alarms left out of the search). Chosen: hide from a
score of {chosen["mask_outside_above"]:g}, drop above {chosen["abandon_prior_above"]:g}, margin {chosen.get("fallback_margin", 0.0):g},
after {chosen.get("fallback_persist", 1)} consecutive cycles beyond a threshold
(mean {chosen["mean_rmse"]:.2f}); the shipped defaults are this choice
({"yes" if fb["shipped_defaults_are_cv_choice"] else "NO"}). Hiding costs the unperturbed
condition ({fb["chosen"]["rmse"]["none"]:.2f} against {_grid(fb, 1.0, 1.0)["rmse"]["none"]:.2f} with no fallback) and more than halves the
perturbed errors; that trade is the judgement in the criterion's equal weights.

{cv_table(report)}

The domain's tolerance is chosen the same way: the least permissive setting (per-feature
0.5%–99.5% training quantiles padded by {cv["margin"]:g} of their band, up to {cv["max_outside"]:.0%} of the features
outside) that keeps held-out training engines in domain on at least
{report["domain_cv"]["target_share"]:.0%} of rows ({cv["held_out_in_domain_share"]:.3f}). The bundled prior's manifest records
its FD001 training ranges with that setting.

```
python benchmarks/transfer.py --json benchmarks/results/transfer.json   # ~{report["seconds"] / 60:.0f} min
python benchmarks/transfer.py --docs docs/learning.md --table benchmarks/results/transfer.json
```
{END}
"""


def _shape(g: dict[str, Any]) -> tuple[float, int]:
    """(margin, persistence) of a grid row or choice; rows of an older report had neither."""
    return g.get("fallback_margin", 0.0), g.get("fallback_persist", 1)


def _grid(fb: dict[str, Any], mask: float, abandon: float) -> dict[str, Any]:
    return next(
        g
        for g in fb["grid"]
        if _shape(g) == _shape(fb["chosen"]) and (g["mask_outside_above"], g["abandon_prior_above"]) == (mask, abandon)
    )


def write_section(doc: Path, report: dict[str, Any]) -> None:
    """Replace the generated section of ``doc`` (or insert it before the speed section, or at the end)."""
    text = doc.read_text()
    block = section(report)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block.rstrip("\n") + rest.split(END, 1)[1]
    elif ANCHOR in text:
        head, rest = text.split(ANCHOR, 1)
        text = head + block + "\n" + ANCHOR + rest
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.write_text(text)


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
