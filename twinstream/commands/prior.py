"""``twinstream prior train``: train the fleet prior and write a verified artifact.

The artifact (``manifest.json`` + ``weights.npz``) is what twins load; the default one
bundled in the package is produced by this very command on FD001 train:
``twinstream prior train --data datasets/cmapss --out models/priors/fd001``.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Fleet prior: train and inspect versioned prior artifacts.", no_args_is_help=True)
console = Console(stderr=True)


@app.command("train")
def train(
    data: Path = typer.Option(..., "--data", help="Directory with NASA's C-MAPSS files (train_FD00X.txt, ...)."),
    out: Path = typer.Option(..., "--out", help="Artifact directory to write (manifest.json + weights.npz)."),
    subset: str = typer.Option("FD001", "--subset", help="Which subset's training engines to learn from."),
    epochs: int = typer.Option(100, help="Training epochs per ensemble member."),
    hidden: int = typer.Option(128, help="Hidden units per member of the twin head."),
    prior_hidden: int = typer.Option(64, help="Hidden units per member of the prior head."),
    folds: int = typer.Option(5, help="Ensemble members (engine folds)."),
    seed: int = typer.Option(0, help="Random seed (data split and initialisation)."),
    threads: int = typer.Option(1, help="torch threads (cores are shared: 1 by default)."),
) -> None:
    """Train the prior on a subset's run-to-failure engines."""
    from twinstream.models.prior_train import train_prior

    with console.status(f"training prior on {subset} ...") as status:
        manifest = train_prior(
            out, subset=subset, data_dir=data, folds=folds, hidden=hidden, prior_hidden=prior_hidden, epochs=epochs, seed=seed,
            threads=threads, progress=lambda msg: status.update(f"training prior on {subset}: {msg}"),
        )
    console.print(f"[green]wrote[/] {out} ({manifest.prior_version}, weights sha256 {manifest.weights_sha256[:12]}...)")
    for name, value in manifest.metrics.items():
        console.print(f"  {name}: {value:.3f}")


@app.command("show")
def show(directory: Path = typer.Argument(..., help="Artifact directory.")) -> None:
    """Verify an artifact (sha256, feature schema) and print its manifest."""
    from twinstream.models.features import RulFeatures
    from twinstream.models.prior import load_prior

    prior = load_prior(directory, RulFeatures().schema())
    typer.echo(prior.manifest.model_dump_json(indent=2))


if __name__ == "__main__":
    app()
