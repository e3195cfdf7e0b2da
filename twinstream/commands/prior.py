"""``twinstream prior train``: train the fleet prior and write a verified artifact.

The artifact (``manifest.json`` + ``weights.npz``) is what twins load; the default one
bundled in the package is produced by this very command on FD001 train:
``twinstream prior train --data datasets/cmapss --out models/priors/fd001``. A prior for
any declared kind comes from the user's own history:
``twinstream prior train --spec twins.yaml --kind pump --csv history.csv --entity-column pump
--time-column time [--label-column rul] --out priors/pump``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Fleet prior: train and inspect versioned prior artifacts.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("train")
def train(
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (manifest.json + weights.npz)."),
    data: Path | None = typer.Option(None, "--data", help="Directory with NASA's C-MAPSS files (train_FD00X.txt, ...)."),
    csv: Path | None = typer.Option(None, "--csv", help="History table of your own fleet (CSV, or Parquet by suffix)."),
    spec: Path | None = typer.Option(None, "--spec", help="twins.yaml declaring the kind (with --csv)."),
    kind: str | None = typer.Option(None, "--kind", help="Kind to train (default: the spec's only kind)."),
    entity_column: str | None = typer.Option(None, "--entity-column", help="Column naming the entity of a row."),
    time_column: str | None = typer.Option(None, "--time-column", help="Column ordering an entity's rows (numbers or ISO times)."),
    label_column: str | None = typer.Option(None, "--label-column", help="Column holding the label task's target."),
    rul_from_end: bool = typer.Option(
        False, "--rul-from-end", help="Label = samples left until the entity's last row (run-to-failure history)."
    ),
    cap: float | None = typer.Option(None, "--cap", help="Cap labels at this value (with --csv; C-MAPSS uses 125)."),
    family: str | None = typer.Option(None, "--family", help="Prior family (with --csv; default: the kind's name)."),
    version: str = typer.Option("1", "--version", help="Artifact version (with --csv)."),
    subset: str = typer.Option("FD001", "--subset", help="Which subset's training engines to learn from."),
    epochs: int = typer.Option(100, help="Training epochs per ensemble member."),
    hidden: int = typer.Option(128, help="Hidden units per member of the twin head."),
    prior_hidden: int = typer.Option(64, help="Hidden units per member of the prior head."),
    folds: int = typer.Option(5, help="Ensemble members (engine folds)."),
    seed: int = typer.Option(0, help="Random seed (data split and initialisation)."),
    threads: int = typer.Option(1, help="torch threads (cores are shared: 1 by default)."),
    synthetic: Path | None = typer.Option(
        None,
        "--synthetic",
        help="Trajectory generator artifact (with --data): add its "
        "run-to-failure trajectories to the training engines; refused unless it passes its gate.",
    ),
    synthetic_count: int = typer.Option(0, "--synthetic-count", min=0, help="Synthetic engines to add (default: as many as real ones)."),
) -> None:
    """Train a prior: on C-MAPSS's run-to-failure engines (--data), or on your own history for a kind (--csv --spec)."""
    if (data is None) == (csv is None):
        console.print("[red]give exactly one of --data DIR (C-MAPSS) or --csv FILE (your history, with --spec)[/red]")
        raise typer.Exit(2)
    if synthetic is not None and data is None:
        console.print("[red]--synthetic adds trajectories to C-MAPSS engines: it needs --data[/red]")
        raise typer.Exit(2)
    if csv is not None:
        manifest = _train_history(
            out,
            csv,
            spec,
            kind,
            entity_column,
            time_column,
            label_column,
            rul_from_end,
            cap,
            family,
            version,
            epochs,
            hidden,
            prior_hidden,
            folds,
            seed,
            threads,
        )
    else:
        import tempfile

        from twinstream.models.prior_train import train_prior

        with tempfile.TemporaryDirectory(prefix="prior-synthetic-") as tmp:
            if synthetic is not None:
                data = _with_synthetic(data, subset, synthetic, synthetic_count, seed, Path(tmp))
            with console.status(f"training prior on {subset} ...") as status:
                manifest = train_prior(
                    out,
                    subset=subset,
                    data_dir=data,
                    folds=folds,
                    hidden=hidden,
                    prior_hidden=prior_hidden,
                    epochs=epochs,
                    seed=seed,
                    threads=threads,
                    progress=lambda msg: status.update(f"training prior on {subset}: {msg}"),
                )
    console.print(f"[green]wrote[/] {out} ({manifest.prior_version}, weights sha256 {manifest.weights_sha256[:12]}...)")
    for name, value in manifest.metrics.items():
        console.print(f"  {name}: {value:.3f}")


