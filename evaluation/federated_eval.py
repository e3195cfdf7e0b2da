"""``twinstream eval federated``: does federating the prior across non-IID sites pay off?

Four sites hold disjoint blocks of FD001's training engines, split by engine lifetime
(:mod:`twinstream.models.federated_data`). Three kinds of prior are trained with the same
network pair, the same local step (:func:`~twinstream.models.federated.local_fit`), the
same budget (``rounds`` x ``epochs`` passes over the data each one trains on) and the
same cosine learning-rate schedule over its rounds:

* **local-only**: each site alone, on its own rows and its own normalization;
* **federated**, per strategy: ``rounds x rounds_per_pass`` short rounds in which every
  site takes ``local_steps`` minibatch steps from the global arrays (4 x 5 = 20 steps
  ~ one pass over the mean site, 21 steps on FD001) and Flower's strategy (from
  :func:`twinstream.federation.strategies.make_strategy`) aggregates the replies;
* **centralized**: all sites' rows pooled in one place.

Why short rounds and server momentum (``fedavgm``): one FedAvg round moves the global
model about as far as its sites' steps on the *mean* gradient, i.e. as many steps as one
site takes, with 4 sites' batches averaged; the centralized run takes 81 steps per pass
(20,631 rows / 256), FedAvg 21 per pass-equivalent round, so it is under-optimised by
~4x at the same compute. Long local runs on one site's non-IID rows add client drift.
Short rounds cut the drift at the same compute; server momentum 0.9 gives the global
model its steps back (in steady state each round's mean update is applied 1 / (1 - 0.9)
= 10 times over the following rounds). Chosen on held-out training engines
(``benchmarks/federated_budget.py``, four folds), see ``docs/federation.md``.

Each prior is written as an artifact and scored on the FD001 test engines with the
learning-core protocol (:mod:`twinstream.evaluation.cmapss_eval`: one pass in fleet time order, the
same ``Twin.step`` as the worker, test engines never labelled, scored at their last
cycle against the true RUL): the ``prior_twin`` arm (prior + twin, the default learner,
the acceptance metric) and the ``prior`` arm (prior head alone).

Rounds run in process through the strategy's public Message API: ``configure_train``
builds the messages, each addressed site runs ``local_fit`` on the message's arrays and
config, the reply is a ``Message(content, reply_to=...)`` and ``aggregate_train``
aggregates (:mod:`twinstream.federation.inprocess` lists the sites' node ids and sets Flower's task identity).
Before round 1 the sites' feature moments are averaged (row-weighted, by Flower's
FedAvg aggregation) into the normalization that all sites use; after the last round
the sites' |residual| histograms are averaged the same way into the interval
calibration. Both are aggregate statistics, never rows.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twinstream.federation.inprocess import InProcessGrid, task_identity
from twinstream.federation.recipe import RECIPE, federated_rounds
from twinstream.federation.strategies import StrategyConfig, flower_log_level, make_strategy
from twinstream.models import federated as fm
from twinstream.models.federated_data import Normalization, SiteData

Progress = Callable[[str, int], None]  # (what is running, units of work just finished)
DEFAULT_STRATEGIES = ("fedavg", "fedavgm", "fedprox", "fedadam", "fedmedian", "krum")


@dataclass(frozen=True)
class FederatedEvalConfig:
    """Budget and options of one evaluation run (the defaults: the production recipe, :data:`~twinstream.federation.recipe.RECIPE`)."""

    rounds: int = RECIPE.rounds  # passes over their data of the local-only and centralized runs; federated: rounds x rounds_per_pass
    epochs: int = RECIPE.epochs  # local epochs per round (and per "round" of the local-only and centralized runs)
    lr: float = RECIPE.lr  # round-1 learning rate, cosine-decayed to a tenth by the last round (of each phase)
    optimizer: str = RECIPE.optimizer  # local optimizer (models.federated.OPTIMIZERS)
    two_phase: bool = RECIPE.two_phase  # first half of the rounds: prior head only; second half: twin head on the frozen prior head
    equal_steps: bool = RECIPE.equal_steps  # federated: every site takes the same number of local steps per round
    local_steps: int = RECIPE.local_steps  # federated, with equal_steps: local steps per site and round (0 = one mean-site pass)
    rounds_per_pass: int = RECIPE.rounds_per_pass  # federated rounds per pass (with local_steps > 0)
    n_sites: int = 4
    seed: int = 0
    strategies: tuple[StrategyConfig, ...] = tuple(StrategyConfig(name=n) for n in DEFAULT_STRATEGIES)
    max_engines: int | None = None  # per site (smoke runs)
    limit_test_engines: int | None = None  # test engines with unit <= N (smoke runs)
    reference: bool = True  # also score the bundled prior (centralized, 5-fold stacked ensemble)


# -- in-process Flower rounds -------------------------------------------------------------

def _to_record(arrays: list[np.ndarray]) -> Any:
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({name: Array(np.asarray(a)) for name, a in zip(fm.ARRAY_NAMES, arrays)})


def _from_record(record: Any) -> list[np.ndarray]:
    return [np.asarray(record[name].numpy()) for name in fm.ARRAY_NAMES]


def run_round(strategy: Any, server_round: int, arrays: list[np.ndarray], config: dict[str, Any],
              site_fn: Callable[[int, list[np.ndarray], Any], tuple[list[np.ndarray], dict[str, float]]],
              num_sites: int) -> tuple[list[np.ndarray], dict[str, float]]:
    """One training round of ``strategy`` in process: configure_train -> ``site_fn`` per message -> aggregate_train.

    ``site_fn(site_index, arrays, config_record)`` is what a ClientApp does with a train
    message. Returns the aggregated arrays (the input ones if the strategy returned
    none) and the aggregated train metrics.
    """
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    with task_identity():
        messages = list(strategy.configure_train(server_round, _to_record(arrays), ConfigRecord(config), InProcessGrid(num_sites)))
        replies = []
        for message in sorted(messages, key=lambda m: m.metadata.dst_node_id):
            new, metrics = site_fn(message.metadata.dst_node_id - 1, _from_record(message.content["arrays"]), message.content["config"])
            content = RecordDict({"arrays": _to_record(new), "metrics": MetricRecord(metrics)})
            replies.append(Message(content, reply_to=message))
        aggregated, metrics = strategy.aggregate_train(server_round, replies)
    out = _from_record(aggregated) if isinstance(aggregated, ArrayRecord) else arrays
    return out, dict(metrics or {})


def federated_statistic(per_site: list[tuple[list[np.ndarray], dict[str, Any]]], kind: str = "arrays") -> Any:
    """Row-weighted mean of the sites' statistics by Flower's FedAvg aggregation (``kind``: "arrays" or "metrics")."""
    from flwr.app import Array, ArrayRecord, Message, MessageType, MetricRecord, RecordDict
    from flwr.serverapp.strategy import FedAvg

    n = len(per_site)
    strategy = FedAvg(min_available_nodes=n, min_train_nodes=n, min_evaluate_nodes=n)
    with task_identity():
        replies = []
        for node, (arrays, metrics) in enumerate(per_site, start=1):
            query = Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)
            content: dict[str, Any] = {"metrics": MetricRecord(metrics)}
            if kind == "arrays":
                content["stats"] = ArrayRecord({str(i): Array(np.asarray(a)) for i, a in enumerate(arrays)})
            replies.append(Message(RecordDict(content), reply_to=query))
        if kind == "arrays":
            record, _ = strategy.aggregate_train(0, replies)
            return [record[str(i)].numpy() for i in range(len(per_site[0][0]))]
        return dict(strategy.aggregate_evaluate(0, replies))


# -- the three kinds of prior ---------------------------------------------------------------

@dataclass
class TrainedPrior:
    name: str
    arrays: list[np.ndarray]
    norm: Normalization
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def round_plan(cfg: FederatedEvalConfig, rounds: int | None = None) -> list[tuple[int, str, float]]:
    """(round, heads trained, learning rate) of every round (``rounds``: default ``cfg.rounds``); the same
    schedule (cosine from ``lr`` to a tenth over the rounds) for every kind of prior."""
    rounds = cfg.rounds if rounds is None else rounds
    if not cfg.two_phase:
        return [(r, "both", fm.round_lr(cfg.lr, r, rounds)) for r in range(1, rounds + 1)]
    first = max(rounds // 2, 1)
    second = max(rounds - first, 1)
    return ([(r, "prior", fm.round_lr(cfg.lr, r, first)) for r in range(1, first + 1)]
            + [(first + r, "twin", fm.round_lr(cfg.lr, r, second)) for r in range(1, second + 1)])


def federated_steps(cfg: FederatedEvalConfig, sites: list[SiteData], batch_size: int = 256) -> int:
    """Local steps per site and round: with ``equal_steps``, ``local_steps`` if set, else ``epochs`` passes over
    the *mean* site (so a round processes as many rows as ``epochs`` passes over the pooled data); else 0
    (whole epochs)."""
    if not cfg.equal_steps:
        return 0
    if cfg.local_steps > 0:
        return cfg.local_steps
    return cfg.epochs * math.ceil(sum(s.n for s in sites) / len(sites) / batch_size)


def _fit_seed(seed: int, server_round: int, site: int) -> int:
    return seed * 100_003 + server_round * 101 + site


def train_alone(name: str, data: SiteData, norm: Normalization, cfg: FederatedEvalConfig, progress: Progress | None) -> TrainedPrior:
    """Local-only or centralized: the same local step chained over ``rounds`` on one data set, no aggregation."""
    start = time.perf_counter()
    arrays = fm.initial_arrays(cfg.seed)
    history = []
    plan = round_plan(cfg)
    for r, heads, lr in plan:
        arrays, metrics = fm.local_fit(arrays, data, epochs=cfg.epochs, lr=lr, heads=heads, optimizer=cfg.optimizer,
                                       seed=_fit_seed(cfg.seed, r, 0), norm=norm)
        history.append({"round": r, "heads": heads, "train_loss": metrics["train_loss"]})
        if progress:
            progress(f"{name}: round {r}/{len(plan)}", 1)
    return TrainedPrior(name, arrays, norm, time.perf_counter() - start, history)


def train_federated(strategy_cfg: StrategyConfig, sites: list[SiteData], norm: Normalization, cfg: FederatedEvalConfig,
                    progress: Progress | None) -> TrainedPrior:
    """:func:`federated_rounds` Flower rounds of ``strategy_cfg`` over ``sites`` (in process)."""
    start = time.perf_counter()
    random.seed(cfg.seed)  # Flower samples nodes with `random`
    arrays = fm.initial_arrays(cfg.seed)
    history = []
    plan = round_plan(cfg, federated_rounds(cfg))
    steps = federated_steps(cfg, sites)
    strategy, phase = None, None
    for r, heads, lr in plan:
        if heads != phase:  # a fresh strategy per phase: no server optimizer state carried into the other head
            strategy, phase = make_strategy(strategy_cfg, len(sites)), heads

        def site_fn(i: int, received: list[np.ndarray], config: Any, r: int = r) -> tuple[list[np.ndarray], dict[str, float]]:
            # What a ClientApp does: read the config the strategy sent, train locally, reply.
            out = fm.local_fit(received, sites[i], epochs=int(config["local-epochs"]), lr=float(config["lr"]),
                               heads=str(config["heads"]), optimizer=str(config["optimizer"]), steps=int(config["local-steps"]),
                               proximal_mu=float(config.get("proximal-mu", 0.0)), seed=_fit_seed(cfg.seed, r, i + 1),
                               norm=Normalization.from_config(config))
            if progress:
                progress(f"{strategy_cfg.label}: round {r}/{len(plan)}, {sites[i].name}", 1)
            return out

        config = {"lr": lr, "local-epochs": cfg.epochs, "local-steps": steps, "heads": heads, "optimizer": cfg.optimizer,
                  **norm.to_config()}
        arrays, metrics = run_round(strategy, r, arrays, config, site_fn, len(sites))
        history.append({"round": r, "heads": heads, **{k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
    return TrainedPrior(strategy_cfg.label, arrays, norm, time.perf_counter() - start, history)


# -- scoring with the learning-core protocol ------------------------------------------------

def score_prior(prior_dir: Path, data_dir: Path | None, limit_test_engines: int | None) -> dict[str, Any]:
    """The learning-core replay (prior arm and prior + twin arm) with this prior; test RMSE, PHM08, ..."""
    from twinstream.datasets import cmapss
    from twinstream.evaluation import cmapss_eval

    fd = cmapss.load_subset("FD001", data_dir)
    test_rows = fd.test if limit_test_engines is None else [r for r in fd.test if r.unit <= limit_test_engines]
    events = cmapss_eval.fleet_events(fd.train, test_rows)
    params = cmapss_eval.arm_params(str(prior_dir))
    out: dict[str, Any] = {}
    prior_arm = cmapss_eval.run_arm("prior", params["prior"], events)
    twin_arm = cmapss_eval.run_arm("prior_twin", params["prior_twin"], events)
    p, t = cmapss_eval.score_arm(prior_arm, fd), cmapss_eval.score_arm(twin_arm, fd, prior_arm)
    keys = ("rmse", "rmse_capped_truth", "phm_score", "mae", "coverage", "mean_width")
    out.update({k: t[k] for k in keys})
    out["prior_only"] = {k: p[k] for k in keys}
    out["engines"] = t["engines"]
    return out


def _site_calibration(prior: TrainedPrior, sites: list[SiteData]) -> dict[str, list[float]]:
    per_site = []
    for s in sites:
        m = fm.evaluate_arrays(prior.arrays, s, prior.norm, calibration=True)
        per_site.append(([], {k: v for k, v in m.items() if k.endswith("_abs_hist") or k == "num-examples"}))
    return fm.calibration_from_histograms(federated_statistic(per_site, kind="metrics"))


def evaluate_federated(cfg: FederatedEvalConfig, data_dir: Path | None = None, work_dir: Path | None = None,
                       progress: Progress | None = None) -> dict[str, Any]:
    """Train and score every prior; returns the JSON-ready report."""
    with flower_log_level():
        return _evaluate(cfg, data_dir, work_dir, progress)


def _evaluate(cfg: FederatedEvalConfig, data_dir: Path | None, work_dir: Path | None, progress: Progress | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="twinstream-federated-"))
    names = fm.site_names(cfg.n_sites)
    sites = [fm.load_site_data(data_dir, site=s, n_sites=cfg.n_sites, max_engines=cfg.max_engines) for s in names]
    split = fm.describe_split(data_dir, n_sites=cfg.n_sites)
    # Statistics round: pooled feature moments -> one normalization for every federated site.
    norm = fm.normalization_from_moments(federated_statistic([fm.site_moments(s) for s in sites]))
    everyone = fm.pooled(sites)
    priors: dict[str, tuple[str, TrainedPrior, list[SiteData]]] = {}
    for s in sites:
        priors[f"local:{s.name}"] = ("local_only", train_alone(f"local-only {s.name}", s, fm.local_normalization(s), cfg, progress), [s])
    for sc in cfg.strategies:
        priors[f"federated:{sc.label}"] = ("federated", train_federated(sc, sites, norm, cfg, progress), sites)
    centralized = train_alone("centralized", everyone, fm.local_normalization(everyone), cfg, progress)
    priors["centralized"] = ("centralized", centralized, [everyone])
    report: dict[str, Any] = {
        "command": None,
        "protocol": "FD001 test engines, learning-core replay (twinstream.evaluation.cmapss_eval): one pass in fleet time order, "
                    "test engines never labelled, scored at their last cycle against the true RUL; rmse = prior + twin arm "
                    "(default learner), prior_only = prior head alone",
        "split": {"rule": f"FD001 training engines sorted by lifetime (ties by unit id), cut into {cfg.n_sites} contiguous "
                          "blocks: site-1 shortest-lived ... site-N longest-lived",
                  "sites": {n: {k: v for k, v in d.items() if k != "units"} | {"units": d["units"]} for n, d in split.items()}},
        "budget": {"rounds": cfg.rounds, "local_epochs": cfg.epochs, "lr": cfg.lr, "lr_schedule": "cosine over rounds to lr/10",
                   "passes_over_own_data": cfg.rounds * cfg.epochs, "batch": 256,
                   "optimizer": f"{cfg.optimizer} (wd=1e-4, grad norm clip 1), reset each round",
                   "federated_local_steps": federated_steps(cfg, sites) or "whole epochs", "federated_rounds": federated_rounds(cfg),
                   "steps_per_pass_mean_site": cfg.epochs * math.ceil(sum(s.n for s in sites) / len(sites) / 256),
                   "schedule": ("two-phase: prior head, then twin head on the frozen prior head" if cfg.two_phase
                                else "joint: both heads every round"),
                   "prior_hidden": fm.PRIOR_HIDDEN, "twin_hidden": fm.TWIN_HIDDEN, "seed": cfg.seed},
        "config": {k: v for k, v in asdict(cfg).items() if k != "strategies"} | {"strategies": [s.model_dump() for s in cfg.strategies]},
        "local_only": {}, "federated": {}, "centralized": {},
    }
    for key, (kind, prior, trained_on) in priors.items():
        if progress:
            progress(f"scoring {prior.name}", 0)
        directory = work / key.replace(":", "-").replace("(", "-").replace(")", "").replace("=", "").replace(",", "-").replace("+", "-")
        training_data = {s.name: s.digest for s in trained_on}
        fm.write_prior_artifact(prior.arrays, directory, f"eval-{directory.name}", norm=prior.norm,
                                calibration=_site_calibration(prior, trained_on), training_data=training_data,
                                rounds=federated_rounds(cfg) if kind == "federated" else cfg.rounds, local_epochs=cfg.epochs,
                                local_steps=federated_steps(cfg, sites) if kind == "federated" else 0, kind=kind, name=prior.name)
        score = score_prior(directory, data_dir, cfg.limit_test_engines)
        train_fit = [fm.evaluate_arrays(prior.arrays, s, prior.norm) for s in sites]
        score |= {"seconds_train": prior.seconds, "train_rmse_twin_by_site": {s.name: m["rmse_twin"] for s, m in zip(sites, train_fit)},
                  "final_train_loss": prior.history[-1].get("train_loss", math.nan) if prior.history else math.nan,
                  "artifact": str(directory)}
        if progress:
            progress(f"scored {prior.name}", 1)
        if kind == "local_only":
            report["local_only"][trained_on[0].name] = score
        elif kind == "federated":
            report["federated"][key.split(":", 1)[1]] = score
        else:
            report["centralized"] = score
    local = report["local_only"]
    report["local_only"]["mean_rmse"] = float(np.mean([v["rmse"] for v in local.values()]))
    report["local_only"]["mean_prior_only_rmse"] = float(np.mean([v["prior_only"]["rmse"] for v in local.values() if isinstance(v, dict)]))
    if cfg.reference:
        from twinstream.models.prior import bundled_prior_dir

        report["reference_bundled_prior"] = score_prior(bundled_prior_dir(), data_dir, cfg.limit_test_engines) | {
            "note": "the shipped prior: centralized, 5-fold stacked ensembles (twinstream prior train); another architecture"}
    report["acceptance"] = acceptance(report)
    report["seconds"] = time.perf_counter() - t0
    return report


def acceptance(report: dict[str, Any]) -> dict[str, Any]:
    """The acceptance criteria per strategy: within 5% (stretch 3%) of centralized, >= 10% better than mean local-only."""
    central = report["centralized"]["rmse"]
    local = report["local_only"]["mean_rmse"]
    out = {}
    for name, s in report["federated"].items():
        gap = s["rmse"] / central - 1.0
        gain = 1.0 - s["rmse"] / local
        out[name] = {"vs_centralized": gap, "within_5pct": gap <= 0.05, "within_3pct": gap <= 0.03,
                     "better_than_local_mean": gain, "at_least_10pct_better": gain >= 0.10}
    return out


def work_units(cfg: FederatedEvalConfig) -> int:
    """Progress units of a run: local fits (one per site per round, one per round when alone) and scored priors."""
    return (cfg.rounds * (cfg.n_sites + 1) + federated_rounds(cfg) * len(cfg.strategies) * cfg.n_sites
            + cfg.n_sites + len(cfg.strategies) + 1)
