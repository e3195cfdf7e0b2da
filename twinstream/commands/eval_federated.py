"""``twinstream eval federated``: local-only vs federated (per strategy) vs centralized priors on FD001.

See :mod:`twinstream.evaluation.federated_eval` for the split, the budget and the protocol.
Registered on the ``eval`` group by :mod:`twinstream.commands.evaluate`; ``--docs DIR``
rewrites only the ``## Evaluation (twinstream eval federated)`` section of
``DIR/federation.md`` (the rest of that page is written by hand).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console(stderr=True)
SECTION = "## Evaluation (twinstream eval federated)"
# (seed, centralized, fedavg, fedavgm, fedprox, fedadam, mean local-only) prior + twin test RMSE of the seed runs
# named in the docs (`--seed S --strategies fedavg,fedavgm,fedprox,fedadam --no-reference`), run after the recipe was
# fixed; nothing was changed after them.
SEED_RUNS: tuple[tuple[int, float, float, float, float, float, float], ...] = (
    (1, 11.09, 12.45, 11.45, 12.46, 11.52, 28.35),
    (2, 11.15, 12.53, 11.31, 12.56, 11.58, 27.17),
)
# The same for the previous recipe (80 rounds x 21 local steps, no fedavgm), kept for the record.
SEED_RUNS_PREVIOUS: tuple[tuple[int, float, float, float, float, float], ...] = (
    (1, 11.09, 13.72, 13.76, 12.61, 28.35),
    (2, 11.15, 13.96, 13.98, 12.91, 27.17),
)
READING = (
    "Why the federated priors were worse than centralized: too few global optimisation steps at equal compute, plus "
    "client drift from long local runs on non-IID sites (diagnosis above, on training rows and held-out engines). With "
    "short rounds and server momentum (fedavgm, 320 rounds x 5 local steps, the previous recipe's compute) the "
    "federated prior is within 0.2% of the centralized prior on the FD001 test set (11.09 vs 11.07, seed 0), and "
    "within 1.4% and 3.2% for seeds 1 and 2, so issue 5's first criterion (within 5%) is met on all three seeds and "
    "its stretch (3%) on two of three; fedadam (server lr 0.01, not tuned) is within 3.8-4.2%. The second criterion "
    "(at least 10% better than the mean local-only prior) is met by every strategy except Krum (fedavgm 59% better). "
    "Plain fedavg and fedprox (mu 0.01 changes nothing measurable) gain from the short rounds (13.40 -> 12.41) but "
    "stay 12% above centralized: without server momentum the global model still takes too few steps. The prior head "
    "alone stays further behind (fedavgm 19.57 vs 18.37, +6.5%); the twin head closes the rest. The held-out folds "
    "predicted the ordering (fold mean gap: previous fedavg +13.7%, fedavgm with short rounds -0.2%), the single fold 2 "
    "used before did not (+4.5% for a design that was +21% on test): one fold of 20 engines is too noisy to choose "
    "with. Krum keeps one site's update per round (with 4 very different sites it follows whichever is most central) "
    "and FedMedian the coordinate-wise median; both are robust aggregators that give up accuracy on honest non-IID sites."
)
# How the local optimizer, schedule and budget were chosen: `python benchmarks/federated_budget.py SPEC ...`
# (held-out training engines, never the test set). (design, fold, centralized prior+twin, federated prior+twin, gap,
# training-row fit of centralized and federated (prior+twin RMSE vs capped RUL; None = not measured)).
DESIGN_VALIDATION: tuple[tuple[str, int, float, float, str, float | None, float | None], ...] = (
    ("20 rounds x 2 epochs, AdamW 3e-3, joint, fedavg, whole local epochs", 2, 11.98, 13.24, "+10.5%", None, None),
    ("80 x 1, SGD 0.3, joint, fedavg, whole local epochs", 2, 12.36, 12.92, "+4.6%", None, None),
    ("160 x 1, SGD 0.3, joint, fedavg, whole local epochs", 2, 12.25, 12.70, "+3.7%", None, None),
    ("80 x 1, SGD 0.3, joint, fedadam (server lr 0.01), whole local epochs", 2, 12.36, 12.58, "+1.8%", None, None),
    ("fedavg, 80 rounds x 21 equal local steps (previous default)", 2, 12.36, 12.92, "+4.5%", 5.88, 9.03),
    ("fedavg, 80 rounds x 21 equal local steps (previous default)", 0, 10.29, 12.21, "+18.7%", 6.06, 9.30),
    ("fedavg, 80 rounds x 21 equal local steps (previous default)", 1, 10.90, 12.97, "+19.0%", 6.08, 9.40),
    ("fedavg, 80 rounds x 21 equal local steps (previous default)", 3, 12.89, 14.51, "+12.5%", 5.69, 8.85),
    ("fedadam (server lr 0.01), 80 x 21", 2, 12.36, 12.48, "+1.0%", 5.88, 8.23),
    ("fedadam (server lr 0.01), 80 x 21", 0, 10.29, 11.78, "+14.5%", 6.06, 8.54),
    ("fedadam (server lr 0.03), 80 x 21", 2, 12.36, 12.41, "+0.4%", 5.88, 6.82),
    ("fedadam (server lr 0.03), 80 x 21", 1, 10.90, 11.29, "+3.6%", 6.08, 7.14),
    ("fedadam (server lr 0.01), 320 x 21", 2, 12.36, 12.47, "+0.9%", None, None),
    ("fedavg, 320 x 21 (as many global steps as centralized, 4x compute)", 2, 12.36, 12.76, "+3.2%", 5.88, 7.61),
    ("fedavg, 320 x 21 (as many global steps as centralized, 4x compute)", 0, 10.29, 11.32, "+10.0%", 6.06, 8.07),
    ("fedavg, 320 x 21; centralized 320 passes", 2, 12.48, 12.76, "+2.2%", 3.98, 7.61),
    ("fedavgm (server momentum 0.9), 80 x 21; centralized 320 passes", 0, 10.80, 11.36, "+5.2%", 4.01, 7.73),
    ("fedavg, 80 x 81 (4 mean-site passes per round, 4x compute)", 2, 12.36, 13.91, "+12.6%", None, None),
    ("fedavg, 320 x 5 (short rounds, same compute)", 2, 12.36, 12.48, "+1.0%", 5.88, 7.82),
    ("fedavg, 320 x 5 (short rounds, same compute)", 0, 10.29, 11.10, "+7.9%", 6.06, 8.11),
    ("fedavgm (server momentum 0.5), 80 x 21", 2, 12.36, 12.62, "+2.1%", None, None),
    ("fedavgm (server momentum 0.75), 80 x 21", 2, 12.36, 12.66, "+2.5%", 5.88, 8.03),
    ("fedavgm (server momentum 0.75), 80 x 21", 0, 10.29, 11.44, "+11.2%", 6.06, 8.20),
    ("fedavgm (server momentum 0.95), 80 x 21", 2, 12.36, 12.67, "+2.5%", 5.88, 8.23),
    ("fedavgm (server momentum 0.9), 80 x 21", 2, 12.36, 12.11, "-2.0%", 5.88, 7.29),
    ("fedavgm (server momentum 0.9), 80 x 21", 0, 10.29, 11.36, "+10.5%", 6.06, 7.73),
    ("fedavgm (server momentum 0.9), 80 x 21", 1, 10.90, 11.14, "+2.2%", 6.08, 7.41),
    ("fedavgm (server momentum 0.9), 80 x 21", 3, 12.89, 13.14, "+1.9%", 5.69, 7.04),
    ("fedavgm (server momentum 0.9), 160 x 21", 2, 12.36, 12.22, "-1.1%", 5.88, 6.19),
    ("fedavgm (server momentum 0.9), 160 x 21", 0, 10.29, 11.53, "+12.1%", 6.06, 6.75),
    ("fedavgm (server momentum 0.9), 320 x 5 (default)", 0, 10.29, 10.26, "-0.2%", 6.06, 5.47),
    ("fedavgm (server momentum 0.9), 320 x 5 (default)", 1, 10.90, 10.55, "-3.2%", 6.08, 5.52),
    ("fedavgm (server momentum 0.9), 320 x 5 (default)", 2, 12.36, 12.41, "+0.4%", 5.88, 5.26),
    ("fedavgm (server momentum 0.9), 320 x 5 (default)", 3, 12.89, 13.16, "+2.1%", 5.69, 5.08),
)


def _strategies(text: str, mu: float, server_lr: float, dp_clip: float | None, dp_noise: float,
                server_momentum: float = 0.9) -> tuple[Any, ...]:
    from twinstream.federation.strategies import STRATEGIES, StrategyConfig

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise typer.BadParameter(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}", param_hint="--strategies")
    return tuple(StrategyConfig(name=n, proximal_mu=mu, server_lr=server_lr, server_momentum=server_momentum, dp_clip_norm=dp_clip,
                                dp_noise_multiplier=dp_noise) for n in names)


def rows(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, name, score) for every prior of the report, in table order."""
    out = [("local-only", name, s) for name, s in report["local_only"].items() if isinstance(s, dict)]
    out += [("federated", name, s) for name, s in report["federated"].items()]
    out.append(("centralized", "all sites pooled", report["centralized"]))
    if "reference_bundled_prior" in report:
        out.append(("reference", "bundled prior (stacked 5-fold ensembles)", report["reference_bundled_prior"]))
    return out