def _with_synthetic(data: Path, subset: str, generator: Path, count: int, seed: int, tmp: Path) -> Path:
    """A copy of the subset in ``tmp`` whose training file also holds generated engines (numbered after the real ones).

    The generator is loaded through its gate: a tampered artifact or one whose recorded
    gate metrics fail is refused here, with the reason, and nothing is trained. Generated
    engines carry the settings and other sensors of a real engine (cycled when longer).
    """
    import shutil

    import numpy as np

    from twinstream.datasets import cmapss
    from twinstream.models.trajectory_artifact import TrajectoryGeneratorRejected, synthetic_trajectories

    fd = cmapss.load_subset(subset, data)
    by_unit: dict[int, list] = {}
    for row in sorted(fd.train, key=lambda r: (r.unit, r.cycle)):
        by_unit.setdefault(row.unit, []).append(row)
    sensors = list(cmapss.INFORMATIVE_SENSORS)
    rng = np.random.default_rng([seed, 41])
    try:
        fake = synthetic_trajectories(generator, count or len(by_unit), rng, sensors=sensors)
    except (TrajectoryGeneratorRejected, FileNotFoundError) as exc:
        console.print(f"[red]refusing the synthetic trajectories: {exc}[/red]")
        raise typer.Exit(2) from None
    templates = list(by_unit.values())
    first = max(by_unit) + 1
    paths, source = cmapss.subset_files(subset, tmp), cmapss.subset_files(subset, data)
    for kind in ("test", "RUL"):
        shutil.copyfile(source[kind], paths[kind])
    with paths["train"].open("w") as handle:
        rows = [r for rs in templates for r in rs]
        for i, traj in enumerate(fake):
            template = templates[int(rng.integers(len(templates)))]
            for t, values in enumerate(traj):
                base = template[t % len(template)]
                rows.append(cmapss.Cycle(first + i, t + 1, base.settings, {**base.sensors, **dict(zip(sensors, map(float, values)))}))
        for r in rows:
            values = [r.settings[c] for c in cmapss.SETTING_COLUMNS] + [r.sensors[c] for c in cmapss.SENSOR_COLUMNS]
            handle.write(f"{r.unit} {r.cycle} " + " ".join(f"{v:.4f}" for v in values) + "\n")
    console.print(f"added {len(fake)} synthetic engines from {generator}")
    return tmp


def _train_history(
    out: Path,
    csv: Path,
    spec: Path | None,
    kind: str | None,
    entity_column: str | None,  # noqa: PLR0913
    time_column: str | None,
    label_column: str | None,
    rul_from_end: bool,
    cap: float | None,
    family: str | None,
    version: str,
    epochs: int,
    hidden: int,
    prior_hidden: int,
    folds: int,
    seed: int,
    threads: int,
):  # -> PriorManifest
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from twinstream.commands.history_options import load_kind_history
    from twinstream.models.prior_history import HistoryError, train_history_prior, trainable_tasks

    chosen, history = load_kind_history(console, csv, spec, kind, entity_column, time_column, label_column, rul_from_end)
    labels, forecasts = trainable_tasks(chosen)
    total = 1 + (2 * folds if labels else 0) + len(forecasts)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(f"prior for {chosen.name}", total=total)

        def step(message: str) -> None:
            bar.update(task, advance=1 if message != "features" else 0, description=f"prior for {chosen.name}: {message}")

        try:
            manifest = train_history_prior(
                out,
                chosen,
                history,
                csv,
                family=family,
                version=version,
                cap=cap,
                folds=folds,
                hidden=hidden,
                prior_hidden=prior_hidden,
                epochs=epochs,
                seed=seed,
                threads=threads,
                progress=step,
            )
        except HistoryError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        bar.update(task, completed=total)
    return manifest


@app.command("show")
def show(
    directory: Path = typer.Argument(..., help="Artifact directory."),
    spec: Path | None = typer.Option(None, "--spec", help="twins.yaml: verify against this kind's feature schema."),
    kind: str | None = typer.Option(None, "--kind", help="Kind in --spec (default: the spec's only kind)."),
) -> None:
    """Verify an artifact (sha256, feature schema) and print its manifest."""
    from twinstream.models.features import EXTRACTOR, RulFeatures
    from twinstream.models.prior import PriorMismatchError, load_prior
    from twinstream.models.prior_history import load_kind_prior
    from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest

    try:
        manifest = PriorManifest.model_validate_json((directory / MANIFEST_FILE).read_bytes())
        if spec is not None:
            from twinstream.commands.history_options import pick_kind

            load_kind_prior(directory, pick_kind(console, spec, kind))
        elif manifest.feature_schema.extractor == EXTRACTOR:
            load_prior(directory, RulFeatures().schema())
        else:
            load_kind_prior(directory)
    except (PriorMismatchError, FileNotFoundError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    typer.echo(manifest.model_dump_json(indent=2))


if __name__ == "__main__":
    app()
