"""``twinstream eval scarcity``: the scarcity curve (prior on k engines, with and without generated data).

The engine is :mod:`twinstream.evaluation.scarcity` (protocol in its docstring); this
module parses options, prints the table and writes the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def print_curve(report: dict) -> None:
    table = Table(
        title=f"scarcity curve on {report['subset']} ({report['test_engines']} test engines, "
        f"{report['protocol']['draws']} draws per k), RMSE mean ± sd over draws"
    )
    arms = {
        "real": "real",
        "real_synthetic": "real + synthetic",
        "real_jitter": "real + jitter",
        "real_diffusion": "real + diffusion (gated)",
        "real_diffusion_ungated": "real + diffusion (ungated)",
    }
    arms = {a: label for a, label in arms.items() if all(a in row for row in report["curve"].values())}
    for col in ("k", *arms.values(), "diffusion refused", *(f"PHM08 {label}" for label in arms.values())):
        table.add_column(col, justify="right")
    for k, row in report["curve"].items():
        cells = [f"{row[a]['rmse']['mean']:.2f} ± {row[a]['rmse']['std']:.2f}" for a in arms]
        cells.append(f"{row.get('refused', 0)}/{report['protocol']['draws']}")
        cells += [f"{row[a]['phm_score']['mean']:.0f}" for a in arms]
        table.add_row(k, *cells)
    Console(width=max(Console().width, 200)).print(table)
    console.print(f"{report['seconds']:.0f} s")


def scarcity(
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    subset: str = typer.Option("FD001", "--subset", help="C-MAPSS subset."),
    data: Path | None = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled)."),
    k: list[str] | None = typer.Option(None, "--k", help="Training engines per point (repeat; 'all'); default 3 5 10 20 50 all."),
    draws: int = typer.Option(3, "--draws", min=1, help="Random draws of the k engines per point."),
    steps: int = typer.Option(400, "--steps", min=1, help="Gradient steps per ensemble member (the training budget)."),
    seed: int = typer.Option(0, help="Seed of the engine draws."),
    docs: Path | None = typer.Option(
        None,
        "--docs",
        help="Also draw img/scarcity.png here and regenerate synthetic.md "
        "(from benchmarks/results/eval_synth.json and the --json report, which must be "
        "benchmarks/results/scarcity.json).",
    ),
) -> None:
    """Train the prior on k real engines (several draws), alone, with generated trajectories (baseline and diffusion
    generators), with jitter; score the twins."""
    import torch

    torch.set_num_threads(1)  # shared cores
    from twinstream.evaluation.scarcity import KS, evaluate_scarcity

    ks = KS if not k else tuple(None if v == "all" else int(v) for v in k)
    with console.status("scarcity curve ...") as status:
        report = evaluate_scarcity(subset, data, ks, draws=draws, steps=steps, seed=seed, progress=status.update)
    parts = [
        f"--subset {subset}",
        *(f"--k {v}" for v in k or []),
        f"--draws {draws}" if draws != 3 else "",
        f"--steps {steps}" if steps != 400 else "",
        f"--seed {seed}" if seed else "",
    ]
    report["command"] = "twinstream eval scarcity " + " ".join(p for p in parts if p)
    print_curve(report)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"[green]wrote[/] {json_path}")
    if docs is not None:
        from twinstream.evaluation import scarcity_docs
        from twinstream.evaluation.synth_docs import write_docs

        if json_path is None or json_path.resolve() != scarcity_docs.RESULTS:
            console.print(f"[red]--docs needs --json {scarcity_docs.RESULTS}: the page is built from that file[/red]")
            raise typer.Exit(2)
        console.print(f"[green]wrote[/] {scarcity_docs.plot(report, docs / scarcity_docs.PLOT)}")
        synth_report = json.loads((scarcity_docs.RESULTS.parent / "eval_synth.json").read_text())
        console.print(f"[green]wrote[/] {write_docs(synth_report, docs)}")