def print_report(report: dict[str, Any]) -> None:
    table = Table(title=f"FD001 test, {report['centralized']['engines']} engines: prior + twin (default learner) and prior head alone")
    for col in ("prior", "trained on", "RMSE prior+twin", "PHM08", "RMSE prior only", "train s"):
        table.add_column(col, justify="right")
    for kind, name, s in rows(report):
        table.add_row(kind, name, f"{s['rmse']:.2f}", f"{s['phm_score']:.0f}", f"{s['prior_only']['rmse']:.2f}",
                      f"{s.get('seconds_train', float('nan')):.0f}")
    Console(width=max(Console().width, 110)).print(table)
    console.print(f"mean local-only RMSE {report['local_only']['mean_rmse']:.2f}, centralized {report['centralized']['rmse']:.2f}")
    for name, a in report["acceptance"].items():
        ok = a["within_5pct"] and a["at_least_10pct_better"]
        console.print(f"  {name}: {a['vs_centralized']:+.1%} vs centralized, {a['better_than_local_mean']:.1%} better than mean local-only "
                      f"-> [{'green' if ok else 'red'}]{'meets' if ok else 'misses'}[/] issue 5's acceptance")


def _seconds(score: dict[str, Any]) -> str:
    value = score.get("seconds_train")
    return f"{value:.0f}" if isinstance(value, (int, float)) else "-"


