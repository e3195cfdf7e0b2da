"""``twinstream eval federated``: local-only vs federated (per strategy) vs centralized priors on FD001.

See :mod:`twinstream.federated_eval` for the split, the budget and the protocol.
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
# (seed, centralized, fedavg, fedprox, fedadam, mean local-only) prior + twin test RMSE of the seed runs named in the docs.
SEED_RUNS: tuple[tuple[int, float, float, float, float, float], ...] = (
    (1, 11.09, 13.72, 13.76, 12.61, 28.35),
    (2, 11.15, 13.96, 13.98, 12.91, 27.17),
)
READING = (
    "Federating pays off against training alone: every Flower strategy except Krum is far better than the mean "
    "local-only prior (fedavg about half its RMSE), so issue 5's second criterion (at least 10% better) is met. The "
    "first criterion is not: fedavg, fedprox and fedadam stay 14-25% above the centralized prior on the test set "
    "(fedadam closest), consistently over seeds, and the prior head alone shows a similar gap (13-20%). On held-out training engines the "
    "same designs were within 1-5% of centralized, so that validation did not predict the test gap. Krum keeps one "
    "site's update per round (with 4 very different sites it follows whichever is most central) and FedMedian the "
    "coordinate-wise median; both are robust aggregators that give up accuracy on honest non-IID sites."
)
# How the local optimizer, schedule and budget were chosen: `python benchmarks/federated_budget.py SPEC ...`
# (held-out training engines, never the test set). (spec, centralized prior+twin, federated prior+twin, gap)
DESIGN_VALIDATION = (
    ("20 rounds x 2 epochs, AdamW 3e-3, joint, fedavg, whole local epochs", 11.98, 13.24, "+10.5%"),
    ("80 x 1, SGD 0.3, joint, fedavg, whole local epochs", 12.36, 12.92, "+4.6%"),
    ("160 x 1, SGD 0.3, joint, fedavg, whole local epochs", 12.25, 12.70, "+3.7%"),
    ("80 x 1, SGD 0.3, joint, fedadam (server lr 0.01), whole local epochs", 12.36, 12.58, "+1.8%"),
    ("80 x 1, SGD 0.3, joint, fedavg, equal local steps (default)", 12.36, 12.92, "+4.5%"),
    ("80 x 1, SGD 0.3, joint, fedadam (server lr 0.01), equal local steps (default)", 12.36, 12.48, "+1.0%"),
)


def _strategies(text: str, mu: float, server_lr: float, dp_clip: float | None, dp_noise: float) -> tuple[Any, ...]:
    from twinstream.federation.strategies import STRATEGIES, StrategyConfig

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise typer.BadParameter(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}", param_hint="--strategies")
    return tuple(StrategyConfig(name=n, proximal_mu=mu, server_lr=server_lr, dp_clip_norm=dp_clip, dp_noise_multiplier=dp_noise)
                 for n in names)


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
        f"- *federated*: {b['rounds']} Flower rounds; in each, every site takes {b['federated_local_steps']} local steps "
        f"({b['local_epochs']} pass(es) over the mean site's rows, the same at every site) from the global arrays and the "
        "strategy from `make_strategy` aggregates (in process, through the strategy's Message API); fedprox mu, fedadam "
        "server lr and Krum's f as in the strategy names, not tuned;",
        f"- *centralized*: all sites' rows pooled, {b['rounds']} x {b['local_epochs']} epochs.",
        "",
        f"Every run passes {b['passes_over_own_data']} times over the rows it trains on ({b['schedule']}), "
        f"local optimizer {b['optimizer']}, batch {b['batch']}, learning rate {b['lr']:g} cosine-decayed over rounds to a "
        f"tenth, seed {b['seed']}.",
        "",
        "**Protocol.** Each prior is written as an artifact and replayed with the learning-core protocol "
        "(`twinstream/evaluation.py`, as in `twinstream eval cmapss`): one pass over FD001 train and test engines in fleet "
        "time order through `Twin.step`, test engines never labelled, scored at their last cycle against the true RUL "
        "(`RUL_FD001.txt`). *RMSE prior+twin* is the default learner (prior head + twin head on the twin's personal state), "
        "the acceptance metric; *RMSE prior only* is the prior head alone.",
        "",
        "**How the design was chosen (no test data).** `benchmarks/federated_budget.py` holds out every 5th engine "
        "of each site, trains on the rest with this command's code and scores the held-out engines' rows whose true RUL "
        "is 5-145 (the range of the test RULs) against the true RUL; a row's features are causal, so that is what an "
        "unlabelled twin would predict had the engine's stream stopped there. Prior + twin RMSE:",
        "",
        "| design | centralized | federated | gap |",
        "|---|---|---|---|",
        *[f"| {spec} | {c:.2f} | {f:.2f} | {g} |" for spec, c, f, g in DESIGN_VALIDATION],
        "",
        "Earlier designs seen on the test set during development: both heads trained jointly with AdamW "
        "(20 rounds x 2 epochs, test RMSE: centralized 11.21, fedavg 14.64, fedadam 17.19, mean local-only 27.03) and "
        "the SGD design with whole local epochs (centralized 11.07, fedavg 13.17, fedadam 12.61, mean local-only 27.29). "
        "Per-site Adam rescales each site's update by its own statistics, which biases the average on non-IID sites; "
        "whole local epochs let a site with more rows also take more steps (FedNova's objective inconsistency). A "
        "two-phase schedule (prior head, then twin head on the frozen prior head) federated worse on the held-out "
        "engines (+21% with SGD 40 x 2) and is not used. The test set was scored for three designs in all (these two and the "
        "one below; its seeds 1 and 2 were run after it was fixed, and nothing was changed after them).",
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
                  "fedavg,fedprox,fedadam --no-reference`, same defaults otherwise), prior + twin RMSE:", "",
                  "| seed | centralized | fedavg | fedprox | fedadam | mean local-only |", "|---|---|---|---|---|---|",
                  *[f"| {row[0]} | " + " | ".join(f"{v:.2f}" for v in row[1:]) + " |" for row in SEED_RUNS], ""]
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
    rounds: int = typer.Option(80, "--rounds", min=1, help="Federated rounds (local-only and centralized get the same budget)."),
    epochs: int = typer.Option(1, "--epochs", min=1, help="Local epochs per round."),
    strategies: str = typer.Option(",".join(("fedavg", "fedprox", "fedadam", "fedmedian", "krum")), "--strategies",
                                   help="Comma-separated: fedavg, fedprox, fedadam, fedmedian, krum."),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal mu."),
    server_lr: float = typer.Option(0.01, "--server-lr", help="FedAdam server learning rate."),
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
    from twinstream.federated_eval import FederatedEvalConfig, evaluate_federated, work_units

    cfg = FederatedEvalConfig(rounds=rounds, epochs=epochs, lr=lr, optimizer=optimizer, two_phase=two_phase, seed=seed, max_engines=max_engines,
                              limit_test_engines=limit_test_engines, reference=reference,
                              strategies=_strategies(strategies, mu, server_lr, dp_clip, dp_noise))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("loading sites", total=work_units(cfg))
        report = evaluate_federated(cfg, data, work_dir, lambda what, done: bar.update(task, description=what, advance=done))
    flags = [("--rounds", rounds), ("--epochs", epochs), ("--lr", lr), ("--optimizer", optimizer), ("--strategies", strategies),
             ("--mu", mu), ("--server-lr", server_lr), ("--dp-clip", dp_clip), ("--dp-noise", dp_noise if dp_clip else None),
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
