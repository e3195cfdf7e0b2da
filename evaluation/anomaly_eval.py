"""Anomaly scores of the twins against labelled windows (e.g. NAB's ``combined_windows.json``).

Why windows and not points: labelled anomalies in public benchmarks are stretches of
time around an incident, and an operator is served by one timely flag per incident,
not by a flag on every sample. So the report gives, at the kind's threshold, how many
windows got at least one flag and how early (share of the window elapsed at the first
flag), and how often the twin flags outside any window (false alarms per 1,000
samples); plus the ROC AUC of the raw score (inside vs outside windows), which does not
depend on the threshold. Scores come from the same prequential replay as the forecasts:
each sample is scored against the forecast made before it arrived.

The same report gives the twin's ``in_domain`` flag against the windows (share of
samples out of the twin's own domain inside and outside windows, windows with at least
one such sample, AUC of the domain score): a second, slower signal that every forecast
already carries.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.evaluation.stream_eval import time_key
from twinstream.models.anomaly import ResidualAnomaly

Windows = Mapping[str, Sequence[tuple[tuple[int, float | str], tuple[int, float | str]]]]


def read_windows(path: Path, csv_name: str, entities: Sequence[str]) -> dict[str, list[tuple[Any, Any]]]:
    """Windows per entity from JSON ``{key: [[start, end], ...]}``.

    A key is an entity id, or (NAB's layout, one series per file) a path ending in the
    CSV's file name, which then applies to the single entity of that file.
    """
    data = json.loads(Path(path).read_text())
    out: dict[str, list[tuple[Any, Any]]] = {}
    for key, spans in data.items():
        if key in entities:
            entity = key
        elif key.split("/")[-1] == csv_name and len(entities) == 1:
            entity = entities[0]
        else:
            continue
        out[entity] = [(time_key(str(a)), time_key(str(b))) for a, b in spans]
    if not out:
        raise ValueError(f"{path}: no windows for {csv_name} or its entities")
    return out


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by ranks (ties share their mean rank)."""
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(scores.size)
    sorted_scores = scores[order]
    i = 0
    while i < scores.size:
        j = i
        while j + 1 < scores.size and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate_anomaly(
    series: Mapping[str, tuple[list[Any], np.ndarray]], windows: Windows, threshold: float = 0.995, horizon: int = 1
) -> dict[str, Any]:
    """Replay each entity through a residual anomaly twin; score flags against the windows."""
    all_scores: list[float] = []
    all_domain: list[float] = []
    all_inside: list[bool] = []
    detected = domain_detected = total = 0
    delays: list[float] = []
    for entity, (times, values) in series.items():
        spans = list(windows.get(entity, ()))
        det = ResidualAnomaly(horizon, threshold, max_season=0)
        first_flag: dict[int, int] = {}
        out_of_domain: set[int] = set()
        inside_of: list[int | None] = []
        for t, (when, y) in enumerate(zip(times, values)):
            score, flagged = det.step(t, None if not math.isfinite(y) else float(y))
            which = next((k for k, (a, b) in enumerate(spans) if a <= when <= b), None)
            inside_of.append(which)
            if math.isfinite(y):
                all_scores.append(score)
                all_inside.append(which is not None)
                all_domain.append(det.last.domain_score if det.last is not None else 1.0)
                if which is not None and det.last is not None and not det.last.in_domain:
                    out_of_domain.add(which)
            if flagged and which is not None and which not in first_flag:
                first_flag[which] = t
        for k in range(len(spans)):
            idx = [t for t, w in enumerate(inside_of) if w == k]
            if not idx:
                continue
            total += 1
            domain_detected += k in out_of_domain
            if k in first_flag:
                detected += 1
                delays.append((first_flag[k] - idx[0]) / max(len(idx) - 1, 1))
    scores, inside = np.asarray(all_scores), np.asarray(all_inside, dtype=bool)
    domain = np.asarray(all_domain)
    flags = scores >= threshold
    outside = ~inside
    return {
        "threshold": threshold,
        "horizon": horizon,
        "windows": total,
        "windows_flagged": detected,
        "first_flag_position_median": float(np.median(delays)) if delays else None,
        "false_flags_per_1000_outside": float(1000.0 * flags[outside].mean()) if outside.any() else None,
        "flag_share_inside": float(flags[inside].mean()) if inside.any() else None,
        "auc": _auc(scores, inside),
        "samples": int(scores.size),
        "in_domain": {
            "out_share_inside": float((domain[inside] > 0).mean()) if inside.any() else None,
            "out_share_outside": float((domain[outside] > 0).mean()) if outside.any() else None,
            "windows_with_out_of_domain": domain_detected,
            "auc": _auc(domain, inside),
        },
    }
