"""The Flower ServerApp: run the rounds, write the aggregated prior, publish it to the registry.

Runs inside the SuperLink's environment (started by ``flwr run`` / ``twinstream
federation round``). One run, in order:

0. when publishing, check that the registry accepts the token (before any training);
1. wait until enough sites are connected (``strategy.min-nodes``, 0 = at least one,
   then every connected site takes part);
2. ``query.moments`` to every site (for a declared kind, every message's config
   announces the kind's feature schema and label cap, :meth:`RoundConfig.layout`); the row-weighted mean of their feature moments is
   the pooled normalization, sent to the sites with every later message;
3. the starting point: the registry's latest prior of the family if it has this
   model's shape (``start-from = "latest"``), else fresh weights;
4. ``strategy.start(...)`` for ``num-server-rounds`` rounds (the strategy from
   :func:`~twinstream.federation.strategies.make_strategy`);
5. ``query.calibration`` with the final arrays: pooled |residual| histograms give the
   prior's interval widths;
6. write the artifact (:func:`~twinstream.models.federated.write_prior_artifact`) and
   publish it as the next version of the family (bearer token from
   ``TWINSTREAM_REGISTRY_PUBLISH_TOKEN`` in this process's environment). A refused
   publish raises, so the run ends ``finished:failed`` and ``twinstream federation
   round`` exits non-zero.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from twinstream.federation.publish import PublishError, check_publish_access, next_version, publish_artifact, registry_versions
from twinstream.federation.server_config import LOCAL_PREFIX, RoundConfig
from twinstream.federation.strategies import make_strategy
from twinstream.models.federated import (
    FeatureLayout,
    Normalization,
    calibration_from_histograms,
    initial_arrays,
    normalization_from_moments,
    rul_layout,
    write_prior_artifact,
)

if TYPE_CHECKING:
    from twinstream.federation.client import RegistryClient

log = logging.getLogger("twinstream.federation.server")
TOKEN_ENV = "TWINSTREAM_REGISTRY_PUBLISH_TOKEN"
_A_SD = 1.0 / np.sqrt(12.0)  # as in models/federated.py: the twin head's prior-value input scale


@dataclass
class FederatedOutcome:
    """The result of the rounds: final arrays, the normalization they were trained with, and measurements."""

    arrays: list[np.ndarray]
    norm: Normalization
    calibration: dict[str, list[float]]
    metrics: dict[str, float]
    sites: int
    started_from: str
    train_history: dict[int, dict[str, float]] = field(default_factory=dict)


def wait_for_nodes(grid: Grid, minimum: int, timeout_s: float) -> list[int]:
    """Connected node ids once at least ``minimum`` are there; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(nodes)} site(s) connected after {timeout_s:.0f} s, {minimum} needed")
        time.sleep(1.0)


def ask_all(grid: Grid, nodes: list[int], message_type: str, content: RecordDict, timeout_s: float) -> list[RecordDict]:
    """Send one message per node and return every reply's content; any site error fails the run."""
    messages = [Message(content=content, dst_node_id=n, message_type=message_type) for n in nodes]
    replies = list(grid.send_and_receive(messages, timeout=timeout_s))
    errors = [r.error for r in replies if r.has_error()]
    if errors or len(replies) != len(nodes):
        raise RuntimeError(f"{message_type}: {len(replies)}/{len(nodes)} replies, errors: {errors}")
    return [r.content for r in replies]


