"""``twinstream eval cmapss``: the streaming evaluation of the twin learners, end to end.

Replays C-MAPSS as the live system would see it (see :mod:`twinstream.evaluation.cmapss_eval`),
scores three arms, and optionally writes the JSON report, the plots and the generated
``docs/learning.md`` (tables and figures come from this run, never typed by hand).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from twinstream.commands import eval_federated, eval_synth

app = typer.Typer(help="Evaluate twin learners on public data with the live system's protocol.", no_args_is_help=True)
console = Console(stderr=True)


@app.callback()
def main() -> None:
    """Evaluate twin learners (a group, so that ``eval cmapss`` stays a sub-command)."""


app.command("synth")(eval_synth.synth)
app.command("federated")(eval_federated.federated)


def resolve_prior(train_subset: str, data: Path | None, prior: Path | None, prior_out: Path | None) -> str:
    """The prior to use: the given one, the bundled one if trained on the same data, else a new one."""
    from twinstream.datasets.cmapss import subset_files
    from twinstream.models.prior import bundled_prior_dir, load_prior, sha256_file
    from twinstream.models.prior_train import train_prior

    if prior is not None:
        return str(prior)
    train_file = subset_files(train_subset, data)["train"]
    if train_file.is_file():
        bundled = load_prior(bundled_prior_dir()).manifest.training_data
        if bundled.get(train_file.name) == sha256_file(train_file):
            return "bundled"
    out = prior_out or Path(tempfile.mkdtemp(prefix=f"twinstream-prior-{train_subset}-"))
    with console.status(f"no prior for {train_subset} yet: training one into {out}") as status:
        train_prior(out, subset=train_subset, data_dir=data, progress=lambda m: status.update(f"training prior on {train_subset}: {m}"))
    return str(out)


def print_arms(report: dict) -> None:
    table = Table(title=f"C-MAPSS {report['subset']} (fleet: {report['train_subset']}), {report['events']} events")
    for col in ("arm", "RMSE", "RMSE (truth capped)", "PHM08", "RMSE <50 cycles", "RMSE >150 cycles", "coverage", "updates/s", "state B"):
        table.add_column(col, justify="right")
    for name, s in report["arms"].items():
        table.add_row(
            name, f"{s['rmse']:.2f}", f"{s['rmse_capped_truth']:.2f}", f"{s['phm_score']:.0f}", f"{s['rmse_few']:.2f}",
            f"{s['rmse_many']:.2f}", f"{s['coverage']:.2f}", f"{s['updates_per_s']:.0f}", f"{s['state_bytes_mean']:.0f}",
        )
    Console(width=max(Console().width, 140)).print(table)


@app.command("cmapss")
def cmapss(
    subset: str = typer.Option("FD001", "--subset", help="Subset whose test engines are scored."),
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    data: Path | None = typer.Option(None, "--data", help="Directory in NASA's layout (default: bundled FD001)."),
    train_subset: str | None = typer.Option(None, "--train-subset",
                                            help="Subset whose training engines form the fleet and train the prior."),
    plots: Path | None = typer.Option(None, "--plots", help="Write PNG plots here."),
    docs: Path | None = typer.Option(None, "--docs", help="Write learning.md (+ img/) here."),
    prior: Path | None = typer.Option(None, "--prior", help="Prior artifact to use (default: bundled, or trained on --train-subset)."),
    prior_out: Path | None = typer.Option(None, "--prior-out", help="Where to keep a prior trained for --train-subset."),
    limit_engines: int | None = typer.Option(None, "--limit-engines", help="Only engines with unit <= N (smoke runs)."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Measure speed and size of every registered learner."),
    seed: int = typer.Option(0, help="Seed passed to every learner."),
) -> None:
    """Replay a C-MAPSS subset in fleet time order through three arms and score them."""
    from twinstream.evaluation import report as reporting
    from twinstream.evaluation.cmapss_eval import benchmark_learners, evaluate

    prior_dir = resolve_prior(train_subset or subset, data, prior, prior_out)
    with console.status("replaying ...") as status:
        result = evaluate(subset, train_subset, data, None if prior_dir == "bundled" else prior_dir, seed, limit_engines, status.update)
        if bench:
            status.update("benchmarking learners ...")
            result["learners"] = benchmark_learners()
            result["load_average"] = os.getloadavg()[0]  # speed depends on what else the machine runs: say so
            result["cpu_count"] = os.cpu_count()
    result["command"] = "twinstream eval cmapss " + " ".join(
        f"{flag} {value}" for flag, value in (("--subset", subset), ("--train-subset", train_subset), ("--data", data),
                                              ("--limit-engines", limit_engines), ("--docs", docs)) if value is not None
    )
    print_arms(result)
    if bench:
        for row in result["learners"]:
            console.print(f"  {row['learner']}: {row['learn_predict_per_s']:.0f} learn+predict/s, "
                          f"{row['twin_step_per_s']:.0f} Twin.step/s, {row['state_bytes']} B")
    figures: dict[str, Path] = {}
    if plots is not None:
        figures = reporting.write_plots(result, plots)
    if docs is not None:
        reporting.write_docs(result, docs)
        console.print(f"[green]wrote[/] {docs / 'learning.md'}")
    if json_path is not None:
        slim = {k: v for k, v in result.items() if k not in ("trajectories", "test_truth")}
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(slim, indent=2) + "\n")
        console.print(f"[green]wrote[/] {json_path}")
    for path in figures.values():
        console.print(f"[green]wrote[/] {path}")


if __name__ == "__main__":
    app()
