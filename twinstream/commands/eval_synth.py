"""``twinstream eval synth``: the gap-filling quality gate.

Hides known values of C-MAPSS test sensors (or of a user's CSV) with seeded masks,
fills them with the generator and every baseline and reports MAE/RMSE against the
hidden truth, the discriminative score of each filler, the gate verdict, and (with
:mod:`twinstream.evaluation.synth_rul`) the RUL effects; see :mod:`twinstream.evaluation.synthetic` for the
protocol. Registered on the ``eval`` group by :mod:`twinstream.commands.evaluate`.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def print_report(report: dict) -> None:
    table = Table(title=f"gap filling on {report['data']} ({report['test_series']} test series, seed {report['seed']})")
    for col in ("method", "block MAE", "block RMSE", "random MAE", "random RMSE"):
        table.add_column(col, justify="right")
    rows = dict(report["imputation"]["block"])
    for name in rows:
        b, r = report["imputation"]["block"][name], report["imputation"]["random"][name]
        table.add_row(name, f"{b['mae']:.3f}", f"{b['rmse']:.3f}", f"{r['mae']:.3f}", f"{r['rmse']:.3f}")
    for name in ("generator_sample", "kalman_noise"):
        if name in report.get("sample_errors", {}).get("block", {}):
            b, r = report["sample_errors"]["block"][name], report["sample_errors"]["random"][name]
            table.add_row(f"{name} (one sample)", f"{b['mae']:.3f}", f"{b['rmse']:.3f}", f"{r['mae']:.3f}", f"{r['rmse']:.3f}")
    ref = report["reference"]["kalman_on_complete_series"]
    table.add_row("(kalman on the complete series)", f"{ref['block']['mae']:.3f}", f"{ref['block']['rmse']:.3f}",
                  f"{ref['random']['mae']:.3f}", f"{ref['random']['rmse']:.3f}")
    Console(width=max(Console().width, 100)).print(table)
    for mask, methods in (report.get("seed_spread") or {}).items():
        console.print(f"{mask} MAE over seeds {report['seeds'][0]}-{report['seeds'][-1]}: " + ", ".join(
            f"{name} {s['mae_mean']:.3f} ± {s['mae_std']:.3f}" for name, s in methods.items()))
    detection = report.get("gap_detection")
    if detection:
        console.print(f"gap detector on {detection['engines']} engines: {detection['clean']['false_gaps']} false gaps as recorded; "
                      + ", ".join(
            f"{k} found {f['found']}/{f['injected']} (false {f['false_gaps']}, median delay {f['delay_median']})"
            for k, f in detection["faults"].items()))
    for name, d in (report.get("discriminative") or {}).items():
        console.print(f"discriminative score {name}: {d['score']:.3f} "
                      f"(accuracy {d['accuracy']:.3f} on {d['test_windows']} held-out windows)")
    gate = report.get("gate")
    if gate:
        measured = ", ".join(f"{k} {v:.3f}" for k, v in gate["measured"].items())
        verdict = "[green]passes[/]" if gate["passes"] else f"[yellow]fails[/] ({'; '.join(gate['failures'])})"
        console.print(f"gate on this run: {measured} -> {verdict}")
    for key in ("rul_rmse_ratio_missing30", "tstr_rmse"):
        if key in report:
            console.print(f"{key}: {report[key]:.3f}")
    if report["not_measured"]:
        console.print(f"not measured: {', '.join(report['not_measured'])}")


def synth(
    json_path: Path | None = typer.Option(None, "--json", help="Write the report as JSON here."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Evaluate on this telemetry CSV instead of C-MAPSS."),
    time_column: str | None = typer.Option(None, "--time-column", help="CSV column to order rows by (number or ISO time)."),
    columns: list[str] | None = typer.Option(None, "--columns", help="CSV columns to use (repeat; default: all numeric)."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="CSV: share of rows (first part) used to fit."),
    subset: str = typer.Option("FD001", "--subset", help="C-MAPSS subset."),
    data: Path | None = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled)."),
    limit_engines: int | None = typer.Option(None, "--limit-engines", help="Only engines with unit <= N (smoke runs)."),
    docs: Path | None = typer.Option(None, "--docs", help="Write synthetic.md here (C-MAPSS run)."),
    seed: int = typer.Option(0, help="Seed of both masks."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Also draw the masks with the next N-1 seeds and report the spread."),
    gaps: bool = typer.Option(True, "--gaps/--no-gaps", help="C-MAPSS: also score the gap detector on injected faults."),
    generator: bool = typer.Option(True, "--generator/--no-generator", help="Score the generator (and its samples)."),
    generator_dir: Path | None = typer.Option(None, "--generator-dir", help="C-MAPSS: generator artifact (default: bundled)."),
    generator_epochs: int = typer.Option(15, "--generator-epochs", min=1, help="CSV: epochs of the generator trained on the first part."),
    generator_windows: int = typer.Option(8000, "--generator-windows", min=64, help="CSV: training windows of that generator."),
    draws: int = typer.Option(10, "--draws", min=1, help="Block-mask draws whose windows the discriminative classifier sees."),
    discriminative: bool = typer.Option(True, "--discriminative/--no-discriminative", help="Measure discriminative scores."),
    rul: bool = typer.Option(True, "--rul/--no-rul", help="C-MAPSS: RUL effects (twinstream.evaluation.synth_rul) of the generator."),
) -> None:
    """Hide known sensor values with seeded masks, fill them with the generator and each baseline, score and gate."""
    import tempfile

    import torch

    from twinstream.evaluation import synthetic

    torch.set_num_threads(1)  # shared cores: two intra-op threads were ~17x slower under load here
    from twinstream.evaluation.synth_eval import add_generator_results, load_or_train

    if csv_path is not None:
        if docs is not None:
            console.print("[red]--docs documents the C-MAPSS run; use --json for a CSV[/red]")
            raise typer.Exit(2)
        from twinstream.commands.synth import csv_dataset_or_exit

        dataset = csv_dataset_or_exit(csv_path, time_column, columns, train_fraction)
    else:
        dataset = synthetic.cmapss_dataset(subset, data, limit_engines)
    with console.status("evaluating ...") as status, tempfile.TemporaryDirectory() as tmp:
        gen, gen_info = (load_or_train(dataset, csv_path, generator_dir, Path(tmp), generator_epochs, generator_windows, seed,
                                       status.update) if generator else (None, {}))
        report = synthetic.evaluate_imputation(dataset, seed, status.update, seeds, generator=gen)
        add_generator_results(report, dataset, gen, gen_info, seed=seed, draws=draws, discriminative=discriminative,
                              rul=rul and csv_path is None, subset=subset, data_dir=data, quick=limit_engines is not None,
                              progress=status.update)
        if gaps and csv_path is None:
            from twinstream.evaluation.gap_eval import evaluate_detection

            status.update("gap detection on injected faults")
            report["gap_detection"] = evaluate_detection(subset, data, seed, limit_engines)
    parts = [("--csv", csv_path), ("--time-column", time_column), ("--subset", None if csv_path else subset),
             ("--data", data), ("--limit-engines", limit_engines), ("--seed", seed),
             ("--seeds", seeds if seeds > 1 else None), ("--no-gaps", "" if not gaps and csv_path is None else None),
             ("--no-generator", "" if not generator else None), ("--generator-dir", generator_dir),
             ("--draws", draws if draws != 10 else None), ("--no-discriminative", "" if not discriminative else None),
             ("--no-rul", "" if not rul and csv_path is None else None)]
    parts += [("--columns", c) for c in columns or []]
    report["command"] = "twinstream eval synth " + " ".join(f"{f} {v}".strip() for f, v in parts if v is not None)
    print_report(report)
    if docs is not None:
        path = synthetic.write_docs(report, docs)
        console.print(f"[green]wrote[/] {path}")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"[green]wrote[/] {json_path}")
