"""``twinstream eval federated``: local-only vs federated (per strategy) vs centralized priors on FD001.

See :mod:`twinstream.evaluation.federated_eval` for the split, the budget and the protocol.
Registered on the ``eval`` group by :mod:`twinstream.commands.evaluate`; ``--docs DIR``
rewrites only the ``## Evaluation (twinstream eval federated)`` section of
``DIR/federation.md`` (:mod:`twinstream.evaluation.federated_docs`; the rest of that page
is written by hand). Defaults are the production recipe (:mod:`twinstream.federation.recipe`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from twinstream.federation.recipe import RECIPE

console = Console(stderr=True)


def _strategies(text: str, mu: float, server_lr: float, dp_clip: float | None, dp_noise: float,
                server_momentum: float = 0.9) -> tuple[Any, ...]:
    from twinstream.federation.strategies import STRATEGIES, StrategyConfig

    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown or not names:
        raise typer.BadParameter(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}", param_hint="--strategies")
    return tuple(StrategyConfig(name=n, proximal_mu=mu, server_lr=server_lr, server_momentum=server_momentum, dp_clip_norm=dp_clip,
                                dp_noise_multiplier=dp_noise) for n in names)


def print_report(report: dict[str, Any]) -> None:
    from twinstream.evaluation.federated_docs import rows

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
                      f"-> [{'green' if ok else 'red'}]{'meets' if ok else 'misses'}[/] the acceptance "
                      "(within 5% of centralized, >= 10% better than mean local-only)")


def federated(
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    data: Path | None = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled FD001)."),
    rounds: int = typer.Option(RECIPE.rounds, "--rounds", min=1, help="Passes of the local-only and centralized runs; federated: rounds x "
                                                         "--rounds-per-pass rounds of --local-steps steps (the same compute)."),
    local_steps: int = typer.Option(RECIPE.local_steps, "--local-steps", min=0,
                                    help="Federated local steps per site and round (0 = one pass over the mean site)."),
    rounds_per_pass: int = typer.Option(RECIPE.rounds_per_pass, "--rounds-per-pass", min=1,
                                        help="Federated rounds per pass (with --local-steps > 0)."),
    epochs: int = typer.Option(RECIPE.epochs, "--epochs", min=1, help="Local epochs per round."),
    strategies: str = typer.Option(",".join(("fedavg", "fedavgm", "fedprox", "fedadam", "fedmedian", "krum")), "--strategies",
                                   help="Comma-separated: fedavg, fedavgm, fedprox, fedadam, fedmedian, krum."),
    mu: float = typer.Option(0.01, "--mu", help="FedProx proximal mu."),
    server_lr: float = typer.Option(0.01, "--server-lr", help="FedAdam server learning rate."),
    server_momentum: float = typer.Option(0.9, "--server-momentum", help="FedAvgM server momentum (server learning rate 1)."),
    dp_clip: float | None = typer.Option(None, "--dp-clip", help="Wrap every strategy in server-side DP with this fixed clip norm."),
    dp_noise: float = typer.Option(0.0, "--dp-noise", help="DP noise multiplier (with --dp-clip)."),
    lr: float = typer.Option(RECIPE.lr, "--lr", help="Local learning rate of round 1."),
    optimizer: str = typer.Option(RECIPE.optimizer, "--optimizer", help="Local optimizer: sgd or adamw."),
    two_phase: bool = typer.Option(RECIPE.two_phase, "--two-phase/--joint",
                                   help="Train the prior head, then the twin head (default: both every round)."),
    max_engines: int | None = typer.Option(None, "--max-engines", help="Per site: only its first N engines (smoke runs)."),
    limit_test_engines: int | None = typer.Option(None, "--limit-test-engines", help="Only test engines with unit <= N (smoke runs)."),
    reference: bool = typer.Option(True, "--reference/--no-reference", help="Also score the bundled prior."),
    work_dir: Path | None = typer.Option(None, "--work-dir", help="Keep the prior artifacts here (default: a temporary directory)."),
    docs: Path | None = typer.Option(None, "--docs", help="Rewrite the evaluation section of DIR/federation.md."),
    other_seeds: list[Path] | None = typer.Option(None, "--other-seeds", help="With --docs: JSON reports (--json) of this "
                                                     "command run with other --seed values, tabled in the section (repeat)."),
    seed: int = typer.Option(0, help="Seed of initial weights and shuffling."),
) -> None:
    """Split FD001's training engines into 4 non-IID sites; compare local-only, federated and centralized priors."""
    from twinstream.evaluation.federated_eval import FederatedEvalConfig, evaluate_federated, work_units

    cfg = FederatedEvalConfig(rounds=rounds, local_steps=local_steps, rounds_per_pass=rounds_per_pass, epochs=epochs, lr=lr,
                              optimizer=optimizer, two_phase=two_phase, seed=seed, max_engines=max_engines,
                              limit_test_engines=limit_test_engines, reference=reference,
                              strategies=_strategies(strategies, mu, server_lr, dp_clip, dp_noise, server_momentum))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("loading sites", total=work_units(cfg))
        report = evaluate_federated(cfg, data, work_dir, lambda what, done: bar.update(task, description=what, advance=done))
    flags = [("--rounds", rounds), ("--local-steps", local_steps), ("--rounds-per-pass", rounds_per_pass), ("--epochs", epochs),
             ("--lr", lr), ("--optimizer", optimizer), ("--strategies", strategies),
             ("--mu", mu), ("--server-lr", server_lr), ("--server-momentum", server_momentum), ("--dp-clip", dp_clip),
             ("--dp-noise", dp_noise if dp_clip else None),
             ("--two-phase", "" if two_phase else None), ("--data", data),
             ("--max-engines", max_engines), ("--limit-test-engines", limit_test_engines), ("--docs", docs)]
    report["command"] = "twinstream eval federated " + " ".join(f"{f} {v}" for f, v in flags if v is not None)
    print_report(report)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"[green]wrote[/] {json_path}")
    if docs is not None:
        from twinstream.evaluation.federated_docs import SECTION, section_markdown, write_section

        seeds = [json.loads(path.read_text()) for path in other_seeds or []]
        write_section(docs / "federation.md", section_markdown(report, seeds))
        console.print(f"[green]wrote[/] section '{SECTION[3:]}' of {docs / 'federation.md'}")
