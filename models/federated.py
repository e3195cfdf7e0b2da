"""Federated prior training, the model side: parameters as numpy arrays, a local step in torch, the artifact.

What is federated: both heads of the fleet prior (:mod:`.prior`), as one list of
arrays (:data:`ARRAY_NAMES`): the prior head (age and current readings -> RUL, 15
inputs, ``PRIOR_HIDDEN`` ReLU units) and the twin head (all 57 personal-state features
plus the prior head's value -> correction, ``TWIN_HIDDEN`` units). Every site trains
both at once on its own rows (:func:`local_fit`, ``heads="both"``): the prior head on
the capped RUL, the twin head on what the prior head (its current in-sample value,
clipped and detached) leaves unexplained. The bundled prior instead stacks k-fold
out-of-fold predictions of an ensemble; that needs every fold's members and is not a
sensible per-round client step, so the federated prior, its local-only and its
centralized baselines all use the step here (one network pair, same code, same
budget). ``heads="prior"`` / ``"twin"`` train one head (a two-phase schedule); on
held-out training engines it federated worse than the joint step, see
``docs/federation.md``. The local optimizer is plain SGD by default (see
:func:`local_fit` for why not Adam).

Targets are scaled to ``RUL / CAP`` during training (so the loss and FedProx's
``mu`` are on a unit scale); inputs are standardized with the pooled
:class:`~.federated_data.Normalization` (see :mod:`.federated_data` for what leaves a
site to compute it). The arrays carry only trainable weights, never the
normalization: server-side DP noise is added to every aggregated array, and noise on
a feature mean would silently break the model. :func:`write_prior_artifact` folds the
normalization and the target scale into the weights and writes an artifact that
:func:`~twinstream.models.prior.load_prior` accepts and the default ``prior-twin``
learner uses.

torch is imported only inside :func:`local_fit` (one thread by default).

>>> arrays = initial_arrays(seed=0)
>>> [a.shape for a in arrays][:4]
[(64, 15), (64,), (64,), (1,)]
>>> round_lr(0.01, 1, 10), round_lr(0.01, 10, 10)
(0.01, 0.001)
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.models.features import RulFeatures
from twinstream.models.federated_data import (  # noqa: F401  (re-exported: one import for clients)
    CAP,
    FeatureLayout,
    Normalization,
    SiteData,
    describe_split,
    export_site,
    load_site_data,
    local_normalization,
    normalization_from_moments,
    pooled,
    rul_layout,
    site_engines,
    site_moments,
    site_names,
)
from twinstream.schemas.prior import MANIFEST_FILE, PriorManifest
from twinstream.schemas.twin_spec import KindSpec

FAMILY = "rul-mlp"
WEIGHTS_FILE = "weights.npz"
PRIOR_HIDDEN = 64
TWIN_HIDDEN = 128
ARRAY_NAMES = ("prior_w1", "prior_b1", "prior_w2", "prior_b2", "twin_w1", "twin_b1", "twin_w2", "twin_b2")
CALIBRATION_EDGES = (20.0, 40.0, 60.0, 80.0, 100.0, 115.0)
_A_SD = 1.0 / math.sqrt(12.0)  # the prior value (in [0, 1] after scaling) is standardized as if uniform
_HIST_BINS = 126  # |residual| histogram: 1-cycle bins 0..125, last bin open


def initial_arrays(seed: int = 0, layout: FeatureLayout | None = None) -> list[np.ndarray]:
    """Fresh weights (float32, in :data:`ARRAY_NAMES` order), torch's default Linear init drawn with numpy.

    ``layout``: the features the model reads (default: the C-MAPSS ``rul-mlp`` layout).
    """
    layout = layout or rul_layout()
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for fan_in, hidden in ((len(layout.prior_inputs), PRIOR_HIDDEN), (len(layout.names) + 1, TWIN_HIDDEN)):
        b1, b2 = 1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(hidden)
        out += [rng.uniform(-b1, b1, (hidden, fan_in)), rng.uniform(-b1, b1, hidden),
                rng.uniform(-b2, b2, hidden), rng.uniform(-b2, b2, 1)]
    return [a.astype(np.float32) for a in out]


def check_arrays(arrays: list[np.ndarray], layout: FeatureLayout | None = None) -> list[np.ndarray]:
    """The arrays as float32, in order; raises ValueError when their shapes are not this model's (over ``layout``)."""
    expected = [a.shape for a in initial_arrays(0, layout)]
    arrays = [np.asarray(a, dtype=np.float32) for a in arrays]
    if [a.shape for a in arrays] != expected:
        raise ValueError(f"model arrays have shapes {[a.shape for a in arrays]}, expected {expected}")
    return arrays


