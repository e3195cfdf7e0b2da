"""Training a fleet prior with torch (offline, from run-to-failure history).

Why this design: the prior must run inside every twin at event rate, so each head is a
small one-hidden-layer network on features computed by the very class the twin uses
(:mod:`.features`). The *prior head* sees one event alone (age, current readings): what
the fleet knows about any engine. The *twin head* learns, on the prior head's
out-of-fold predictions (stacking), how a twin's personal state (smoothed sensors,
deviation from its own baseline, trend) corrects that estimate. Each head is a k-fold
ensemble split by engine: every member is trained without one fold, the out-of-fold
predictions give honest validation metrics and the split-conformal interval widths in
the manifest, and the members' average is what ships (folded into one wider layer).

torch is imported only inside the training functions, so importing this module (or
running a twin) never loads it; ``threads=1`` by default, as training shares cores.

>>> import numpy as np
>>> rows = np.array([[1.0, 2.0], [3.0, 4.0]])
>>> [float(v) for v in standardize_stats(rows)[1]]
[1.0, 1.0]
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.datasets.cmapss import CmapssSubset, load_subset, subset_files
from twinstream.models.domain import DomainBounds
from twinstream.models.features import RulFeatures, feature_names, stateless_names
from twinstream.models.prior import load_prior, sha256_file
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest

FAMILY = "rul-mlp"
VERSION = "2"
WEIGHTS_FILE = "weights.npz"
CALIBRATION_EDGES = (20.0, 40.0, 60.0, 80.0, 100.0, 115.0)


def standardize_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (NaN ignored; a constant column gets std 1)."""
    mean = np.nanmean(x, axis=0)
    std = np.nanstd(x, axis=0)
    std[~np.isfinite(std) | (std < 1e-9)] = 1.0
    mean[~np.isfinite(mean)] = 0.0
    return mean, std


def engine_features(subset: CmapssSubset, fx_params: dict[str, Any] | None = None,
                    cap: float = 125.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (as a twin computes them), capped RUL targets and unit ids for every training row."""
    params = fx_params or {}
    by_unit: dict[int, RulFeatures] = {}
    xs: list[list[float]] = []
    ys: list[float] = []
    units: list[int] = []
    for row in sorted(subset.train, key=lambda r: (r.unit, r.cycle)):
        fx = by_unit.setdefault(row.unit, RulFeatures(**params))
        xs.append(fx.update_vector(row.sensors))
        ys.append(min(float(subset.train_rul_at(row)), cap))
        units.append(row.unit)
    return np.array(xs), np.array(ys), np.array(units)


def _fit_member(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, lr: float, seed: int) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(y, dtype=torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    batch = 256
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(xt[idx]).squeeze(1), yt[idx])
            loss.backward()
            opt.step()
        sched.step()
    first, last = net[0], net[2]
    return {
        "w1": first.weight.detach().numpy().astype(np.float64),
        "b1": first.bias.detach().numpy().astype(np.float64),
        "w2": last.weight.detach().numpy().reshape(-1).astype(np.float64),
        "b2": last.bias.detach().numpy().astype(np.float64),
    }


def _member_predict(member: dict[str, np.ndarray], z: np.ndarray, lo: float, hi: float) -> np.ndarray:
    h = np.maximum(z @ member["w1"].T + member["b1"], 0.0)
    return np.clip(h @ member["w2"] + member["b2"][0], lo, hi)


def write_weights(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An ``.npz`` with fixed timestamps, so equal weights give an equal sha256."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def fit_ensemble(
    z: np.ndarray, target: np.ndarray, fold: np.ndarray, folds: int, hidden: int, epochs: int, lr: float, seed: int,
    progress: Callable[[str], None] | None = None, label: str = "",
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """One member per engine fold (trained without it) and the members' out-of-fold predictions."""
    oof = np.zeros_like(target)
    members = []
    for k in range(folds):
        if progress:
            progress(f"{label} fold {k + 1}/{folds}")
        train = fold != k
        member = _fit_member(z[train], target[train], hidden, epochs, lr, seed * 100 + k)
        oof[~train] = _member_predict(member, z[~train], -math.inf, math.inf)
        members.append(member)
    return members, oof


def fold_members(prefix: str, members: list[dict[str, np.ndarray]], mean: np.ndarray, std: np.ndarray) -> dict[str, np.ndarray]:
    """Fold standardization into layer 1 and average the members into one wider layer."""
    w1 = np.concatenate([m["w1"] / std for m in members])
    b1 = np.concatenate([m["b1"] - (m["w1"] / std) @ mean for m in members])
    w2 = np.concatenate([m["w2"] for m in members]) / len(members)
    b2 = np.array([sum(float(m["b2"][0]) for m in members) / len(members)])
    return {f"{prefix}_mean": mean, f"{prefix}_w1": w1.astype(np.float32), f"{prefix}_b1": b1.astype(np.float32),
            f"{prefix}_w2": w2.astype(np.float32), f"{prefix}_b2": b2}


def _halfwidths(pred: np.ndarray, residual: np.ndarray, edges: tuple[float, ...] = CALIBRATION_EDGES) -> list[float]:
    bins = np.digitize(pred, edges)
    overall = float(np.quantile(residual, 0.9))
    return [float(np.quantile(residual[bins == b], 0.9)) if (bins == b).sum() >= 20 else overall for b in range(len(edges) + 1)]


def _standardize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std = standardize_stats(x)
    return np.where(np.isnan(x), 0.0, (x - mean) / std), mean, std


# Training-feature ranges recorded in every manifest (``domain``): per-feature quantiles padded by a share of
# their band, and how many features may be outside before an input is out of domain. Chosen by engine-level
# cross-validation on FD001's training engines only (benchmarks/transfer.py, ``domain_cv`` in its JSON): the
# tightest setting under which held-out training engines stay in domain on at least DOMAIN_TARGET_SHARE of rows.
DOMAIN_QUANTILES = (0.005, 0.995)
DOMAIN_MARGIN = 0.0
DOMAIN_MAX_OUTSIDE = 0.1
DOMAIN_TARGET_SHARE = 0.95


def training_domain(x: np.ndarray, names: list[str], margin: float = DOMAIN_MARGIN,
                    max_outside: float = DOMAIN_MAX_OUTSIDE) -> DomainBounds:
    """The ranges of the training features (rows of ``x`` in ``names`` order) that a manifest records."""
    return DomainBounds.fit(x, names, DOMAIN_QUANTILES, margin, max_outside)


def fit_heads(
    x: np.ndarray, y: np.ndarray, units: np.ndarray, names: list[str], prior_inputs: list[str], *,
    cap: float | None, folds: int, hidden: int, prior_hidden: int, epochs: int, lr: float, seed: int,
    edges: tuple[float, ...], progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, list[float]], np.ndarray, np.ndarray]:
    """Both heads as k-fold ensembles split by entity: (weights arrays, calibration, out-of-fold prior, out-of-fold twin).

    ``y`` is the (capped) target, ``units`` the entity of every row; predictions are
    clipped to ``[0, cap]`` as the loader does.
    """
    hi = math.inf if cap is None else cap
    unit_ids = np.unique(units)
    fold_of = {u: i % folds for i, u in enumerate(np.random.default_rng(seed).permutation(unit_ids))}
    fold = np.array([fold_of[u] for u in units])
    # Head 1, the prior: one event alone (age, current readings).
    xa = x[:, [names.index(n) for n in prior_inputs]]
    za, mean_a, std_a = _standardize(xa)
    members_a, oof_a = fit_ensemble(za, y, fold, folds, prior_hidden, epochs, lr, seed, progress, "prior head")
    oof_a = np.clip(oof_a, 0.0, hi)
    # Head 2, the twin: correction of the prior from the personal state, on out-of-fold prior values.
    xb = np.column_stack([x, oof_a])
    zb, mean_b, std_b = _standardize(xb)
    members_b, oof_r = fit_ensemble(zb, y - oof_a, fold, folds, hidden, epochs, lr, seed + 1, progress, "twin head")
    oof_b = np.clip(oof_a + oof_r, 0.0, hi)
    weights = {**fold_members("prior", members_a, mean_a, std_a), **fold_members("twin", members_b, mean_b, std_b)}
    calibration = {"edges": list(edges), "prior_halfwidth": _halfwidths(oof_a, np.abs(y - oof_a), edges),
                   "twin_halfwidth": _halfwidths(oof_b, np.abs(y - oof_b), edges)}
    return weights, calibration, oof_a, oof_b


