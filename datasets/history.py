r"""History tables: a time series per entity from a CSV or Parquet file, for training and evaluation.

``load_series`` reads one value column (stream evaluation); ``load_history`` reads an entity's
metric columns and its label (prior training, federated sites).

Why here (the bottom layer): training entry points (a prior fitted on history) and the
evaluation harness read the same files the same way, and neither should depend on the
other. No pandas: CSV through the standard library, Parquet through pyarrow (imported
only for a Parquet file). Missing cells (empty, ``nan``, ``null``, ``NA``, ...) become NaN.

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "t.csv"
>>> _ = path.write_text("time,unit,x\n2,a,2.0\n1,a,1.0\n1,b,\n")
>>> {e: v.tolist() for e, v in load_series(path, "x", "time", "unit").items()}
{'a': [1.0, 2.0], 'b': [nan]}
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

MISSING = {"", "nan", "NaN", "null", "NULL", "None", "NA", "na"}


def read_table(path: Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV (or Parquet) file as lists of strings (no pandas needed)."""
    path = Path(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq  # optional: only Parquet input needs it

        table = pq.read_table(path, columns=list(columns))
        return {c: ["" if v is None else str(v) for v in table.column(c).to_pylist()] for c in columns}
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: no column {', '.join(missing)} (columns: {', '.join(reader.fieldnames or [])})")
        out: dict[str, list[str]] = {c: [] for c in columns}
        for row in reader:
            for c in columns:
                out[c].append(row[c] or "")
        return out


def _time_key(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        pass
    try:
        return (0, datetime.fromisoformat(text).timestamp())
    except ValueError:
        return (1, text)


def _value(text: str) -> float:
    if text.strip() in MISSING:
        return math.nan
    v = float(text)
    return v if math.isfinite(v) else math.nan


def load_timed_series(
    path: Path, value_column: str, time_column: str, entity_column: str | None
) -> dict[str, tuple[list[tuple[int, float | str]], np.ndarray]]:
    """Per entity, (time keys, values) in time order (ties keep file order); NaN for gaps."""
    columns = [time_column, value_column] + ([entity_column] if entity_column else [])
    table = read_table(path, columns)
    entities = table[entity_column] if entity_column else ["series"] * len(table[time_column])
    rows: dict[str, list[tuple[tuple[int, float | str], int, float]]] = {}
    for i, (entity, t, v) in enumerate(zip(entities, table[time_column], table[value_column])):
        rows.setdefault(entity, []).append((_time_key(t), i, _value(v)))
    out = {}
    for e, r in rows.items():
        r.sort()
        out[e] = ([k for k, _, _ in r], np.array([v for _, _, v in r]))
    return out


def time_key(text: str) -> tuple[int, float | str]:
    """Sort key of a time cell: numbers and ISO date-times as seconds, anything else as text."""
    return _time_key(text)


def load_series(path: Path, value_column: str, time_column: str, entity_column: str | None) -> dict[str, np.ndarray]:
    """Per entity, the value column in time order (ties keep file order); NaN for gaps."""
    return {e: values for e, (_, values) in load_timed_series(path, value_column, time_column, entity_column).items()}


@dataclass(frozen=True)
class EntityHistory:
    """One entity's rows in time order: its metric columns and (optionally) its label, NaN where missing."""

    entity: str
    times: list[tuple[int, float | str]]
    metrics: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.times)

    def rows(self) -> list[dict[str, float]]:
        """The metrics of every row as a mapping (NaN = missing), in time order: what a twin receives per sample."""
        names = list(self.metrics)
        columns = [self.metrics[n] for n in names]
        return [{n: float(c[i]) for n, c in zip(names, columns)} for i in range(len(self.times))]


def remaining_samples(n: int) -> np.ndarray:
    """Labels of a run-to-failure history of ``n`` rows: samples left until its last row (which has 0).

    >>> remaining_samples(3).tolist()
    [2.0, 1.0, 0.0]
    """
    return np.arange(n - 1, -1, -1, dtype=float)


def load_history(
    path: Path,
    entity_column: str,
    time_column: str,
    metrics: Sequence[str],
    label_column: str | None = None,
    rul_from_end: bool = False,
) -> dict[str, EntityHistory]:
    r"""Per entity (in order of first appearance), its rows sorted by time (ties keep file order).

    Metric and label cells that are empty or not numbers (``nan``, ``NA``, ...) are NaN,
    never zeros. ``rul_from_end`` labels each row with the samples left until the
    entity's last row (a run-to-failure history) instead of reading ``label_column``.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "h.csv"
    >>> _ = path.write_text("unit,t,flow,rul\nb,1,5.0,9\na,2,2.0,\na,1,1.0,3\nb,2,,8\n")
    >>> h = load_history(path, "unit", "t", ["flow"], "rul")
    >>> list(h), h["a"].metrics["flow"].tolist(), h["a"].labels.tolist(), h["b"].metrics["flow"].tolist()
    (['b', 'a'], [1.0, 2.0], [3.0, nan], [5.0, nan])
    >>> load_history(path, "unit", "t", ["flow"], rul_from_end=True)["b"].labels.tolist()
    [1.0, 0.0]
    """
    if label_column is not None and rul_from_end:
        raise ValueError("give a label column or rul_from_end, not both")
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise ValueError("no metric columns to read")
    columns = list(dict.fromkeys([entity_column, time_column, *metrics, *([label_column] if label_column else [])]))
    table = read_table(path, columns)
    order: dict[str, list[tuple[tuple[int, float | str], int]]] = {}
    for i, (entity, t) in enumerate(zip(table[entity_column], table[time_column])):
        order.setdefault(entity, []).append((_time_key(t), i))
    out: dict[str, EntityHistory] = {}
    for entity, keyed in order.items():
        keyed.sort()
        idx = [i for _, i in keyed]
        values = {m: np.array([_value(table[m][i]) for i in idx]) for m in metrics}
        labels = None
        if label_column is not None:
            labels = np.array([_value(table[label_column][i]) for i in idx])
        elif rul_from_end:
            labels = remaining_samples(len(idx))
        out[entity] = EntityHistory(entity, [k for k, _ in keyed], values, labels)
    if not out:
        raise ValueError(f"{path}: no rows")
    return out