def section_markdown(report: dict[str, Any]) -> str:
    """The generated ``## Evaluation`` section (method, split, what leaves a site, measured table)."""
    b = report["budget"]
    lines = [SECTION, "", f"<!-- Generated by `{report['command']}`. Do not edit by hand: rerun the command. -->", "",
             "**Split.** " + report["split"]["rule"] + ". FD001 has 100 training engines (run to failure):", "",
             "| site | engines | rows | lifetime (cycles) |", "|---|---|---|---|"]
    for name, d in report["split"]["sites"].items():
        lines.append(f"| {name} | {d['engines']} | {d['rows']:,} | {d['life_min']}-{d['life_max']} |")
    lines += [
        "",
        "**Priors compared** (same network pair: prior head 15 inputs x "
        f"{b['prior_hidden']} ReLU units, twin head 58 inputs x {b['twin_hidden']} units; same local step "
        "`models/federated.py:local_fit`; same budget):",
        f"- *local-only*: each site alone, its own rows and feature normalization, {b['rounds']} x {b['local_epochs']} epochs;",
        f"- *federated*: {b.get('federated_rounds', b['rounds'])} short Flower rounds; in each, every site takes "
        f"{b['federated_local_steps']} local steps (the same at every site; {b.get('federated_rounds', b['rounds']) // b['rounds']} "
        f"rounds x {b['federated_local_steps']} steps ~ one pass over the mean site's rows, {b.get('steps_per_pass_mean_site', '-')} "
        "steps, so every site does the same compute as in the other runs) from the global arrays and the strategy from "
        "`make_strategy` aggregates (in process, through the strategy's Message API); fedavgm's server momentum chosen "
        "on held-out training engines (below), fedprox mu, fedadam server lr and Krum's f as in the strategy names, not tuned;",
        f"- *centralized*: all sites' rows pooled, {b['rounds']} x {b['local_epochs']} epochs.",
        "",
        f"Every run passes {b['passes_over_own_data']} times over the rows it trains on (federated: in row count; {b['schedule']}), "
        f"local optimizer {b['optimizer']}, batch {b['batch']}, learning rate {b['lr']:g} cosine-decayed over the run's rounds to a "
        f"tenth, initial weights from seed {b['seed']}, pooled feature normalization (the federated one from the sites' moments "
        "equals the pooled one), the same calibration rule.",
        "",
        "**Protocol.** Each prior is written as an artifact and replayed with the learning-core protocol "
        "(`evaluation/cmapss_eval.py`, as in `twinstream eval cmapss`): one pass over FD001 train and test engines in fleet "
        "time order through `Twin.step`, test engines never labelled, scored at their last cycle against the true RUL "
        "(`RUL_FD001.txt`). *RMSE prior+twin* is the default learner (prior head + twin head on the twin's personal state), "
        "the acceptance metric; *RMSE prior only* is the prior head alone.",
        "",
        "**How the design was chosen (no test data).** `benchmarks/federated_budget.py` holds out every 5th engine "
        "of each site (fold K: its engines K, K+5, ... in unit order, counted from 0; fold 2 was the only one until the rounds were "
        "redesigned), trains on the rest with this command's code and scores the held-out engines' rows whose true RUL "
        "is 5-145 (the range of the test RULs) against the true RUL; a row's features are causal, so that is what an "
        "unlabelled twin would predict had the engine's stream stopped there. It also reports the *training-row fit* "
        "(prior + twin RMSE on the training rows against the capped RUL, the training target): how well each run "
        "optimised the objective they share. Centralized: 80 passes, SGD 0.3, unless stated. Prior + twin RMSE:",
        "",
        "| design (federated rounds x local steps) | fold | centralized | federated | gap | training-row fit: centralized, federated |",
        "|---|---|---|---|---|---|",
        *[f"| {spec} | {k} | {c:.2f} | {f:.2f} | {g} | " + ("-" if fc is None else f"{fc:.2f}, {ff:.2f}") + " |"
          for spec, k, c, f, g, fc, ff in DESIGN_VALIDATION],
        "",
        "Why the federated priors were worse (diagnosis, training rows and held-out engines only): (1) *too few "
        "global steps*. A FedAvg round moves the global model about as far as one site's 21 steps on the sites' mean "
        "gradient, the centralized run takes 81 steps per pass (20,631 rows / 256), so at equal compute FedAvg got ~4x "
        "fewer optimisation steps: its training-row fit was 8.9-9.4 against 5.7-6.1 centralized. Giving it 4x the "
        "rounds halved the fold-0 gap (+18.7% -> +10.0%) but left the fit at 8.1. (2) *client drift*: 21 steps on one "
        "site's non-IID rows pull each site's copy towards its own lifetime range (81 local steps: +12.6% on fold 2). "
        "The fix, at the previous recipe's compute: rounds 4x shorter (5 local steps, 4 x 5 ~ one pass over the mean "
        "site) against drift, and server momentum 0.9 (Flower's FedAvgM, server learning rate 1) so the global model "
        "gets its steps back (in steady state each round's mean update is applied 1 / (1 - 0.9) = 10 times over the "
        "following rounds). Momentum 0.9 beat 0.5, 0.75 and 0.95 on fold 2 and 0.75 on fold 0. With both the "
        "training-row fit (5.1-5.5) matches the centralized one and the held-out gap is -3.2% to +2.1% over the four "
        "folds. The centralized run was not handicapped: 320 passes fit the training rows better (4.0) but were worse "
        "on held-out engines (folds 2 and 0), so it keeps 80 passes, and the other strategies get the same short rounds.",
        "",
        "Earlier designs seen on the test set during development: both heads trained jointly with AdamW "
        "(20 rounds x 2 epochs, test RMSE: centralized 11.21, fedavg 14.64, fedadam 17.19, mean local-only 27.03) and "
        "the SGD design with whole local epochs (centralized 11.07, fedavg 13.17, fedadam 12.61, mean local-only 27.29). "
        "Per-site Adam rescales each site's update by its own statistics, which biases the average on non-IID sites; "
        "whole local epochs let a site with more rows also take more steps (FedNova's objective inconsistency). A "
        "two-phase schedule (prior head, then twin head on the frozen prior head) federated worse on the held-out "
        "engines (+21% with SGD 40 x 2) and is not used. F1 scored the test set for three designs (these two and 80 "
        "rounds x 21 equal local steps, seed 0: centralized 11.07, fedavg 13.40, fedprox 13.48, fedadam 12.72, "
        "fedmedian 18.16, krum 28.88, mean local-only 27.29; its seeds 1 and 2 below). The redesign above (short rounds, "
        "fedavgm) was chosen on the four held-out folds only and scored on test once (the fourth design scored on "
        "test: the table below, seed 0); its seeds 1 and 2 were run after that, and nothing was changed after them. "
        "(Smoke runs of the command, such as its unit test, score test engines 1-5 with 2-engine sites; their numbers "
        "were not used for any choice.)",
        "",
        "**What leaves a site in this evaluation:** the model arrays after local training and `num-examples` / train-loss "
        "metrics (every round); once before round 1, per feature the share of rows where it is present, its mean and its "
        "mean square (3 x 57 floats) and the row count, averaged over sites weighted by rows (Flower's FedAvg aggregation) "
        "into the normalization all sites use; once after the last round, per head the |residual| histogram "
        "(1-cycle bins) per predicted-RUL bin as fractions of the site's rows, averaged the same way into the intervals' "
        "calibration; and a sha256 of the site's rows (provenance in the manifest). No row, engine id or label.",
        "",
        "| prior | trained on | RMSE prior+twin | PHM08 | RMSE prior only | train s |",
        "|---|---|---|---|---|---|",
    ]
    for kind, name, s in rows(report):
        lines.append(f"| {kind} | {name} | {s['rmse']:.2f} | {s['phm_score']:,.0f} | {s['prior_only']['rmse']:.2f} | "
                     f"{_seconds(s)} |")
    lines += ["", f"Mean local-only RMSE (prior+twin): {report['local_only']['mean_rmse']:.2f}; "
                  f"prior only: {report['local_only']['mean_prior_only_rmse']:.2f}.", "",
              "| strategy | vs centralized | better than mean local-only | within 5% (3%) | >= 10% better |", "|---|---|---|---|---|"]
    for name, a in report["acceptance"].items():
        lines.append(f"| {name} | {a['vs_centralized']:+.1%} | {a['better_than_local_mean']:.1%} | "
                     f"{'yes' if a['within_5pct'] else 'no'} ({'yes' if a['within_3pct'] else 'no'}) | {'yes' if a['at_least_10pct_better'] else 'no'} |")
    lines += ["", f"Run time: {report['seconds']:.0f} s on this run's machine (2 shared cores, torch on one thread).", ""]
    if SEED_RUNS:
        lines += ["**Other seeds** (initial weights and shuffling; `twinstream eval federated --seed S --strategies "
                  "fedavg,fedavgm,fedprox,fedadam --no-reference`, same defaults otherwise; run after the recipe was fixed), "
                  "prior + twin RMSE:", "",
                  "| seed | centralized | fedavg | fedavgm | fedprox | fedadam | mean local-only |", "|---|---|---|---|---|---|---|",
                  *[f"| {row[0]} | " + " | ".join(f"{v:.2f}" for v in row[1:]) + " |" for row in SEED_RUNS], ""]
    if SEED_RUNS_PREVIOUS:
        lines += ["Previous recipe (80 rounds x 21 local steps, no fedavgm; `--strategies fedavg,fedprox,fedadam`), seeds "
                  "1 and 2:", "", "| seed | centralized | fedavg | fedprox | fedadam | mean local-only |", "|---|---|---|---|---|---|",
                  *[f"| {row[0]} | " + " | ".join(f"{v:.2f}" for v in row[1:]) + " |" for row in SEED_RUNS_PREVIOUS], ""]
    lines += ["**Reading.** " + READING, ""]
    return "\n".join(lines)


