"""``twinstream synth train``: train a gap-filling generator and write its gated artifact.

The bundled artifact (``models/generators/fd001``) is produced by this very command:
``twinstream synth train --subset FD001 --out models/generators/fd001``. See
:mod:`twinstream.models.generator_fit` for the steps and docs/synthetic.md for the method.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from twinstream.datasets.series import Dataset

app = typer.Typer(help="Synthetic data: train and inspect generator artifacts (gap fills, whole trajectories).", no_args_is_help=True)
console = Console(stderr=True)


def training_files(subset: str, data: Path | None) -> dict[str, str]:
    from twinstream.datasets.cmapss import subset_files
    from twinstream.models.generator import sha256_file

    path = Path(subset_files(subset, data)["train"])
    return {path.name: sha256_file(path)}


def csv_dataset_or_exit(csv_path: Path, time_column: str | None, columns: list[str] | None,
                        train_fraction: float) -> Dataset:
    """The ``--csv`` data set of ``synth train`` and ``eval synth``; a bad file or option exits 2 with the reason."""
    from twinstream.datasets import series

    if time_column is None:
        console.print("[red]--csv needs --time-column[/red]")
        raise typer.Exit(2)
    try:
        return series.csv_dataset(csv_path, time_column, columns, train_fraction)
    except (OSError, ValueError) as exc:
        console.print(f"[red]cannot use {csv_path}:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command("train")
def train(
    out: Path = typer.Option(Path("twinstream-generator"), "--out", help="Artifact directory to write (manifest.json + weights.npz)."),
    subset: str = typer.Option("FD001", "--subset", help="C-MAPSS subset whose training engines to learn from."),
    data: Path | None = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled)."),
    csv_path: Path | None = typer.Option(None, "--csv", help="Train on this telemetry CSV instead (its first part)."),
    time_column: str | None = typer.Option(None, "--time-column", help="CSV column to order rows by."),
    columns: list[str] | None = typer.Option(None, "--columns", help="CSV columns (repeat; default: all numeric)."),
    train_fraction: float = typer.Option(0.5, "--train-fraction", help="CSV: share of rows (first part) to train on."),
    epochs: int = typer.Option(15, "--epochs", min=1, help="Passes over the training windows."),
    windows: int = typer.Option(8000, "--windows", min=64, help="Training windows drawn (masked with every gap kind)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, windows, masks and initialisation."),
    version: str = typer.Option("1", "--version", help="Artifact version within the family."),
) -> None:
    """Train the Kalman-trend + diffusion-residual generator, measure its gate on held-out data, write it."""
    from twinstream.datasets import series
    from twinstream.models.generator import sha256_file
    from twinstream.models.generator_fit import train_generator
    from twinstream.settings import Settings

    if csv_path is not None:
        dataset = csv_dataset_or_exit(csv_path, time_column, columns, train_fraction)
        files = {csv_path.name: sha256_file(csv_path)}
    else:
        dataset = series.cmapss_dataset(subset, data)
        files = training_files(subset, data)
    with console.status(f"training generator on {dataset.name} ...") as status:
        manifest, timing = train_generator(dataset, out, training_data=files, version=version, epochs=epochs, windows=windows,
                                           seed=seed, progress=lambda msg: status.update(f"generator on {dataset.name}: {msg}"))
    console.print(f"[green]wrote[/] {out} ({manifest.generator_version}, weights sha256 {manifest.weights_sha256[:12]}..., "
                  f"{(out / manifest.weights_file).stat().st_size / 1024:.0f} KiB) in {timing['total_s']:.0f} s "
                  f"(diffusion training {timing['diffusion_s']:.0f} s)")
    for name, value in {**manifest.gate, **manifest.metrics}.items():
        console.print(f"  {name}: {value:.4f}")
    failures = Settings().synth_gate().failures(manifest.gate)
    console.print("[green]passes the configured gate[/]" if not failures
                  else f"[yellow]fails the configured gate:[/] {'; '.join(failures)}")


@app.command("trajectories")
def trajectories(
    out: Path = typer.Option(Path("twinstream-trajectories"), "--out", help="Artifact directory to write (manifest + weights)."),
    subset: str = typer.Option("FD001", "--subset", help="C-MAPSS subset whose run-to-failure training engines to learn from."),
    data: Path | None = typer.Option(None, "--data", help="C-MAPSS directory in NASA's layout (default: bundled)."),
    engines: int | None = typer.Option(None, "--engines", min=2, help="Learn from this many engines, drawn with --seed (default: all)."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Training steps of the denoiser (default: the model's own)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the engine draw, training and gate."),
    gate_splits: int | None = typer.Option(None, "--gate-splits", min=1, help="Splits of the gate's measurements (default: its own)."),
    version: str = typer.Option("1", "--version", help="Artifact version within the family."),
) -> None:
    """Train the diffusion generator of whole run-to-failure trajectories; write it with its gate metrics.

    ``twinstream prior train --data DIR --synthetic OUT`` adds its trajectories to a prior's
    training engines, and refuses an artifact whose recorded gate fails (or was altered).
    """
    import numpy as np

    from twinstream.datasets import cmapss
    from twinstream.models.trajectory_artifact import train_trajectory_generator
    from twinstream.models.trajectory_diffusion import TRAIN_STEPS
    from twinstream.models.trajectory_gate import SPLITS
    from twinstream.schemas.trajectory_generator import TrajectoryGateThresholds

    fd = cmapss.load_subset(subset, data)
    sensors = list(cmapss.INFORMATIVE_SENSORS)
    by_unit: dict[int, list[list[float]]] = {}
    for row in sorted(fd.train, key=lambda r: (r.unit, r.cycle)):
        by_unit.setdefault(row.unit, []).append([row.sensors[s] for s in sensors])
    units = sorted(by_unit)
    if engines is not None:
        if engines > len(units):
            console.print(f"[red]--engines {engines}: the subset has {len(units)} training engines[/red]")
            raise typer.Exit(2)
        units = sorted(int(u) for u in np.random.default_rng(seed).choice(units, engines, replace=False))
    series = {str(u): np.asarray(by_unit[u], dtype=float) for u in units}
    with console.status(f"training the trajectory generator on {len(series)} engines of {subset} ..."):
        manifest = train_trajectory_generator(out, series, sensors, version=version, seed=seed, steps=steps or TRAIN_STEPS,
                                              gate_splits=gate_splits or SPLITS)
    console.print(f"[green]wrote[/] {out} (weights sha256 {manifest.weights_sha256[:12]}..., gate against {manifest.gate_reference})")
    for name, value in manifest.gate.items():
        console.print(f"  {name}: {value:.4f}")
    failures = TrajectoryGateThresholds().failures(manifest.gate)
    console.print("[green]passes the default gate[/]" if not failures
                  else f"[yellow]fails the default gate (the prior trainer will refuse it):[/] {'; '.join(failures)}")


@app.command("show")
def show(directory: Path | None = typer.Argument(None, help="Artifact directory (default: the bundled one).")) -> None:
    """Verify an artifact (sha256, schema) and print its manifest; the gate is reported, not enforced."""
    from twinstream.models.generator import load_generator
    from twinstream.schemas.generator import GateThresholds
    from twinstream.settings import Settings

    gen = load_generator(directory, GateThresholds(max_mae_ratio=None, max_discriminative=None))
    typer.echo(gen.manifest.model_dump_json(indent=2))
    failures = Settings().synth_gate().failures(gen.manifest.gate)
    console.print("passes the configured gate" if not failures else f"fails the configured gate: {'; '.join(failures)}")


if __name__ == "__main__":
    app()