def train_prior(
    out: Path,
    subset: str = "FD001",
    data_dir: Path | None = None,
    cap: float = 125.0,
    folds: int = 5,
    hidden: int = 128,
    prior_hidden: int = 64,
    epochs: int = 100,
    lr: float = 3e-3,
    seed: int = 0,
    threads: int = 1,
    fx_params: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    units: set[int] | None = None,
) -> PriorManifest:
    """Train both heads on ``subset``'s training engines (or only ``units`` of them) and write the artifact to ``out``."""
    import torch

    torch.set_num_threads(threads)
    data = load_subset(subset, data_dir)
    if units is not None:
        data = CmapssSubset(data.name, [r for r in data.train if r.unit in units], [], {}, data.train_life)
    fx = RulFeatures(**(fx_params or {}))
    names = feature_names(fx.sensors)
    prior_inputs = stateless_names(fx.sensors)
    x, y, row_units = engine_features(data, fx_params, cap)
    true = np.array([float(data.train_rul_at(r)) for r in sorted(data.train, key=lambda r: (r.unit, r.cycle))])
    weights, calibration, oof_a, oof_b = fit_heads(
        x, y, row_units, names, prior_inputs, cap=cap, folds=folds, hidden=hidden, prior_hidden=prior_hidden,
        epochs=epochs, lr=lr, seed=seed, edges=CALIBRATION_EDGES, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / WEIGHTS_FILE
    write_weights(weights_path, weights)
    in_range = (true >= 5) & (true <= 145)  # the range of test RULs: a test-like validation slice
    metrics: dict[str, float] = {"train_rows": float(len(y)), "train_engines": float(len(np.unique(row_units)))}
    for head, pred in (("prior", oof_a), ("twin", oof_b)):
        metrics[f"{head}_oof_rmse"] = float(np.sqrt(np.mean((y - pred) ** 2)))
        metrics[f"{head}_oof_rmse_true_rul_5_145"] = float(np.sqrt(np.mean((true[in_range] - pred[in_range]) ** 2)))
    training: dict[str, float | int | str] = {"subset": subset, "folds": folds, "hidden": hidden, "prior_hidden": prior_hidden,
                                              "epochs": epochs, "lr": lr, "seed": seed, "torch": torch.__version__}
    if units is not None:
        training["units"] = ",".join(str(u) for u in sorted(units))
    manifest = PriorManifest(
        family=FAMILY,
        version=VERSION,
        feature_schema=fx.schema(),
        prior_inputs=prior_inputs,
        training_data={p.name: sha256_file(p) for p in (subset_files(subset, data_dir)["train"],)},
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(weights_path),
        target="rul",
        target_cap=cap,
        metrics=metrics,
        calibration=calibration,
        training=training,
        domain=training_domain(x, names).to_manifest(),
    )
    (out / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    load_prior(out, fx.schema())  # refuse to hand back an artifact that does not load
    return manifest
