"""The ``--csv FILE --entity-column E --time-column T [--spec twins.yaml --kind K]`` options, read one way.

``prior train`` and ``federation site`` both take a user's history in this form; a bad
spec, an unknown kind or a missing column ends the command with exit code 2 and a
message naming the problem, before any training starts.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from twinstream.datasets.history import EntityHistory, load_history
from twinstream.schemas.twin_spec import KindSpec, LabelTask, SpecError, load_spec


def _fail(console: Console, message: str) -> typer.Exit:
    console.print(f"[red]{message}[/red]")
    return typer.Exit(2)


def pick_kind(console: Console, spec: Path, kind: str | None) -> KindSpec:
    """The kind named ``kind`` in ``spec`` (or its only kind)."""
    try:
        parsed = load_spec(spec)
    except SpecError as exc:
        raise _fail(console, str(exc)) from None
    names = [k.name for k in parsed.kinds]
    if kind is None:
        if len(names) != 1:
            raise _fail(console, f"{spec} declares {len(names)} kinds ({', '.join(names)}): choose one with --kind")
        return parsed.kinds[0]
    for k in parsed.kinds:
        if k.name == kind:
            return k
    raise _fail(console, f"{spec} has no kind {kind!r} (kinds: {', '.join(names)})")


def load_kind_history(
    console: Console, csv: Path, spec: Path | None, kind: str | None, entity_column: str | None, time_column: str | None,
    label_column: str | None, rul_from_end: bool,
) -> tuple[KindSpec, dict[str, EntityHistory]]:
    """The kind and its history: the kind's metrics as columns; the label task's target (or ``label_column``) as labels."""
    if spec is None:
        raise _fail(console, "--csv needs --spec twins.yaml (the kind's metrics and tasks)")
    if entity_column is None or time_column is None:
        raise _fail(console, "--csv needs --entity-column and --time-column")
    chosen = pick_kind(console, spec, kind)
    if not chosen.metric_names:
        raise _fail(console, f"kind {chosen.name!r} declares no metrics: nothing to read from {csv}")
    label_tasks = [t for t in chosen.tasks if isinstance(t, LabelTask)]
    if label_column is not None and rul_from_end:
        raise _fail(console, "give --label-column or --rul-from-end, not both")
    if label_tasks and label_column is None and not rul_from_end:
        label_column = label_tasks[0].target  # a column named like the target
    if not label_tasks:
        label_column, rul_from_end = None, False  # forecast tasks label themselves
    try:
        history = load_history(csv, entity_column, time_column, chosen.metric_names, label_column, rul_from_end)
    except (ValueError, OSError, KeyError) as exc:
        raise _fail(console, str(exc)) from None
    return chosen, history
