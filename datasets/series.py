"""Data and masks of the gap-filling evaluation (``twinstream eval synth``), see :mod:`twinstream.evaluation.synthetic`.

C-MAPSS: the informative sensors of each engine, z-scored with the training engines'
statistics. A CSV: one series sorted by its time column, the first part to fit, the
rest to score. Two seeded masks hide values whose truth is known: ``random`` (each value
with probability 0.3) and ``block`` (one 10-sample block of all columns per series of at
least 40 samples, never touching the ends).

>>> rng = np.random.default_rng(0)
>>> m = block_mask([np.zeros((45, 2)), np.zeros((30, 2))], rng)
>>> int(m[0].sum()), int(m[1].sum()), bool(m[0][0].any() or m[0][-1].any())
(20, 0, False)
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from twinstream.datasets import cmapss

RANDOM_RATE = 0.3
BLOCK = 10
MIN_BLOCK_SERIES = 40
CSV_BLOCK_EVERY = 100


@dataclass
class Dataset:
    """Z-scored training and test series (each ``(T, D)``) with their column names."""

    name: str
    columns: list[str]
    train: list[np.ndarray]
    test: list[np.ndarray]
    mean: np.ndarray
    std: np.ndarray
    test_block_every: int | None = None  # None: one block per test series


def zscore(train: list[np.ndarray], test: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, np.ndarray]:
    """Both sets scaled with the training mean and standard deviation (NaN ignored; constant columns get 1)."""
    stacked = np.concatenate(train)
    mean = np.nanmean(stacked, axis=0)
    std = np.nanstd(stacked, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return [(s - mean) / std for s in train], [(s - mean) / std for s in test], mean, std


def cmapss_dataset(subset: str = "FD001", data_dir: Path | None = None, limit_engines: int | None = None) -> Dataset:
    """The informative sensors of a C-MAPSS subset, one series per engine."""
    fd = cmapss.load_subset(subset, data_dir)
    columns = list(cmapss.INFORMATIVE_SENSORS)

    def engines(rows: list[cmapss.Cycle]) -> list[np.ndarray]:
        by_unit: dict[int, list[list[float]]] = {}
        for r in sorted(rows, key=lambda r: (r.unit, r.cycle)):
            if limit_engines is None or r.unit <= limit_engines:
                by_unit.setdefault(r.unit, []).append([r.sensors[c] for c in columns])
        return [np.array(v) for _, v in sorted(by_unit.items())]

    train, test, mean, std = zscore(engines(fd.train), engines(fd.test))
    return Dataset(f"C-MAPSS {subset}", columns, train, test, mean, std)


def _time_key(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def csv_dataset(path: Path, time_column: str, columns: Sequence[str] | None = None, train_fraction: float = 0.5) -> Dataset:
    """A telemetry CSV as one series: the first ``train_fraction`` of rows to fit, the rest to score.

    Empty cells and non-numbers are missing values (never scored). Without ``columns``,
    every column except the time column that has at least one number is used.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError("train_fraction must be between 0 and 1")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no rows")
    header = list(rows[0])
    if time_column not in header:
        raise ValueError(f"{path}: no column {time_column!r} (columns: {', '.join(header)})")

    def number(text: str | None) -> float:
        try:
            value = float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan
        return value if math.isfinite(value) else math.nan

    rows.sort(key=lambda row: _time_key(row[time_column]))
    if columns:
        unknown = [c for c in columns if c not in header]
        if unknown:
            raise ValueError(f"{path}: no column(s) {', '.join(unknown)}")
        names = list(columns)
    else:
        names = [c for c in header if c != time_column and any(math.isfinite(number(r[c])) for r in rows)]
    if not names:
        raise ValueError(f"{path}: no numeric column")
    data = np.array([[number(r[c]) for c in names] for r in rows])
    split = int(len(data) * train_fraction)
    if split < 10 or len(data) - split < MIN_BLOCK_SERIES:
        raise ValueError(f"{path}: {len(data)} rows are too few (need 10 to fit and {MIN_BLOCK_SERIES} to score)")
    train, test, mean, std = zscore([data[:split]], [data[split:]])
    return Dataset(f"CSV {Path(path).name}", names, train, test, mean, std, test_block_every=CSV_BLOCK_EVERY)


def random_mask(series: Sequence[np.ndarray], rng: np.random.Generator, rate: float = RANDOM_RATE) -> list[np.ndarray]:
    """Each observed value hidden independently with probability ``rate``."""
    return [(rng.random(s.shape) < rate) & ~np.isnan(s) for s in series]


def block_mask(series: Sequence[np.ndarray], rng: np.random.Generator, every: int | None = None,
               length: int = BLOCK, min_length: int = MIN_BLOCK_SERIES) -> list[np.ndarray]:
    """One block of ``length`` samples (all columns) per series of at least ``min_length`` samples.

    With ``every``, a series is cut into consecutive runs of ``every`` samples and each run
    of at least ``min_length`` gets its own block. A block never touches a run's ends.
    """
    masks = []
    for s in series:
        m = np.zeros(s.shape, dtype=bool)
        step = every or len(s)
        for start in range(0, len(s), step):
            stop = min(len(s), start + step)
            if stop - start >= min_length:
                at = start + int(rng.integers(1, stop - start - length))  # >= 1 observed sample each side
                m[at:at + length] = True
        masks.append(m & ~np.isnan(s))
    return masks


def make_masks(data: Dataset, seed: int) -> dict[str, list[np.ndarray]]:
    """Both masks of the test series for one seed."""
    return {
        "block": block_mask(data.test, np.random.default_rng([seed, 1]), every=data.test_block_every),
        "random": random_mask(data.test, np.random.default_rng([seed, 0])),
    }