def weighted_mean(arrays_per_site: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    total = float(sum(weights))
    return [sum(w / total * np.asarray(a[i], dtype=np.float64) for a, w in zip(arrays_per_site, weights))  # type: ignore[misc]
            for i in range(len(arrays_per_site[0]))]


def pooled_normalization(replies: list[RecordDict], layout: FeatureLayout | None = None) -> tuple[Normalization, float]:
    """The pooled normalization from the sites' ``query.moments`` replies, and the total row count.

    Raises ValueError when a site's moments are not over ``layout``'s features.
    """
    weights = [float(r.metric_records["metrics"]["num-examples"]) for r in replies]
    moments = [r.array_records["moments"].to_numpy_ndarrays() for r in replies]
    n = len((layout or rul_layout()).names)
    if any(len(a) != n for m in moments for a in m):
        raise ValueError(f"a site sent moments over {sorted({len(a) for m in moments for a in m})} features, the model reads {n}")
    return normalization_from_moments(weighted_mean(moments, weights)), float(sum(weights))


def feature_config(layout: FeatureLayout) -> dict[str, str | float]:
    """What every message tells the sites about the features: a declared kind's schema and label cap ({} for C-MAPSS)."""
    return {"feature-schema": layout.schema, "target-cap": layout.cap} if layout.schema else {}


def equal_steps(epochs: int, rows: float, sites: int, batch_size: int) -> int:
    """Local steps per site and round: ``epochs`` passes over the *mean* site (rows from the moments round).

    Equal steps keep a large site from pulling the average with many more steps (as
    ``twinstream eval federated`` does with its equal-steps option). A site can infer
    the mean site size from the number; no site's own count is sent to the others.

    >>> equal_steps(1, rows=20631, sites=4, batch_size=256)
    21
    """
    return int(epochs * math.ceil(rows / max(sites, 1) / batch_size))


def arrays_from_artifact(weights: dict[str, np.ndarray], norm: Normalization,
                         layout: FeatureLayout | None = None) -> list[np.ndarray] | None:
    """Invert :func:`~twinstream.models.federated.artifact_weights` under ``norm``: the training arrays of a published
    prior, or None when the prior has another shape (e.g. the bundled k-fold ensemble).

    Exact for any ``norm``: a first layer ``W x + b`` equals ``(W s) z + (b + W m)`` for ``z = (x - m) / s``.
    """
    layout = layout or rul_layout()
    cap = layout.cap
    template = initial_arrays(0, layout)
    pa = norm.prior_part(layout)
    if [len(pa.mean), len(norm.mean) + 1] != [weights["prior_w1"].shape[-1], weights["twin_w1"].shape[-1]]:
        return None
    means = {"prior": pa.mean, "twin": np.concatenate([norm.mean, [cap * 0.5]])}
    stds = {"prior": pa.std, "twin": np.concatenate([norm.std, [cap * _A_SD]])}
    out: list[np.ndarray] = []
    for prefix in ("prior", "twin"):
        w1 = np.asarray(weights[f"{prefix}_w1"], dtype=np.float64)
        b1 = np.asarray(weights[f"{prefix}_b1"], dtype=np.float64)
        out += [w1 * stds[prefix], b1 + w1 @ means[prefix], np.asarray(weights[f"{prefix}_w2"], dtype=np.float64) / cap,
                np.asarray(weights[f"{prefix}_b2"], dtype=np.float64).reshape(-1)[:1] / cap]
    if [a.shape for a in out] != [a.shape for a in template]:
        return None
    return [a.astype(np.float32) for a in out]


def starting_arrays(cfg: RoundConfig, norm: Normalization, url: str,
                    client: RegistryClient | None = None) -> tuple[list[np.ndarray], str]:
    """Fresh weights, or the registry's latest prior of the family when it has this model's shape.

    The latest prior is verified like a twin verifies it (signature, sha256) under
    ``TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY``, or, if that is unset, under the key the
    registry serves (weaker: it only proves the download is what the registry signed).
    """
    if cfg.start_from == "latest" and (url or client is not None):
        from twinstream.federation.client import PriorRejected, RegistryClient, RegistryUnavailable, verify_and_install

        client = client or RegistryClient(url, timeout_s=30)
        try:
            latest = client.latest_manifest(cfg.family)
            if latest is not None:
                manifest = latest[1]
                key = os.environ.get("TWINSTREAM_PRIOR_REGISTRY_PUBLIC_KEY") or str(client.http.get("/v1/public-key").json()["public_key"])
                with tempfile.TemporaryDirectory() as cache:
                    prior = verify_and_install(client.download(cfg.family, manifest.version), key, cfg.family, None, Path(cache),
                                               manifest.version)
                    with np.load(prior.directory / prior.manifest.weights_file, allow_pickle=False) as npz:
                        weights = {k: npz[k] for k in npz.files}
                layout = cfg.layout()
                if manifest.target_cap is not None and manifest.target_cap != layout.cap:
                    raise ValueError(f"latest prior is capped at {manifest.target_cap}, this round at {layout.cap}")
                arrays = arrays_from_artifact(weights, norm, layout)
                if arrays is not None:
                    return arrays, manifest.prior_version
                log.warning("latest prior %s has another shape than the federated model; starting from fresh weights",
                            manifest.prior_version)
        except (RegistryUnavailable, PriorRejected, httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("cannot start from the registry's latest prior (%s); starting from fresh weights", exc)
        finally:
            client.close()
    return initial_arrays(cfg.seed, cfg.layout()), "init"


def run_federated(grid: Grid, cfg: RoundConfig, registry_url: str = "",
                  registry: RegistryClient | None = None) -> FederatedOutcome:
    """Steps 1-5 of the module doc (everything but writing and publishing); ``registry`` as in :func:`starting_arrays`."""
    strategy_cfg = cfg.strategy
    nodes = wait_for_nodes(grid, strategy_cfg.min_nodes or 1, cfg.node_wait_s)
    log.info("federated run: %d site(s), strategy %s, %d round(s)", len(nodes), strategy_cfg.label, cfg.num_server_rounds)
    layout = cfg.layout()
    features = feature_config(layout)
    query = RecordDict({"config": ConfigRecord(features)}) if features else RecordDict()
    norm, rows = pooled_normalization(ask_all(grid, nodes, "query.moments", query, cfg.round_timeout_s), layout)
    arrays, started_from = starting_arrays(cfg, norm, registry_url, registry)
    log.info("pooled normalization over %d rows; starting from %s", rows, started_from)
    local = dict(cfg.local)
    if cfg.equal_steps:
        local["steps"] = equal_steps(cfg.local_epochs, rows, len(nodes), int(local.get("batch_size", 256)))
        log.info("equal steps: %d local steps per site and round", local["steps"])
    train_config = ConfigRecord({"local-epochs": cfg.local_epochs, "lr": cfg.lr, "num-rounds": cfg.num_server_rounds,
                                 "seed": cfg.seed, **{LOCAL_PREFIX + k: v for k, v in local.items()}, **norm.to_config(),
                                 **features})
    strategy = make_strategy(strategy_cfg, num_sites=len(nodes))
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(arrays), num_rounds=cfg.num_server_rounds,
                            timeout=cfg.round_timeout_s, train_config=train_config,
                            evaluate_config=ConfigRecord({**norm.to_config(), **features}))
    final = result.arrays.to_numpy_ndarrays()
    replies = ask_all(grid, sorted(grid.get_node_ids()), "query.calibration",
                      RecordDict({"arrays": ArrayRecord(final), "config": ConfigRecord({**norm.to_config(), **features})}),
                      cfg.round_timeout_s)
    weights = [float(r.metric_records["metrics"]["num-examples"]) for r in replies]
    pooled: dict[str, object] = {}
    for name in replies[0].metric_records["metrics"]:
        if name == "num-examples":
            continue
        values = [r.metric_records["metrics"][name] for r in replies]
        pooled[name] = weighted_mean([[np.asarray(v, dtype=np.float64)] for v in values], weights)[0]
    calibration = calibration_from_histograms(pooled, cap=layout.cap)
    metrics = {f"federated_{k}": float(v) for k, v in pooled.items() if np.ndim(v) == 0}
    metrics.update({"federated_rows": rows, "federated_sites": float(len(nodes))})
    history = {int(rnd): {k: float(v) for k, v in rec.items() if not isinstance(v, list)}
               for rnd, rec in result.train_metrics_clientapp.items()}
    return FederatedOutcome(final, norm, calibration, metrics, len(nodes), started_from, history)


def write_and_publish(outcome: FederatedOutcome, cfg: RoundConfig, run_id: int, out_dir: Path | None = None,
                      env: dict[str, str] | None = None, http: httpx.Client | None = None) -> tuple[Path, str]:
    """Write the artifact (version chosen from the registry) and publish it; returns (artifact dir, prior version).

    ``http``: the HTTP client for the registry (tests bind one to an in-process app).
    """
    env = dict(os.environ) if env is None else env
    url = cfg.resolved_registry_url(env)
    publishing = cfg.publish and bool(url)
    if publishing and not env.get(TOKEN_ENV):
        raise PublishError(f"publishing to {url} needs {TOKEN_ENV} in the ServerApp's (SuperLink's) environment")
    from twinstream.models.prior_train import VERSION as BUNDLED_VERSION

    kind = cfg.kind()
    floor = BUNDLED_VERSION if kind is None else "0"  # a kind's family has no bundled version to stay above
    version = cfg.version or (next_version(registry_versions(url, cfg.family, http=http), floor=floor) if publishing
                              else f"run{run_id}")
    target = out_dir or (Path(cfg.out_dir) if cfg.out_dir else Path(tempfile.mkdtemp(prefix="twinstream-federated-")))
    artifact = target / cfg.family / version
    manifest = write_prior_artifact(
        outcome.arrays, artifact, version, norm=outcome.norm, calibration=outcome.calibration, metrics=outcome.metrics,
        family=cfg.family, kind_spec=kind, cap=cfg.target_cap, strategy=cfg.strategy.label, rounds=cfg.num_server_rounds,
        sites=outcome.sites,
        local_epochs=cfg.local_epochs, lr=cfg.lr, seed=cfg.seed, started_from=outcome.started_from, flower_run_id=str(run_id),
        **{f"local_{k}": v for k, v in cfg.local.items()},
    )
    log.info("wrote %s to %s", manifest.prior_version, artifact)
    if publishing:
        answer = publish_artifact(artifact, url, env[TOKEN_ENV], http=http)
        log.info("published %s to %s (sequence %s)", answer["prior_version"], url, answer["sequence"])
    else:
        log.info("not published (no registry URL or publish=false); artifact in %s", artifact)
    return artifact, manifest.prior_version


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: parse the run config, run the rounds, write and publish the prior."""
    if not log.handlers:  # this process is Flower's ServerApp process: show our lines in the run's log
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("twinstream: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    cfg = RoundConfig.from_run_config(context.run_config)
    url = cfg.resolved_registry_url()
    if cfg.publish and url:  # a token the registry refuses must fail the run now, not after the training
        check_publish_access(url, cfg.family, os.environ.get(TOKEN_ENV, ""))
    outcome = run_federated(grid, cfg, url)
    for rnd, metrics in sorted(outcome.train_history.items()):
        log.info("round %d train metrics %s", rnd, metrics)
    write_and_publish(outcome, cfg, context.run_id)