def write_section(page: Path, section: str) -> None:
    """Replace the section (up to the next ``## `` heading) in ``page``, or append it; nothing else changes."""
    text = page.read_text() if page.is_file() else "# Federation\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text.rstrip("\n") + "\n")


def federated(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON here."),
    data: Optional[Path] = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled FD001)."),
    rounds: int = typer.Option(80, "--rounds", min=1, help="Passes of the local-only and centralized runs; federated: rounds x "
                                                         "--rounds-per-pass rounds of --local-steps steps (the same compute)."),
    local_steps: int = typer.Option(5, "--local-steps", min=0, help="Federated local steps per site and round (0 = one pass over the mean site)."),
    rounds_per_pass: int = typer.Option(4, "--rounds-per-pass", min=1, help="Federated rounds per pass (with --local-steps > 0)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Local epochs per round."),
    strategies: str = typer.Option(",".join(("fedavg", "fedavgm", "fedprox", "fedadam", "fedmedian", "krum")), "--strategies",
                                   help="Comma-separated: fedavg, fedavgm, fedprox, fedadam, fedmedian, krum."),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal mu."),
    server_lr: float = typer.Option(0.01, "--server-lr", help="FedAdam server learning rate."),
    server_momentum: float = typer.Option(0.9, "--server-momentum", help="FedAvgM server momentum (server learning rate 1)."),
    dp_clip: Optional[float] = typer.Option(None, "--dp-clip", help="Wrap every strategy in server-side DP with this fixed clip norm."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="DP noise multiplier (with --dp-clip)."),
    lr: float = typer.Option(0.3, "--lr", help="Local learning rate of round 1."),
    optimizer: str = typer.Option("sgd", "--optimizer", help="Local optimizer: sgd or adamw."),
    two_phase: bool = typer.Option(False, "--two-phase/--joint", help="Train the prior head, then the twin head (default: both every round)."),
    max_engines: Optional[int] = typer.Option(None, "--max-engines", help="Per site: only its first N engines (smoke runs)."),
    limit_test_engines: Optional[int] = typer.Option(None, "--limit-test-engines", help="Only test engines with unit <= N (smoke runs)."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also score the bundled prior."),
    work_dir: Optional[Path] = typer.Option(None, "--work-dir", help="Keep the prior artifacts here (default: a temporary directory)."),
    docs: Optional[Path] = typer.Option(None, "--docs", help="Rewrite the evaluation section of DIR/federation.md."),
    seed: int = typer.Option(0, help="Seed of initial weights and shuffling."),
) -> None:
    """Split FD001's training engines into 4 non-IID sites; compare local-only, federated and centralized priors."""
    from twinstream.evaluation.federated_eval import FederatedEvalConfig, evaluate_federated, work_units

    cfg = FederatedEvalConfig(rounds=rounds, local_steps=local_steps, rounds_per_pass=rounds_per_pass, epochs=epochs, lr=lr, optimizer=optimizer, two_phase=two_phase, seed=seed, max_engines=max_engines,
                              limit_test_engines=limit_test_engines, reference=reference,
                              strategies=_strategies(strategies, mu, server_lr, dp_clip, dp_noise, server_momentum))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("loading sites", total=work_units(cfg))
        report = evaluate_federated(cfg, data, work_dir, lambda what, done: bar.update(task, description=what, advance=done))
    flags = [("--rounds", rounds), ("--local-steps", local_steps), ("--rounds-per-pass", rounds_per_pass), ("--epochs", epochs), ("--lr", lr), ("--optimizer", optimizer), ("--strategies", strategies),
             ("--mu", mu), ("--server-lr", server_lr), ("--server-momentum", server_momentum), ("--dp-clip", dp_clip), ("--dp-noise", dp_noise if dp_clip else None),
             ("--two-phase", "" if two_phase else None), ("--data", data),
             ("--max-engines", max_engines), ("--limit-test-engines", limit_test_engines), ("--docs", docs)]
    report["command"] = "twinstream eval federated " + " ".join(f"{f} {v}" for f, v in flags if v is not None)
    print_report(report)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"[green]wrote[/] {json_path}")
    if docs is not None:
        write_section(docs / "federation.md", section_markdown(report))
        console.print(f"[green]wrote[/] section '{SECTION[3:]}' of {docs / 'federation.md'}")
