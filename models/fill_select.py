"""Pick a gap filler per series and column from what worked on that series' own recent data.

Why: no single filler wins everywhere. On slowly drifting noisy sensors a Kalman
smoother (or the generator built on it) beats linear interpolation; on step-like or
flat sensors a smoother overshoots the step and the plain line (or the last value)
is better. The series itself says which: hide pieces of what *was* measured, in the
same geometry as the real gap (same length; no data after it when the real gap is
still open at the end), fill them with every candidate, keep per column the candidate
with the lowest error on those pseudo-gaps. Only observed values are ever hidden or
scored, so the choice never sees the values it is about to fill.

The flow, all on plain arrays (``(T, D)``, NaN = missing):

1. :func:`plan` a window: which cells are targets (to fill), the pseudo-gaps to hide
   (``copies`` validation copies of the window, one pseudo-gap per target column in
   each), and which columns are step-like (only non-overshooting candidates allowed);
2. the caller runs each candidate filler on the copies (batched as it likes);
3. :func:`choose` scores the candidates on the hidden cells and returns one
   :class:`Choice` per target column (method, validation MAE/RMSE, cells scored);
4. :func:`combine` takes each target cell from its column's chosen candidate.

:func:`choose_many` does 1-3 for a batch of windows with one call per candidate.

>>> t = np.arange(60, dtype=float)
>>> step = np.where(t < 30, 0.0, 5.0)                  # a step sensor
>>> ramp = 0.1 * t                                     # a smooth one
>>> y = np.column_stack([step, ramp]); y[40:45] = np.nan
>>> p = plan(y)
>>> p.step_like.tolist(), [len(a) for a in p.allowed]
([True, False], [2, 4])
>>> from twinstream.models.imputation import LastValue, LinearInterpolation
>>> fills = {"linear": [LinearInterpolation().impute(c) for c in p.copies],
...          "last_value": [LastValue().impute(c) for c in p.copies]}
>>> [c.method for c in choose(y, p, fills)]
['linear', 'linear']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# candidate names, in the order ties are broken (smoothest first)
KALMAN, GENERATOR, LINEAR, LAST_VALUE = "kalman", "generator", "linear", "last_value"
ORDER = (KALMAN, GENERATOR, LINEAR, LAST_VALUE)
NO_OVERSHOOT = frozenset({LINEAR, LAST_VALUE})  # fills stay within the observed values around the gap
STEP_SHARE = 0.6  # a column is step-like when at least this share of its consecutive observed pairs are equal
COPIES = 4
MAX_GAP_SHARE = 0.25  # pseudo-gaps at most this share of the window
Z = 2.0  # standard errors by which a candidate must beat the default to replace it


@dataclass(frozen=True)
class Choice:
    """The filler chosen for one column of one window, and how it did on the pseudo-gaps.

    ``mae``/``rmse`` are in the column's own units; ``None`` with ``cells == 0`` when the
    window had no room for a pseudo-gap and the default was taken.
    """

    method: str
    mae: float | None
    rmse: float | None
    cells: int
    step_like: bool


@dataclass(frozen=True)
class Plan:
    """Validation copies of one window and what each hides (see the module doc)."""

    targets: np.ndarray  # (T, D) bool: cells to fill
    copies: list[np.ndarray]  # validation copies (NaN at the pseudo-gaps, targets stay NaN)
    hidden: list[np.ndarray]  # (T, D) bool per copy: cells hidden *and scored*
    step_like: np.ndarray  # (D,) bool
    allowed: list[tuple[str, ...]]  # per column, candidates it may use


def is_step_like(column: np.ndarray, share: float = STEP_SHARE) -> bool:
    """True when most consecutive observed values are equal (flat, or a piecewise-constant signal).

    >>> is_step_like(np.array([1.0, 1.0, 1.0, 2.0, 2.0, np.nan, 2.0]))
    True
    >>> is_step_like(np.array([1.0, 1.1, 1.3, 1.2]))
    False
    """
    seen = column[~np.isnan(column)]
    if seen.size < 3:
        return False
    return float(np.mean(np.diff(seen) == 0.0)) >= share


def _runs(missing: np.ndarray) -> list[tuple[int, int]]:
    """``[(start, stop)]`` of the True runs of a 1-D bool array."""
    edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def _starts(observed: np.ndarray, length: int, trailing: bool, count: int) -> list[int]:
    """Up to ``count`` non-overlapping pseudo-gap starts, spread evenly over the valid ones.

    Interior: the ``length`` cells and one on either side are observed. Trailing: the
    cells and the one before are observed (everything after is hidden, unscored), the
    latest such starts first.

    >>> _starts(np.ones(12, bool), 3, False, 2), _starts(np.ones(12, bool), 3, True, 2)
    ([1, 8], [9, 6])
    """
    n = len(observed)
    ok = np.concatenate([[0], np.cumsum(observed)])
    valid = []
    for s in range(1, n - length + (0 if trailing else -1) + 1):
        stop = s + length + (0 if trailing else 1)
        if stop <= n and ok[stop] - ok[s - 1] == stop - s + 1:
            valid.append(s)
    if not valid:
        return []
    if trailing:  # the most recent history: an open gap's fill extrapolates from the latest data
        latest: list[int] = []
        for s in reversed(valid):
            if len(latest) == count:
                break
            if not latest or s <= latest[-1] - length:
                latest.append(s)
        return latest
    picked: list[int] = []
    for i in np.unique(np.linspace(0, len(valid) - 1, min(count, len(valid))).round().astype(int)):
        s = valid[i]
        if not picked or s >= picked[-1] + length + 1:
            picked.append(s)
    return picked


def plan(y: np.ndarray, targets: np.ndarray | None = None, copies: int = COPIES,
         candidates: Sequence[str] = ORDER) -> Plan:
    """The validation copies of window ``y`` for filling ``targets`` (default: every NaN)."""
    y = np.asarray(y, dtype=float)
    missing = np.isnan(y)
    targets = missing.copy() if targets is None else (np.asarray(targets, bool) & missing)
    t, d = y.shape
    step = np.array([is_step_like(y[:, j]) for j in range(d)], dtype=bool)
    allowed = [tuple(c for c in candidates if not step[j] or c in NO_OVERSHOOT) for j in range(d)]
    out = [y.copy() for _ in range(copies)]
    hidden = [np.zeros_like(missing) for _ in range(copies)]
    cap = max(1, int(t * MAX_GAP_SHARE))
    for j in range(d):
        runs = _runs(targets[:, j])
        if not runs:
            continue
        length = min(cap, max(b - a for a, b in runs))
        last_target = runs[-1][1] - 1
        trailing = not (~missing[last_target + 1:, j]).any()
        for k, s in enumerate(_starts(~missing[:, j], length, trailing, copies)):
            out[k][s:(t if trailing else s + length), j] = np.nan
            hidden[k][s:s + length, j] = True
    return Plan(targets, out, hidden, step, allowed)


def clearly_better(err: np.ndarray, base: np.ndarray, z: float = Z) -> bool:
    """True when the per-pseudo-gap MAEs ``err`` beat ``base`` by more than ``z`` standard errors of the paired gap.

    Paired per pseudo-gap, not per cell: the errors inside one gap are strongly
    correlated (one step inside a pseudo-gap makes all its cells wrong together), so
    cells would overstate the evidence. One pseudo-gap is never enough.

    >>> base = np.array([1.0, 0.8, 1.2, 1.0])
    >>> bool(clearly_better(base * 0.5, base)), bool(clearly_better(base * [0.5, 1, 1.5, 0.6], base))
    (True, False)
    """
    if err.size < 2:
        return False
    gap = np.abs(err) - np.abs(base)
    se = float(np.std(gap, ddof=1) / np.sqrt(gap.size))
    return float(np.mean(gap)) + z * se < 0.0


def choose(y: np.ndarray, p: Plan, fills: Mapping[str, Sequence[np.ndarray] | None],
           default: Callable[[bool], str] = lambda step: LINEAR if step else KALMAN, z: float = Z
           ) -> list[Choice | None]:
    """Per column, the allowed candidate with the lowest MAE on the hidden cells (None: nothing to fill).

    The default (``default(step_like)``: Kalman, or linear on a step-like column) is
    kept unless another candidate beats it *clearly* (:func:`clearly_better`): a few
    pseudo-gaps are a small sample, and switching on noise costs more than it gains
    (on FD001's test engines, taking the plain minimum made the block MAE 3% worse
    than the Kalman smoother alone).

    ``fills[name]`` holds the candidate's fill of each copy in ``p.copies`` (NaN where it
    did not fill, e.g. a generator on a sensor it does not know); a candidate that is
    missing or None is skipped. A column with no pseudo-gap takes ``default(step_like)``
    (or the first allowed candidate that produced fills).
    """
    y = np.asarray(y, dtype=float)
    out: list[Choice | None] = []
    for j in range(y.shape[1]):
        if not p.targets[:, j].any():
            out.append(None)
            continue
        step = bool(p.step_like[j])
        scores = []
        for rank, name in enumerate(p.allowed[j]):
            filled = fills.get(name)
            if filled is None:
                continue
            errors = [e for e in (f[h[:, j], j] - y[h[:, j], j] for f, h in zip(filled, p.hidden)) if e.size]
            err = np.concatenate(errors) if errors else np.array([])
            if err.size == 0:
                continue
            if not np.isfinite(err).all():  # this candidate does not fill the column
                continue
            per_gap = np.array([np.mean(np.abs(e)) for e in errors])
            scores.append((float(np.mean(np.abs(err))), rank, name, err, per_gap))
        if scores:
            best = min(scores, key=lambda s: s[:2])
            preferred = next((s for s in scores if s[2] == default(step)), None)
            if preferred is not None and best is not preferred and not clearly_better(best[4], preferred[4], z):
                best = preferred
            err = best[3]
            out.append(Choice(best[2], best[0], float(np.sqrt(np.mean(err ** 2))), int(err.size), step))
            continue
        usable = [n for n in p.allowed[j] if fills.get(n) is not None]
        fallback = default(step)
        name = fallback if fallback in usable or not usable else usable[0]
        out.append(Choice(name, None, None, 0, step))
    return out


def combine(y: np.ndarray, choices: Sequence[Choice | None], fills: Mapping[str, np.ndarray],
            targets: np.ndarray | None = None) -> np.ndarray:
    """``y`` with each target cell taken from its column's chosen candidate fill (others unchanged).

    A chosen candidate without a value for a cell (NaN) leaves it to the first candidate in
    :data:`ORDER` that has one, so a target is never left empty when any candidate filled it.
    """
    y = np.asarray(y, dtype=float)
    out = y.copy()
    targets = np.isnan(y) if targets is None else targets
    for j, choice in enumerate(choices):
        if choice is None:
            continue
        rows = targets[:, j]
        order = [choice.method, *(n for n in ORDER if n != choice.method and n in fills)]
        for name in order:
            f = fills.get(name)
            if f is None:
                continue
            todo = rows & np.isnan(out[:, j])
            out[todo, j] = f[todo, j]
    return out


Candidate = Callable[[list[np.ndarray], list[int]], "list[np.ndarray] | None"]


def choose_many(windows: Sequence[np.ndarray], candidates: Mapping[str, Candidate],
                targets: Sequence[np.ndarray | None] | None = None, copies: int = COPIES
                ) -> tuple[list[Plan], list[list[Choice | None]]]:
    """:func:`plan` and :func:`choose` for a batch, one call per candidate on all copies.

    ``candidates[name](arrays, owners)`` fills a list of arrays, ``owners[i]`` being the
    index of the window ``arrays[i]`` was copied from (a candidate may need the window's
    column names); it returns None when it could not run (then it is not chosen).
    """
    names = [n for n in ORDER if n in candidates] + [n for n in candidates if n not in ORDER]
    plans = [plan(w, None if targets is None else targets[i], copies, names) for i, w in enumerate(windows)]
    arrays = [c for p in plans for c in p.copies]
    owners = [i for i, p in enumerate(plans) for _ in p.copies]
    results = {name: candidates[name](arrays, owners) if arrays else [] for name in names}
    choices = []
    offset = 0
    for w, p in zip(windows, plans):
        k = len(p.copies)
        fills = {name: (None if r is None else r[offset:offset + k]) for name, r in results.items()}
        choices.append(choose(w, p, fills))
        offset += k
    return plans, choices