def round_lr(lr: float, server_round: int, num_rounds: int, floor: float = 0.1) -> float:
    """Cosine decay of the local learning rate over rounds, from ``lr`` (round 1) to ``floor * lr`` (last round)."""
    if num_rounds <= 1:
        return lr
    t = (server_round - 1) / (num_rounds - 1)
    return lr * (floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _inputs(x: np.ndarray, norm: Normalization, layout: FeatureLayout | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Standardized inputs of the prior head and of the twin head (without the prior value); missing -> 0 (the mean)."""
    z = (x - norm.mean) / norm.std
    z = np.where(np.isnan(z), 0.0, z)
    return z[:, (layout or rul_layout()).prior_columns].astype(np.float32), z.astype(np.float32)


def _forward(arrays: list[np.ndarray], za: np.ndarray, zb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(prior head, prior + twin head) in scaled units (RUL / CAP), both clipped to [0, 1] as the twin does."""
    w1, b1, w2, b2, v1, c1, v2, c2 = (np.asarray(a, dtype=np.float64) for a in arrays)
    a = np.clip(np.maximum(za @ w1.T + b1, 0.0) @ w2 + b2[0], 0.0, 1.0)
    zt = np.column_stack([zb, (a - 0.5) / _A_SD])
    return a, np.clip(a + np.maximum(zt @ v1.T + c1, 0.0) @ v2 + c2[0], 0.0, 1.0)


HEADS = ("both", "prior", "twin")
OPTIMIZERS = ("sgd", "adamw")


def local_fit(
    arrays: list[np.ndarray],
    data: SiteData,
    *,
    epochs: int,
    lr: float,
    proximal_mu: float = 0.0,
    seed: int = 0,
    norm: Normalization | None = None,
    heads: str = "both",
    optimizer: str = "sgd",
    batch_size: int = 256,
    weight_decay: float = 1e-4,
    clip_grad: float = 1.0,
    steps: int = 0,
    threads: int = 1,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Train from ``arrays`` on the site's rows for ``epochs`` passes (fresh optimizer state); returns (arrays, metrics).

    ``heads``: ``"prior"`` trains the prior head only, ``"twin"`` the twin head only
    against the received (frozen) prior head, ``"both"`` both at once (the twin head
    then corrects the prior head's current values). The arrays of a head not trained
    are returned unchanged. ``optimizer``: ``"sgd"`` (plain minibatch SGD, the
    default: its update is linear in the gradient, so averaging sites' updates
    averages their gradients; per-site adaptive optimizers such as Adam rescale each
    site's update by its own statistics, which biases FedAvg on non-IID sites) or
    ``"adamw"``. Gradients are clipped to norm ``clip_grad`` (stability of plain SGD).
    ``steps`` > 0 replaces ``epochs``: exactly that many minibatch steps (reshuffled
    passes over the rows, the last one partial). Equal steps at every site keep FedAvg's
    row weights the only weights: with whole epochs a site with more rows also takes
    more steps, so its pull on the average grows with the square of its size
    ("objective inconsistency", Wang et al. 2020, FedNova).
    ``proximal_mu`` > 0 adds FedProx's ``mu / 2 * ||w - w_global||^2`` (w_global: the
    arrays received). ``norm`` must be the pooled normalization in a federated run
    (None = this site's own, for a site that trains alone). Metrics: ``num-examples``
    (rows, FedAvg's weight), ``train_loss`` (scaled MSE of the trained heads, mean over
    the last epoch, without the proximal term), ``train_rmse_prior`` /
    ``train_rmse_twin`` (RUL units, last epoch).
    """
    import torch

    if heads not in HEADS:
        raise ValueError(f"unknown heads {heads!r}; expected one of {', '.join(HEADS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layout = data.features
    za, zb = _inputs(data.x, norm or local_normalization(data), layout)
    ta, tb = torch.from_numpy(za), torch.from_numpy(zb)
    ty = torch.as_tensor(data.y / layout.cap, dtype=torch.float32)
    params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in check_arrays(arrays, layout)]
    trained = {"both": params, "prior": params[:4], "twin": params[4:]}[heads]
    for p in params:
        p.requires_grad_(any(p is q for q in trained))
    anchor = [p.detach().clone() for p in trained]
    w1, b1, w2, b2, v1, c1, v2, c2 = params
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(trained, lr=lr, weight_decay=weight_decay)
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(trained, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}")
    n = len(ty)
    sums = np.zeros(4)  # over the last (possibly partial) pass: prior loss, twin loss, fitted loss (x rows), rows
    budget = steps if steps > 0 else epochs * math.ceil(n / batch_size)
    done = 0
    while done < budget:
        sums[:] = 0.0
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            if done == budget:
                break
            done += 1
            idx = order[start : start + batch_size]
            y = ty[idx]
            a = torch.relu(ta[idx] @ w1.T + b1) @ w2 + b2
            loss_a = torch.nn.functional.mse_loss(a, y)
            loss = loss_a if heads != "twin" else torch.zeros(())
            loss_b = torch.zeros(())
            if heads != "prior":
                a_in = a.detach().clamp(0.0, 1.0)
                r = torch.relu(torch.cat([tb[idx], ((a_in - 0.5) / _A_SD).unsqueeze(1)], dim=1) @ v1.T + c1) @ v2 + c2
                loss_b = torch.nn.functional.mse_loss(a_in + r, y)
                loss = loss + loss_b
            fit = loss.item()
            if proximal_mu > 0.0:
                loss = loss + 0.5 * proximal_mu * sum(((p - g) ** 2).sum() for p, g in zip(trained, anchor))
            opt.zero_grad()
            loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(trained, clip_grad)
            opt.step()
            k = len(idx)
            sums += (loss_a.item() * k, loss_b.item() * k, fit * k, k)
    out = [p.detach().numpy().astype(np.float32) for p in params]
    seen = sums[3]
    metrics = {
        "num-examples": float(n),
        "train_loss": float(sums[2] / max(seen, 1)),
        "train_rmse_prior": float(layout.cap * math.sqrt(sums[0] / max(seen, 1))),
    }
    if heads != "prior":
        metrics["train_rmse_twin"] = float(layout.cap * math.sqrt(sums[1] / max(seen, 1)))
    return out, metrics


def evaluate_arrays(arrays: list[np.ndarray], data: SiteData, norm: Normalization | None = None,
                    calibration: bool = False) -> dict[str, Any]:
    """Metrics of ``arrays`` on a site's rows (numpy only): ``num-examples``, ``loss`` (scaled, as in training),
    ``rmse_prior`` and ``rmse_twin`` (RUL units, against capped RUL).

    ``calibration=True`` adds, per head, the |residual| histogram per predicted-RUL bin
    as fractions of the site's rows (``<head>_abs_hist``, a flat list of floats):
    aggregate statistics that, averaged over sites weighted by rows, give the pooled
    histogram for :func:`calibration_from_histograms`. Under another cap than 125 the
    bins scale with it (edges and residual bins are in units of ``cap / 125``).
    """
    layout = data.features
    cap = layout.cap
    za, zb = _inputs(data.x, norm or local_normalization(data), layout)
    a, b = _forward(check_arrays(arrays, layout), za, zb)
    ys = data.y / cap
    out: dict[str, Any] = {
        "num-examples": float(data.n),
        "loss": float(np.mean((a - ys) ** 2) + np.mean((b - ys) ** 2)),
        "rmse_prior": float(cap * np.sqrt(np.mean((a - ys) ** 2))),
        "rmse_twin": float(cap * np.sqrt(np.mean((b - ys) ** 2))),
    }
    if calibration:
        unit = cap / CAP  # 1 for the C-MAPSS cap
        for head, pred in (("prior", a * cap), ("twin", b * cap)):
            bins = np.digitize(pred / unit, CALIBRATION_EDGES)
            res = np.minimum(np.abs(pred - data.y) / unit, _HIST_BINS - 1).astype(int)
            hist = np.zeros((len(CALIBRATION_EDGES) + 1, _HIST_BINS))
            np.add.at(hist, (bins, res), 1.0)
            out[f"{head}_abs_hist"] = [float(v) for v in (hist / max(data.n, 1)).ravel()]
    return out


def calibration_from_histograms(metrics: dict[str, Any], q: float = 0.9, min_share: float = 0.001,
                                cap: float = CAP) -> dict[str, list[float]]:
    """Split-conformal half-widths (the manifest's ``calibration``) from pooled ``<head>_abs_hist`` fractions.

    Per predicted-RUL bin: the upper edge of the 1-cycle |residual| bin where the
    cumulative share reaches ``q``; a bin holding less than ``min_share`` of all rows
    gets the overall quantile. Edges and widths are in the target's units under ``cap``.
    """
    unit = cap / CAP
    out: dict[str, list[float]] = {"edges": [e * unit for e in CALIBRATION_EDGES]}
    for head in ("prior", "twin"):
        hist = np.asarray(metrics[f"{head}_abs_hist"], dtype=np.float64).reshape(len(CALIBRATION_EDGES) + 1, _HIST_BINS)

        def quantile(h: np.ndarray) -> float:
            c = np.cumsum(h)
            return float(np.searchsorted(c, q * c[-1]) + 1)

        overall = quantile(hist.sum(axis=0))
        out[f"{head}_halfwidth"] = [unit * (quantile(h) if h.sum() >= min_share else overall) for h in hist]
    return out


def artifact_weights(arrays: list[np.ndarray], norm: Normalization, layout: FeatureLayout | None = None) -> dict[str, np.ndarray]:
    """The artifact's arrays (:data:`~.prior.WEIGHT_KEYS`): standardization and target scale folded into the weights."""
    layout = layout or rul_layout()
    cap = layout.cap
    w1, b1, w2, b2, v1, c1, v2, c2 = (np.asarray(a, dtype=np.float64) for a in check_arrays(arrays, layout))
    pa = norm.prior_part(layout)
    mean_b = np.concatenate([norm.mean, [cap * 0.5]])
    std_b = np.concatenate([norm.std, [cap * _A_SD]])
    out: dict[str, np.ndarray] = {}
    for prefix, (u1, d1, u2, d2), mean, std in (("prior", (w1, b1, w2, b2), pa.mean, pa.std), ("twin", (v1, c1, v2, c2), mean_b, std_b)):
        scaled = u1 / std
        out[f"{prefix}_mean"] = mean.astype(np.float64)
        out[f"{prefix}_w1"] = scaled.astype(np.float32)
        out[f"{prefix}_b1"] = (d1 - scaled @ mean).astype(np.float32)
        out[f"{prefix}_w2"] = (cap * u2).astype(np.float32)
        out[f"{prefix}_b2"] = (cap * d2).astype(np.float64)
    return out


def write_prior_artifact(
    arrays: list[np.ndarray],
    out_dir: Path,
    version: str,
    *,
    norm: Normalization,
    calibration: dict[str, list[float]] | None = None,
    metrics: dict[str, float] | None = None,
    training_data: dict[str, str] | None = None,
    family: str = FAMILY,
    kind_spec: KindSpec | None = None,
    cap: float = CAP,
    **provenance: float | int | str,
) -> PriorManifest:
    """Write ``manifest.json`` + ``weights.npz`` for ``arrays`` into ``out_dir``; returns the manifest.

    Without ``kind_spec`` the artifact loads with :func:`~twinstream.models.prior.load_prior`
    against the default (C-MAPSS) feature schema; with ``kind_spec`` it is a kind prior over
    the kind's generic features, its label task's target capped at ``cap``, checked with
    :func:`~.kind_prior.load_kind_prior` as a worker serving that kind checks it. Either
    check runs before returning. ``provenance`` (strategy, rounds, sites, ...) goes into
    the manifest's ``training``; ``training_data`` maps a name to a sha256 (e.g. each
    site's data digest, if the sites report them).
    """
    from twinstream.models.prior import load_prior, sha256_file
    from twinstream.models.prior_train import write_weights

    kind = kind_spec
    layout = kind_layout(kind, cap) if kind is not None else rul_layout(cap)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_FILE
    write_weights(weights_path, artifact_weights(arrays, norm, layout))
    if kind is None:
        schema, target = RulFeatures().schema(), "rul"
    else:
        from twinstream.models.kind_prior import kind_features, trainable_tasks

        schema, target = kind_features(kind).schema(), trainable_tasks(kind)[0][0]
        provenance = {"kind": kind.name, **provenance}
    manifest = PriorManifest(
        family=family,
        version=str(version),
        feature_schema=schema,
        prior_inputs=list(layout.prior_inputs),
        training_data=dict(training_data or {}),
        weights_file=WEIGHTS_FILE,
        weights_sha256=sha256_file(weights_path),
        target=target,
        target_cap=layout.cap,
        metrics=dict(metrics or {}),
        calibration=dict(calibration or {}),
        training={"method": "federated", "prior_hidden": PRIOR_HIDDEN, "hidden": TWIN_HIDDEN, **provenance},
    )
    (out_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
    if kind is None:
        load_prior(out_dir, schema, cache=False)  # refuse to hand back an artifact that does not load
    else:
        from twinstream.models.kind_prior import load_kind_prior

        load_kind_prior(out_dir, kind)
    return manifest


def kind_layout(kind: KindSpec, cap: float = CAP) -> FeatureLayout:
    """The layout of a declared kind: its generic features, the prior head on age and raw readings, ``cap``.

    Raises ValueError when the kind cannot train a federated prior (no metrics, not exactly one label task).

    >>> from twinstream.schemas.twin_spec import parse_spec
    >>> pump = parse_spec("kinds: [{name: pump, metrics: [{name: flow}], tasks: [{type: label, target: rul}]}]").kinds[0]
    >>> layout = kind_layout(pump, 50.0)
    >>> layout.prior_inputs, len(layout.names), layout.cap
    (('age', 'flow_raw'), 5, 50.0)
    """
    from twinstream.models.kind_prior import kind_features, trainable_tasks

    labels, _ = trainable_tasks(kind)
    if len(labels) != 1:
        raise ValueError(f"kind {kind.name!r} has {len(labels)} label tasks: a federated prior trains exactly one")
    fx = kind_features(kind)
    schema = fx.schema()
    return FeatureLayout(tuple(schema.names), ("age", *(f"{m}_raw" for m in fx.metrics)), float(cap),
                         schema.model_dump_json())
